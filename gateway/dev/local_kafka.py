"""A local single-node Apache Kafka (KRaft, combined broker+controller) for development, from Maven Central jars.

No tarball and no Docker: the first call generates a tiny ``pom.xml`` in a cache directory outside the repo
and lets Maven copy ``org.apache.kafka:kafka_2.13:<version>`` (plus a log4j2 backend, which the published POMs
lack) into ``<cache>/kafka/<version>/libs``. The broker is then ``java -cp 'libs/*' kafka.Kafka
server.properties``, started detached in its own session so it survives the CLI that launched it.

Readiness never depends on log lines: :meth:`LocalKafka.start` polls a TCP connect and then a real
ApiVersions + Metadata exchange through aiokafka's client, and requires the broker to list itself.

Layout of ``data_dir``::

    server.properties   generated at every start
    log4j2.properties   generated at every start
    kafka.pid           pid of the running JVM (removed by stop/kill)
    kafka.out           JVM stdout/stderr (crashes before log4j is up land here)
    logs/server.log     broker log (log4j2, INFO, rolled at 10 MB)
    data/               log.dirs: KRaft metadata and topic data (formatted once, kept across restarts)
  --secure only (gateway/dev/kafka_security.py; server.properties is then 0600, it holds the admin's JAAS):
    tls/                ca.crt, ca.key, broker.pem (the broker's key and certificate): the development CA
    admin.password      the super user yrdx-admin's password (0600)
    scram-users.json    the SCRAM users the storage was formatted with (names, password fingerprints)

Environment: ``YRDX_HOME`` (default ``~/.cache/yrdx``), ``YRDX_CACHE`` (jar cache root, default
``YRDX_HOME``), ``KAFKA_BOOTSTRAP_SERVERS`` (an external cluster: `yrdx kafka` then manages nothing),
``JAVA_HOME``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import gc
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess  # noqa: S404 - we launch java and mvn with fixed argument lists, never a shell
import time
import warnings
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import KafkaConfig
from gateway.dev.kafka_security import BrokerSecurity, BrokerTls, apply_acls, secure_properties

__all__ = [
    "DEFAULT_VERSION",
    "KafkaError",
    "KafkaStartError",
    "LocalKafka",
    "default_home",
    "env_bootstrap_servers",
    "external_status",
    "free_port",
    "probe_metadata",
    "recorded_ports",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_VERSION = "4.1.1"
LOG4J2_VERSION = "2.24.3"  # the version Kafka 4.0/4.1 build against (gradle/dependencies.gradle)
SLF4J_VERSION = "1.7.36"  # Kafka 3.9 fallback: slf4j 1.x + reload4j
RELOAD4J_VERSION = "1.2.25"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
MARKER_NAME = ".complete.json"

JVM_HEAP = ("-Xms256m", "-Xmx512m")
JVM_PERFORMANCE = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)

class KafkaError(RuntimeError):
    """Something went wrong while fetching, formatting or running the local broker."""


class KafkaStartError(KafkaError):
    """The broker did not come up; the message carries the tail of its logs."""


# ----------------------------------------------------------------------------------------------------
# module-level helpers


def default_home() -> Path:
    """``$YRDX_HOME`` or ``~/.cache/yrdx``."""
    env = os.environ.get("YRDX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yrdx"


def cache_root() -> Path:
    """Jar cache root: ``$YRDX_CACHE`` or :func:`default_home`; jars go to ``<root>/kafka/<ver>/libs``."""
    env = os.environ.get("YRDX_CACHE")
    return Path(env).expanduser() if env else default_home()


def env_bootstrap_servers() -> str | None:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set and not blank: an external cluster to use instead of ours."""
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


def recorded_ports(data_dir: Path) -> dict[str, int]:
    """The listener ports (``PLAINTEXT``, ``CONTROLLER``) that the last start wrote into ``data_dir``'s
    ``server.properties``; empty when there is none (never started) or it cannot be read."""
    try:
        lines = (Path(data_dir).expanduser() / "server.properties").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    listeners = next((line.split("=", 1)[1] for line in lines if line.startswith("listeners=")), "")
    ports: dict[str, int] = {}
    for listener in listeners.split(","):  # NAME://host:port
        name, sep, address = listener.strip().partition("://")
        port = address.rpartition(":")[2]
        if sep and port.isdigit():
            ports[name] = int(port)
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_cluster_id() -> str:
    """A Kafka ``Uuid`` string: 16 random bytes, base64url, no padding, not starting with '-'."""
    while True:
        raw = secrets.token_bytes(16)
        value = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not value.startswith("-") and raw.strip(b"\x00") not in (b"", b"\x01"):
            return value


def _port_is_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the JVM does, so that TIME_WAIT leftovers of a previous run are no conflict
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _find_executable(name: str, java_home_bin: bool = False) -> str:
    if java_home_bin:
        java_home = os.environ.get("JAVA_HOME")
        if java_home:
            candidate = Path(java_home) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(name)
    if not found:
        raise KafkaError(f"'{name}' not found on PATH; the local Kafka needs Java 17+ and Maven")
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


async def _probe_metadata_async(kafka: KafkaConfig, seconds: float) -> int:
    """ApiVersions + Metadata through aiokafka; returns the number of brokers the cluster reports."""
    from aiokafka.client import AIOKafkaClient  # local import: keep `import gateway.dev.local_kafka` cheap

    from gateway.kafka.transport import client_options

    client = AIOKafkaClient(
        **client_options(kafka),
        client_id="yrdx-local-probe",
        request_timeout_ms=max(1000, int(seconds * 1000)),
    )
    try:
        async with asyncio.timeout(seconds):
            await client.bootstrap()
        return len(client.cluster.brokers())
    finally:
        await client.close()


def probe_metadata(kafka: KafkaConfig | str, timeout: float = 5.0) -> int:
    """Blocking metadata probe usable from sync code and from inside a running event loop; `kafka` is client
    settings or a bootstrap server list (PLAINTEXT).

    Returns the broker count (0 means the cluster answered but listed no broker); raises on failure.
    """
    cfg = KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    return _run_async(_probe_metadata_async(cfg, timeout), timeout + 5.0)


def _run_async(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run `coro` to its end from sync code, also from inside a running event loop (in a thread of its own)."""
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="yrdx-kafka-probe") as pool:
            return pool.submit(asyncio.run, coro).result(timeout=timeout)
    finally:
        # A probe cut off in the middle of a TLS handshake (the secure broker still starting) leaves asyncio an
        # SSL transport it never closes; it belongs to the loop that just ended: collect it here, quietly, rather
        # than as a ResourceWarning in whatever runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def external_status(bootstrap_servers: str, timeout: float = 5.0) -> dict[str, object]:
    """What a metadata probe of an external cluster finds: ``external``, ``bootstrap_servers``, ``running`` and
    either ``brokers`` (the count it lists) or ``error`` (what stopped the probe)."""
    info: dict[str, object] = {"external": True, "bootstrap_servers": bootstrap_servers}
    try:
        with _quiet_aiokafka():
            brokers = probe_metadata(bootstrap_servers, timeout=timeout)
        info.update(running=brokers > 0, brokers=brokers)
    except Exception as exc:  # noqa: BLE001 - report whatever stopped the probe
        info.update(running=False, error=f"{type(exc).__name__}: {exc}")
    return info


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's 'Unable connect' errors while we poll a broker that is still starting."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


# ----------------------------------------------------------------------------------------------------
# the broker


class LocalKafka:
    """A single-node KRaft Kafka (broker + controller in one JVM) on 127.0.0.1, data kept in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = DEFAULT_VERSION,
        security: BrokerSecurity | None = None,
    ) -> None:
        """`security` runs the locked-down broker of gateway/dev/kafka_security.py with the users and ACLs of an
        exchange; a dir that last ran locked down stays so without it (its users and ACLs are in its metadata)."""
        if port == controller_port:
            raise ValueError("port and controller_port must differ")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.host = "127.0.0.1"
        self.security = security
        self.secure = security is not None or "SASL_SSL" in recorded_ports(self.data_dir)
        self.tls = BrokerTls(self.data_dir)
        self.last_download_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths -----------------------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def client_config(self) -> KafkaConfig:
        """Client settings that reach this broker with every right: PLAINTEXT, or the admin of the secure one."""
        if self.secure:
            return self.tls.admin_config(self.bootstrap_servers)
        return KafkaConfig(bootstrap_servers=self.bootstrap_servers)

    @property
    def version_dir(self) -> Path:
        return cache_root() / "kafka" / self.version

    @property
    def libs_dir(self) -> Path:
        return self.version_dir / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.data_dir / "kafka.out"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / ("log4j.properties" if self._is_kafka3 else "log4j2.properties")

    @property
    def _is_kafka3(self) -> bool:
        return self.version.split(".", 1)[0] in {"2", "3"}

    @classmethod
    def of_dir(
        cls,
        data_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        version: str = DEFAULT_VERSION,
        security: BrokerSecurity | None = None,
    ) -> LocalKafka:
        """The broker of ``data_dir`` (default ``$YRDX_HOME/broker``): on the ports given, else on those its last
        start recorded there (a broker started on 19092 is reported, stopped and restarted on 19092), else on
        9092 and 9093."""
        data_dir = Path(data_dir) if data_dir is not None else default_home() / "broker"
        recorded = recorded_ports(data_dir)
        client_port = recorded.get("SASL_SSL", recorded.get("PLAINTEXT", 9092))
        return cls(
            data_dir,
            port=port if port is not None else client_port,
            controller_port=controller_port if controller_port is not None else recorded.get("CONTROLLER", 9093),
            version=version,
            security=security,
        )

    def __repr__(self) -> str:
        return f"LocalKafka({self.version!r}, {self.bootstrap_servers!r}, data_dir={str(self.data_dir)!r})"

    # -- jars ------------------------------------------------------------------------------------------------
    def _pom(self) -> str:
        deps = [("org.apache.kafka", "kafka_2.13", self.version)]
        if self._is_kafka3:
            deps += [
                ("org.slf4j", "slf4j-reload4j", SLF4J_VERSION),
                ("ch.qos.reload4j", "reload4j", RELOAD4J_VERSION),
            ]
        else:
            deps += [
                ("org.apache.logging.log4j", art, LOG4J2_VERSION)
                for art in ("log4j-slf4j-impl", "log4j-core", "log4j-api")
            ]
        dep_xml = "\n".join(
            f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version></dependency>"
            for g, a, v in deps
        )
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by gateway/dev/local_kafka.py: the jars of a local Apache Kafka {self.version} -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>yrdx.local</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{self.version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
        <configuration>
          <outputDirectory>${{project.basedir}}/libs</outputDirectory>
          <includeScope>runtime</includeScope>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
"""

    def jars_ready(self) -> bool:
        return (self.version_dir / MARKER_NAME).is_file() and (self.libs_dir / self._kafka_jar_name).is_file()

    @property
    def _kafka_jar_name(self) -> str:
        return f"kafka_2.13-{self.version}.jar"

    def ensure_jars(self) -> Path:
        """Fetch the broker's jars once (Maven, ~/.m2) and return the libs dir; later calls reuse them."""
        if self.jars_ready():
            return self.libs_dir
        with _file_lock(self.version_dir / ".lock"):
            if self.jars_ready():  # another process finished while we waited for the lock
                return self.libs_dir
            mvn = _find_executable("mvn")
            marker = self.version_dir / MARKER_NAME
            marker.unlink(missing_ok=True)
            shutil.rmtree(self.libs_dir, ignore_errors=True)  # leftovers of an interrupted run
            pom = self.version_dir / "pom.xml"
            pom.write_text(self._pom(), encoding="utf-8")
            log.info(
                "fetching Apache Kafka %s jars from Maven Central into %s (first run)",
                self.version,
                self.libs_dir,
            )
            started = time.monotonic()
            cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
            proc = subprocess.run(  # noqa: S603 - fixed argv
                cmd,
                cwd=self.version_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.monotonic() - started
            if proc.returncode != 0 or not (self.libs_dir / self._kafka_jar_name).is_file():
                output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
                raise KafkaError(
                    f"Maven could not fetch Kafka {self.version} (exit {proc.returncode}, {elapsed:.1f} s): "
                    f"{' '.join(cmd)}\n{output}"
                )
            jars = sorted(p.name for p in self.libs_dir.glob("*.jar"))
            marker.write_text(
                json.dumps(
                    {
                        "version": self.version,
                        "seconds": round(elapsed, 1),
                        "jars": jars,
                        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
            self.last_download_seconds = elapsed
            log.info("fetched %d jars for Kafka %s in %.1f s", len(jars), self.version, elapsed)
            return self.libs_dir

    # -- config ----------------------------------------------------------------------------------------------
    def server_properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "9223372036854775807",
        }
        if not self._is_kafka3:
            props["share.coordinator.state.topic.replication.factor"] = "1"
            props["share.coordinator.state.topic.min.isr"] = "1"
        if self.secure:
            props.update(secure_properties(self.tls, self.host, self.port, self.controller_port))
        return props

    def _log4j_config(self) -> str:
        log_file = str(self.log_file)
        if self._is_kafka3:
            return "\n".join(
                [
                    "log4j.rootLogger=INFO, file",
                    "log4j.appender.file=org.apache.log4j.RollingFileAppender",
                    f"log4j.appender.file.File={log_file}",
                    "log4j.appender.file.MaxFileSize=10MB",
                    "log4j.appender.file.MaxBackupIndex=2",
                    "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                    "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                    "log4j.logger.kafka.request.logger=WARN",
                    "log4j.logger.org.apache.kafka.clients=WARN",
                    "",
                ]
            )
        return "\n".join(
            [
                "status = warn",
                "name = yrdx-local-kafka",
                "shutdownHook = disable",
                "appender.file.type = RollingFile",
                "appender.file.name = FILE",
                f"appender.file.fileName = {log_file}",
                f"appender.file.filePattern = {log_file}.%i",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 10MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 2",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.request.name = kafka.request.logger",
                "logger.request.level = WARN",
                "logger.clients.name = org.apache.kafka.clients",
                "logger.clients.level = WARN",
                "",
            ]
        )

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{k}={v}\n" for k, v in self.server_properties().items())
        self.properties_file.touch(mode=0o600)
        self.properties_file.chmod(0o600)  # before the secure broker's admin password (its JAAS settings) is in it
        self.properties_file.write_text(
            f"# generated by gateway/dev/local_kafka.py at each start\n{body}", encoding="utf-8"
        )
        self.log4j_file.write_text(self._log4j_config(), encoding="utf-8")

    def _java_command(self, main_class: str, args: Sequence[str], heap: Sequence[str]) -> list[str]:
        java = _find_executable("java", java_home_bin=True)
        if self._is_kafka3:
            log_opts = [f"-Dlog4j.configuration={self.log4j_file.as_uri()}"]
        else:
            log_opts = [f"-Dlog4j2.configurationFile={self.log4j_file}"]
        return [
            java,
            *heap,
            *JVM_PERFORMANCE,
            f"-Dkafka.logs.dir={self.log_file.parent}",
            *log_opts,
            "-cp",
            f"{self.libs_dir}/*",  # expanded by the JVM itself: no shell involved
            main_class,
            *args,
        ]

    def is_formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def _format(self) -> None:
        cluster_id = random_cluster_id()
        users = dict(self.security.users) if self.security else {}
        scram = self.tls.scram_arguments(users) if self.secure else []
        cmd = self._java_command(
            STORAGE_TOOL, ["format", "-t", cluster_id, "-c", str(self.properties_file), *scram], heap=("-Xmx256m",)
        )
        proc = subprocess.run(  # noqa: S603 - fixed argv
            cmd,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0 or not self.is_formatted():
            output = (proc.stdout + proc.stderr).strip()
            raise KafkaError(f"formatting {self.log_dirs} failed (exit {proc.returncode}):\n{output}")
        if self.secure:
            self.tls.record_users(users)
        log.info("formatted %s with cluster id %s", self.log_dirs, cluster_id)

    # -- process ---------------------------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _pid_alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None  # also reaps our own child once it has exited
        proc_dir = Path("/proc") / str(pid)
        if proc_dir.is_dir():
            try:
                stat = (proc_dir / "stat").read_text()
                if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
                    return False
                cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                return False
            # guard against pid reuse: it must be a kafka.Kafka JVM running our server.properties
            return MAIN_CLASS.encode() in cmdline and str(self.properties_file).encode() in cmdline
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def pid(self) -> int | None:
        """The pid of the running broker, or None."""
        pid = self._read_pid()
        return pid if pid is not None and self._pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def status(self) -> dict[str, object]:
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap_servers": self.bootstrap_servers,
            "controller_port": self.controller_port,
            "version": self.version,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "formatted": self.is_formatted(),
            "secure": self.secure,
        }

    def ready(self, timeout: float = 5.0) -> bool:
        """True when the broker answers ApiVersions + Metadata and lists at least one broker."""
        if not _tcp_open(self.host, self.port):
            return False
        try:
            with _quiet_aiokafka():
                return probe_metadata(self.client_config(), timeout) > 0
        except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Format if needed, start the JVM detached, write the pid file and wait until metadata is served."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            log.info("Kafka already running (pid %s) at %s", self.pid(), self.bootstrap_servers)
            self._wait_ready(deadline, self._read_pid())
            if self.security is not None:
                self._apply_security(self.security)
            return
        self.pid_file.unlink(missing_ok=True)  # stale
        self.ensure_jars()
        if self.secure:
            self._prepare_secure()
        for name, port in (("port", self.port), ("controller_port", self.controller_port)):
            if not _port_is_bindable(port):
                raise KafkaStartError(f"cannot start Kafka: {name} {self.host}:{port} is already in use")
        self._write_config()
        if not self.is_formatted():
            self._format()
        cmd = self._java_command(MAIN_CLASS, [str(self.properties_file)], heap=JVM_HEAP)
        started = time.monotonic()
        with self.stdout_file.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka {self.version}\n".encode())
            out.flush()
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pid = self._process.pid
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        try:
            self._wait_ready(deadline, pid)
            if self.security is not None:
                self._apply_security(self.security)
        except BaseException:
            self.kill()
            raise
        log.info(
            "Kafka %s ready at %s (pid %d) in %.1f s",
            self.version,
            self.bootstrap_servers,
            pid,
            time.monotonic() - started,
        )

    def _prepare_secure(self) -> None:
        """TLS files and the admin password; refuses a formatted dir whose SCRAM users are not the exchange's
        (users are created at format time only)."""
        self.tls.ensure(self.host)
        users = dict(self.security.users) if self.security else {}
        if self.is_formatted() and self.tls.users_differ(users):
            raise KafkaStartError(f"{self.data_dir} was formatted for other SCRAM users or passwords than the "
                                  "exchange's; stop it and start the secure broker in a fresh --dir")

    def _apply_security(self, security: BrokerSecurity) -> None:
        """The exchange's ACLs (as the admin), and the broker's CA certificate where the exchange's configs look."""
        _run_async(apply_acls(self.client_config(), security.acls), 120.0)
        if security.publish_ca_to is not None:
            security.publish_ca_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.tls.ca_cert, security.publish_ca_to)
        log.info("applied %d ACLs", len(security.acls))

    def _wait_ready(self, deadline: float, pid: int | None) -> None:
        while True:
            if pid is None or not self._pid_alive(pid):
                code = self._process.returncode if self._process is not None else None
                what = f"the Kafka JVM exited (code {code}) during startup"
                raise KafkaStartError(self._failure_message(what))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = "Kafka did not answer a metadata request in time"
                raise KafkaStartError(self._failure_message(what))
            if self.ready(timeout=min(5.0, max(1.0, remaining))):
                return
            time.sleep(0.25)

    def _failure_message(self, what: str) -> str:
        parts = [f"{what} ({self.bootstrap_servers}, data {self.data_dir})"]
        for path in (self.stdout_file, self.log_file):
            tail = _tail(path)
            if tail:
                parts.append(f"--- tail of {path} ---\n{tail}")
        return "\n".join(parts)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Removes the pid file. No error if not running."""
        pid = self.pid()
        if pid is not None:
            self._signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                log.warning("Kafka (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout)
                self._signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        self._forget()

    def kill(self) -> None:
        """SIGKILL at once (a crash, for tests). Removes the pid file. No error if not running."""
        pid = self.pid()
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self._forget()

    def _forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1.0)
            self._process = None
