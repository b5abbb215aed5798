"""The exchange the console watches: the folder `yrdx init` writes (one gateway config per region, the operator
token in secrets/metrics.token), read into what the console needs: where each gateway listens, the token that
opens its /metrics, each region's Kafka settings (its DLQ), and the trust an auditor checks checkpoints with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import ConfigError, GatewayConfig, KafkaConfig, load_config
from gateway.crypto.trust import TrustError, TrustStore
from gateway.wire.regions import REGIONS, region_slug

TOKEN_FILE = Path("secrets") / "metrics.token"


class ExchangeError(ValueError):
    """The folder is not an exchange the console can watch; the message says why."""


def read_token(path: Path) -> str | None:
    """The token in that file (surrounding whitespace dropped), None when the file cannot be read or is empty."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


@dataclass(frozen=True, slots=True)
class Gateway:
    region: str
    config: GatewayConfig
    url: str | None = None  # where it listens when not (only) as its config says: `yrdx console --gateway R=URL`

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = self.config.host
        if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard listener: reach it on loopback
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.config.port}" if ":" in host else f"http://{host}:{self.config.port}"

    @property
    def token_file(self) -> Path | None:
        return self.config.metrics_token_file


@dataclass(frozen=True, slots=True)
class ExchangeDir:
    dir: Path
    gateways: dict[str, Gateway]  # in REGIONS order, only the regions that have a config
    token_file: Path

    @property
    def regions(self) -> list[str]:
        return list(self.gateways)

    @property
    def kafka(self) -> KafkaConfig:
        """The exchange's Kafka (the audit topic): the first region's; every region of an exchange shares it."""
        return next(iter(self.gateways.values())).config.kafka

    def operator_token(self) -> str | None:
        """Read again at every use, so a rotated token takes effect without restarting the console."""
        return read_token(self.token_file)

    def metrics_token(self, region: str) -> str | None:
        """The bearer token for that gateway's /metrics: its config's token file, else the exchange's."""
        own = self.gateways[region].token_file
        return (read_token(own) if own is not None else None) or self.operator_token()

    def trust(self) -> TrustStore:
        """The roots and gateway certificates the configs trust (all of them, once each), as `yrdx audit` checks
        checkpoints against them."""
        roots: dict[Path, None] = {}
        certs: dict[Path, None] = {}
        for g in self.gateways.values():
            roots.update(dict.fromkeys(p.resolve() for p in g.config.trust_ca))
            certs.update(dict.fromkeys(p.resolve() for p in g.config.trust_certificates))
        return TrustStore.from_files(list(roots), list(certs))


def parse_gateway_url(text: str) -> tuple[str, str]:
    """`REGION=http://host:port` -> (REGION, URL); ValueError saying what is wrong."""
    region, sep, url = text.partition("=")
    region = region.strip().upper()
    if not sep or region not in REGIONS:
        raise ValueError(f"expected REGION=URL with a region of {', '.join(REGIONS)}, got {text!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"expected an http(s)://host:port URL for {region}, got {url!r}")
    return region, url.strip().rstrip("/")


def load_exchange(dir: Path, urls: Mapping[str, str] | None = None) -> ExchangeDir:
    """The exchange in `dir`; ExchangeError naming every problem (no config at all, a bad config, no token, a
    gateway that listens on port 0 with no URL in `urls` to say where it really is)."""
    urls = dict(urls or {})
    root = dir.expanduser().resolve()
    if not root.is_dir():
        raise ExchangeError(f"{root} is not a folder (an exchange made by `yrdx init --dir`)")
    gateways: dict[str, Gateway] = {}
    problems: list[str] = []
    for region in REGIONS:
        path = root / f"{region_slug(region)}.yaml"
        if not path.exists():
            continue
        try:
            cfg = load_config(path)
        except ConfigError as e:
            problems.append(f"bad config {path}: {e}")
            continue
        if cfg.region != region:
            problems.append(f"{path} is the config of {cfg.region}, not of {region}")
            continue
        if cfg.port == 0 and region not in urls:
            problems.append(f"{region} listens on port 0 (any free port) in {path}: say where it is with "
                            f"--gateway {region}=http://HOST:PORT")
            continue
        gateways[region] = Gateway(region, cfg, urls.pop(region, None))
    problems += [f"--gateway {region}: no config {region_slug(region)}.yaml in {root}" for region in urls]
    if not gateways and not problems:
        expected = ", ".join(region_slug(r) + ".yaml" for r in REGIONS)
        problems.append(f"no gateway config in {root} (expected {expected})")
    token_file = root / TOKEN_FILE
    if read_token(token_file) is None:
        problems.append(f"no operator token in {token_file}")
    if problems:
        raise ExchangeError("; ".join(problems))
    ex = ExchangeDir(root, gateways, token_file)
    try:
        ex.trust()
    except (TrustError, ValueError, OSError) as e:
        raise ExchangeError(f"the configs' trust cannot be loaded: {e}") from e
    return ex
