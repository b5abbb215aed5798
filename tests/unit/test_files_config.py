"""`files:` in the gateway config: defaults beside the state file, and every mistake reported with its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.dev.exchange import init_exchange


def test_files_default_to_a_spool_beside_the_state_file(tmp_path: Path) -> None:
    cfg = load_config(init_exchange(tmp_path, base_port=0).config_path("SH"))
    assert cfg.files.spool_dir == cfg.state_path.with_name("files")
    assert (cfg.files.max_bytes, cfg.files.wait_s, cfg.files.retention_days) == (200 * 1024 * 1024, 60.0, 7.0)


def test_files_settings_are_read_and_checked(tmp_path: Path) -> None:
    path = init_exchange(tmp_path, base_port=0).config_path("SH")
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**doc, "files": {"spool_dir": "spool", "max_bytes": 1048576, "wait_s": 5,
                                                      "retention_days": 0.5}}))
    cfg = load_config(path)
    assert cfg.files.spool_dir == path.parent / "spool"
    assert (cfg.files.max_bytes, cfg.files.wait_s, cfg.files.retention_days) == (1048576, 5.0, 0.5)
    path.write_text(yaml.safe_dump({**doc, "files": {"max_bytes": 0, "wait_s": -1, "retention_days": "a week",
                                                      "max_size": 1}}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    for key in ("files.max_bytes", "files.wait_s", "files.retention_days", "files.max_size"):
        assert key in text, text
