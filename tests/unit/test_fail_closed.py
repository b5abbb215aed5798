"""A gateway whose own certificate is expired, not yet valid or revoked refuses to start: `yrdx serve` exits 2
with one line naming the reason, before it connects to anything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.crypto.jws import thumbprint_s256
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.exchange import edit_config
from gateway.dev.pki import issue_gateway_cert, write_certificate, write_private_key
from tests.unit._relay import make_exchange

NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(("window", "said"), [
    ((NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1)), "expired at"),
    ((NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=30)), "valid from"),
])
def test_an_expired_or_not_yet_valid_certificate_stops_the_start(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 window: tuple[dt.datetime, dt.datetime],
                                                                 said: str) -> None:
    ex = make_exchange(tmp_path)
    cert, key = issue_gateway_cert(load_certificate(ex.pki.ca_cert), load_private_key(ex.pki.ca_key), "SH",
                                   not_before=window[0], not_after=window[1])
    write_certificate(ex.pki.gateway_cert("SH"), cert)
    write_private_key(ex.pki.gateway_key("SH"), key)
    assert main(["serve", "--config", str(ex.config_path("SH"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identity.certificate" in err[0] and said in err[0]


def test_a_revoked_certificate_stops_the_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = make_exchange(tmp_path)
    thumbprint = thumbprint_s256(load_certificate(ex.pki.gateway_cert("SH")))
    trust = yaml.safe_load(ex.config_path("SH").read_text())["trust"]
    edit_config(ex.config_path("SH"), trust={**trust, "revoked": [thumbprint]})
    assert main(["serve", "--config", str(ex.config_path("SH"))]) == 2
    assert "revoked" in capsys.readouterr().err
