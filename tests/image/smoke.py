"""The container image's smoke test: `make image-test` (scripts/image.sh test) runs it; pytest does not collect it.

Everywhere it inspects the image: its configuration (non-root user, `yrdx serve --config` entrypoint, the config
path as CMD, OCI labels) and its files, exported from a created (never started) container (the wheel's version
installed in /opt/yrdx with its schemas, no compiler, no pip, no pip cache, no wheel or build leftovers, no keys).

Where podman can run containers, it also runs the image as the Helm chart does (read-only root file system, /tmp
and the state directory writable, all capabilities dropped, uid 10001, the config mounted read-only at
/etc/yrdx/gateway.yaml) as Shanghai's gateway, against a real broker (a LocalKafka of its own, or
KAFKA_BOOTSTRAP_SERVERS) and a fresh exchange of `yrdx init`, with Jiangsu's gateway as a host process; checks
/healthz and /readyz, relays one sealed message from the JS platform API into SH's pull inbox (payload intact)
and sees SH's signed receipt make it `delivered` at JS; then SIGTERM must stop the container with exit code 0.
Where containers cannot run (or YRDX_IMAGE_TEST=inspect), it says so and only inspects; YRDX_IMAGE_TEST=run makes
that a failure instead.

The last line says PASS or FAIL; any failure exits 1. Containers, the JS process and the broker it started are
removed on every exit path.

    python tests/image/smoke.py [--image localhost/yrdx:0.1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.dev.exchange import edit_config, init_exchange, platform_id  # noqa: E402
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port  # noqa: E402
from gateway.schemas.registry import SchemaRegistry  # noqa: E402

# YRDX_IMAGE_TEST: empty (run where containers can run, else inspect), "run" (fail if they cannot), "inspect".
MODE = os.environ.get("YRDX_IMAGE_TEST", "")
UID = 10001
ENTRYPOINT = ["yrdx", "serve", "--config"]
CMD = ["/etc/yrdx/gateway.yaml"]
MESSAGE_TYPE = "medical.filing.request"  # sealed by default: the container opens it with SH's X25519 key
# Executables of a build tool chain: none may be in the image.
BUILD_TOOLS = re.compile(
    r"(^|/)(s?bin)/(gcc|cc|c\+\+|g\+\+|cpp|clang|clang\+\+|ld|ld\.bfd|ld\.gold|as|make|cmake|rustc|cargo"
    r"|[a-z0-9_]+-linux-gnu-(gcc|g\+\+|ld|as))(-[0-9.]+)?$"
    r"|(^|/)cc1(plus)?$|^usr/include/python3[^/]*/Python\.h$"
)


class Failure(Exception):
    pass


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def check(ok: bool, what: str, detail: str = "") -> None:
    if not ok:
        raise Failure(f"{what}{': ' + detail if detail else ''}")
    say(f"ok   {what}")


def podman(*args: str, timeout: float = 120, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)  # noqa: S603, S607
    if check_rc and proc.returncode != 0:
        raise Failure(f"podman {' '.join(args[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


# ---------------------------------------------------------------------------------------------------------------
# inspection: the image's configuration and files (no container is started)


def inspect_config(image: str, version: str) -> None:
    doc = json.loads(podman("image", "inspect", image).stdout)[0]
    config = doc.get("Config") or {}
    user = str(config.get("User") or "")
    check(user.split(":")[0] not in ("", "0", "root"), "runs as a non-root user", f"User is {user!r}")
    check(user == f"{UID}:{UID}", f"user is {UID}:{UID} (the chart's runAsUser/runAsGroup)", f"User is {user!r}")
    check(config.get("Entrypoint") == ENTRYPOINT, "entrypoint is `yrdx serve --config`", str(config.get("Entrypoint")))
    check(config.get("Cmd") == CMD, f"CMD is the config path {CMD[0]}", str(config.get("Cmd")))
    labels = config.get("Labels") or {}
    oci = "org.opencontainers.image."
    check(labels.get(oci + "title") == "yrdx", "OCI label title", str(labels.get(oci + "title")))
    check(labels.get(oci + "version") == version, f"OCI label version {version}", str(labels.get(oci + "version")))
    missing = [k for k in ("licenses", "description", "base.name") if not labels.get(oci + k)]
    check(not missing, "OCI labels licenses, description, base.name", f"empty: {missing}")
    path = next((e.split("=", 1)[1] for e in config.get("Env") or [] if e.startswith("PATH=")), "")
    check(path.split(":")[0] == "/opt/yrdx/bin", "the venv's bin/ leads PATH", path)
    revision = labels.get(oci + "revision", "")[:12] or "(none given)"
    say(f"     size {int(doc.get('Size', 0)) / 1e6:.0f} MB, base {labels.get(oci + 'base.name')}, "
        f"revision {revision}, created {labels.get(oci + 'created') or '(none given)'}")


def exported_files(image: str) -> Iterator[tarfile.TarInfo]:
    """Every entry of the image's file system: `podman export` of a container that is created, never started."""
    name = f"yrdx-image-test-export-{os.getpid()}"
    podman("create", "--name", name, image)
    proc = subprocess.Popen(["podman", "export", name], stdout=subprocess.PIPE)  # noqa: S603, S607
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield from tar
        if proc.wait(60) != 0:
            raise Failure(f"podman export exited {proc.returncode}")
    finally:
        if proc.poll() is None:  # stopped reading early (a failure, a signal): it would block on the pipe
            proc.kill()
            proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        podman("rm", "-f", name, check_rc=False)


def inspect_files(image: str, version: str) -> None:
    schemas = {p.relative_to(ROOT / "schemas").as_posix() for p in (ROOT / "schemas").rglob("*.json")}
    site = None
    names: dict[str, tarfile.TarInfo] = {}
    for info in exported_files(image):
        name = info.name.lstrip("./").lstrip("/")
        names[name] = info
        m = re.fullmatch(r"opt/yrdx/lib/(python3\.\d+)/site-packages/yrdx-[^/]+\.dist-info/METADATA", name)
        if m:
            site = f"opt/yrdx/lib/{m.group(1)}/site-packages"
    check(site is not None, "the yrdx wheel is installed in the venv /opt/yrdx")
    dist = [n for n in names if re.fullmatch(rf"{site}/yrdx-[^/]+\.dist-info", n)]
    check(dist == [f"{site}/yrdx-{version}.dist-info"], f"installed version is {version}", str(dist))
    check("opt/yrdx/bin/yrdx" in names and names["opt/yrdx/bin/yrdx"].mode & 0o111 != 0,
          "console script /opt/yrdx/bin/yrdx")
    shipped = {n.removeprefix(f"{site}/gateway/_schemas/") for n in names
               if n.startswith(f"{site}/gateway/_schemas/") and n.endswith(".json")}
    check(schemas <= shipped, f"the wheel carries the {len(schemas)} JSON Schemas",
          f"missing {sorted(schemas - shipped)[:5]}")
    tools = sorted(n for n, i in names.items() if BUILD_TOOLS.search(n) and not i.isdir())
    check(not tools, "no compiler, linker, make or Python headers", str(tools[:10]))
    pips = sorted(n for n in names if re.match(r"opt/yrdx/(bin/pip|lib/python3[^/]*/site-packages/pip(/|-))", n))
    check(not pips, "no pip in the venv", str(pips[:5]))
    caches = sorted(n for n in names if re.search(r"(^|/)\.cache/pip(/|$)|(^|/)pip-(req|build|wheel)-", n)
                    or re.match(r"(root|var/lib/yrdx|home/[^/]+)/\.cache(/|$)", n))
    check(not caches, "no pip cache (~/.cache/pip, /root/.cache, pip build folders)", str(caches[:5]))
    # Debian's python3-venv ships pip's and setuptools' wheels in /usr/share/python-wheels: those are packages.
    wheels = sorted(n for n in names if n.endswith(".whl") and not n.startswith("usr/share/python-wheels/"))
    check(not wheels, "no wheel files left behind", str(wheels[:5]))
    leftovers = sorted(n for n in ("src", "dist", "opt/build", "build") if n in names)
    check(not leftovers, "no build-stage leftovers (/src, /dist, /opt/build)", str(leftovers))
    keys = sorted(n for n in names if n.endswith(".key") or "/certs/dev/" in f"/{n}")
    check(not keys, "no private keys or development PKI", str(keys[:5]))
    tmp = sorted(n for n in names if n.startswith("tmp/") and n != "tmp/")
    check(not tmp, "/tmp is empty", str(tmp[:5]))
    state = names.get("var/lib/yrdx")
    check(state is not None and state.isdir() and (state.uid, state.gid) == (UID, UID),
          f"state directory /var/lib/yrdx owned by {UID}")
    unreadable = sorted(n for n, i in names.items()
                        if n.startswith("opt/yrdx/") and (i.isfile() or i.isdir()) and not i.mode & 0o004)
    check(not unreadable, "/opt/yrdx is readable by any uid (the chart may run another non-root uid)",
          str(unreadable[:5]))


# ---------------------------------------------------------------------------------------------------------------
# running it


def containers_run(image: str) -> tuple[bool, str]:
    """Whether this machine can start a container of `image`; else why not."""
    if MODE == "inspect":
        return False, "YRDX_IMAGE_TEST=inspect asked for inspection only"
    try:
        proc = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/true", image, timeout=90,
                      check_rc=False)
    except subprocess.TimeoutExpired:
        return False, "podman run did not finish within 90 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return False, f"podman run exited {proc.returncode}: {last}"
    return True, ""


# Imported in the container as another non-root uid: the native wheels load on the image's Python.
NATIVE_CHECK = """
import aiokafka.codec, cryptography, gmssl, jsonschema_rs, orjson, psycopg, tongsuopy, yaml
import gateway.runtime
from gateway.crypto.sm2 import generate_sm2_key
generate_sm2_key().sign(b"yrdx")  # tongsuopy's SM2
assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__
assert aiokafka.codec.has_lz4() and aiokafka.codec.has_zstd(), "lz4/zstd codecs"
import platform; print(platform.python_version())
"""


def check_native(image: str) -> None:
    proc = podman("run", "--rm", "--network", "none", "--user", "4242:4242", "--read-only", "--entrypoint",
                  "python3", image, "-c", NATIVE_CHECK, check_rc=False, timeout=90)
    check(proc.returncode == 0, f"as uid 4242, Python {proc.stdout.strip() or '?'} imports the runtime and its native "
          "wheels (cryptography, tongsuopy SM2, gmssl, jsonschema-rs, orjson, psycopg binary, lz4/zstd)",
          proc.stderr.strip()[-800:])


def http(method: str, url: str, token: str | None = None, body: Any = None,
         timeout: float = 15) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what: str, probe: Callable[[], Any], timeout: float, alive: Callable[[], str | None]) -> Any:
    """Call probe until it returns something truthy; Failure after `timeout` s, or at once when alive() names a
    reason the thing waited for is gone."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        gone = alive()
        if gone:
            raise Failure(f"{what}: {gone}")
        try:
            last = probe()
        except (OSError, urllib.error.URLError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.3)
    raise Failure(f"{what}: not within {timeout:.0f} s (last: {str(last)[:300]})")


@contextmanager
def broker(tmp: Path) -> Iterator[str]:
    external = env_bootstrap_servers()
    if external:
        say(f"     broker: KAFKA_BOOTSTRAP_SERVERS={external}")
        yield external
        return
    local = LocalKafka(tmp / "kafka", port=free_port(), controller_port=free_port())
    if not local.jars_ready():
        say("     fetching the Kafka jars (first run only)")
        local.ensure_jars()
    started = time.monotonic()
    local.start()
    say(f"     broker: Apache Kafka {local.version} on {local.bootstrap_servers} "
        f"(started in {time.monotonic() - started:.1f} s)")
    try:
        yield local.bootstrap_servers
    finally:
        local.stop()
        say("     broker stopped")


def host_yrdx(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,  # noqa: S603
                          cwd=ROOT, timeout=60)
    if proc.returncode != 0:
        raise Failure(f"yrdx {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def run_image(image: str, tmp: Path, stack: ExitStack) -> None:
    check_native(image)
    bootstrap = stack.enter_context(broker(tmp))
    namespace = f"image-smoke-{secrets.token_hex(3)}"  # apart from any other exchange on the same cluster
    exdir = tmp / "exchange"
    ex = init_exchange(exdir, base_port=0, bootstrap_servers=bootstrap, namespace=namespace)
    sh_port, js_port = free_port(), free_port()
    edit_config(ex.config_path("JS"), listen={"host": "127.0.0.1", "port": js_port})
    # SH in the container: its config as the chart mounts it, state in the (writable) state directory.
    edit_config(ex.config_path("SH"), listen={"host": "127.0.0.1", "port": sh_port},
                state={"path": "/var/lib/yrdx/state.sqlite"}, audit_index="/var/lib/yrdx/audit-index.sqlite")
    shutil.copyfile(ex.config_path("SH"), exdir / "gateway.yaml")
    # The keys are 0600 (as `yrdx init` writes them): the container's uid must own them, as fsGroup does in the
    # chart. (Rootless podman maps uids, so there the throw-away test keys are made readable instead.)
    if os.geteuid() == 0:
        for p in [exdir, *exdir.rglob("*")]:
            os.chown(p, UID, UID)
    else:
        subprocess.run(["chmod", "-R", "a+rX", str(exdir)], check=True)  # noqa: S603, S607

    name = f"yrdx-image-test-sh-{os.getpid()}"
    # The state directory is a volume of its own (a new volume takes the image's /var/lib/yrdx, owner included).
    podman("volume", "create", name)
    stack.callback(lambda: podman("volume", "rm", "-f", name, check_rc=False, timeout=60))
    stack.callback(lambda: podman("rm", "-f", "-t", "5", name, check_rc=False, timeout=60))
    podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,mode=1777",
           "-v", f"{name}:/var/lib/yrdx", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{exdir}:/etc/yrdx:ro", image)
    say(f"     SH: the image as container {name} on 127.0.0.1:{sh_port} (config /etc/yrdx/gateway.yaml, read-only)")

    def sh_alive() -> str | None:
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check_rc=False).stdout
        if not state.startswith("running"):
            logs = podman("logs", "--tail", "30", name, check_rc=False)
            return f"the container is {state.strip()}:\n{(logs.stdout + logs.stderr).strip()}"
        return None

    sh = f"http://127.0.0.1:{sh_port}"
    wait_for("SH /healthz", lambda: http("GET", sh + "/healthz")[0] == 200, 90, sh_alive)
    check(True, "GET /healthz of the container answers 200")
    ready = wait_for("SH /readyz", lambda: (lambda r: r[1] if r[0] == 200 else None)(http("GET", sh + "/readyz")),
                     90, sh_alive)
    check(ready.get("ready") is True and not ready.get("failing"),
          "GET /readyz of the container: ready, no failing check", str(ready))

    # JS: a host process of the same exchange.
    ready_file = tmp / "js.port"
    log = (tmp / "js.log").open("wb")
    stack.callback(log.close)
    js_proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(ex.config_path("JS")), "--ready-file",
         str(ready_file), "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop_js() -> None:
        if js_proc.poll() is None:
            js_proc.terminate()
            try:
                js_proc.wait(30)
            except subprocess.TimeoutExpired:
                js_proc.kill()
                js_proc.wait(10)
    stack.callback(stop_js)

    def js_alive() -> str | None:
        if js_proc.poll() is not None:
            return f"the JS gateway exited {js_proc.returncode}: {(tmp / 'js.log').read_text()[-1500:]}"
        return None

    js = f"http://127.0.0.1:{js_port}"
    wait_for("JS /readyz", lambda: http("GET", js + "/readyz")[0] == 200, 90, js_alive)
    say(f"     JS: host process on 127.0.0.1:{js_port}")

    payload = SchemaRegistry.load().examples(MESSAGE_TYPE)[0]
    correlation = f"image-smoke-{secrets.token_hex(4)}"
    js_token = host_yrdx("token", "--config", str(ex.config_path("JS")), "--as", platform_id("JS"))
    status, doc = http("POST", js + "/v1/messages", js_token,
                       {"type": MESSAGE_TYPE, "to": "SH", "payload": payload, "correlation_id": correlation})
    check(status == 202 and isinstance(doc, dict) and "id" in doc, f"JS accepts one {MESSAGE_TYPE} for SH (202)",
          f"{status} {doc}")
    msg_id = doc["id"]

    def sh_token() -> str:  # minted inside the container: its CLI reads the mounted config and key
        return podman("exec", name, "yrdx", "token", "--config", CMD[0], "--as", platform_id("SH")).stdout.strip()

    def pulled() -> dict[str, Any] | None:
        s, inbox = http("GET", sh + "/v1/inbox?max=10&wait=2", sh_token())
        if s != 200:
            raise Failure(f"GET /v1/inbox of SH answered {s}: {inbox}")
        return next((m for m in inbox["messages"] if m["id"] == msg_id), None)

    started = time.monotonic()
    msg = wait_for(f"message {msg_id} in SH's pull inbox", pulled, 60, sh_alive)
    got = msg.get("payload", msg["envelope"].get("payload"))
    check(msg["from"] == "JS" and msg["type"] == MESSAGE_TYPE and got == payload,
          f"relayed JS -> SH into the container's pull inbox in {time.monotonic() - started:.1f} s, sealed payload "
          "opened intact", json.dumps(msg)[:500])
    s, acked = http("POST", sh + "/v1/inbox/ack", sh_token(), {"ids": [msg_id]})
    check(s == 200 and acked == {"acked": 1}, "SH acks it", f"{s} {acked}")

    def delivered() -> dict[str, Any] | None:
        token = host_yrdx("token", "--config", str(ex.config_path("JS")), "--as", platform_id("JS"))
        s, st = http("GET", f"{js}/v1/messages/{msg_id}", token)
        return st if s == 200 and st.get("status") == "delivered" else None
    st = wait_for(f"{msg_id} delivered at JS", delivered, 60, lambda: sh_alive() or js_alive())
    check(bool(st.get("receipt")), "SH's signed receipt reached JS: status delivered", json.dumps(st)[:300])

    podman("stop", "-t", "30", name, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    check(code == "0", "SIGTERM stops the container cleanly (exit code 0)", f"exit code {code}: "
          + podman("logs", "--tail", "20", name, check_rc=False).stderr[-1500:])


# ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=f"localhost/yrdx:{version}", help="name or id of the image to check")
    parser.add_argument("--name", default="", help="the name to report (scripts/image.sh passes the id as --image)")
    args = parser.parse_args()
    image = args.image
    shown = f"{args.name} ({image[:12]})" if args.name and args.name != image else image

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(f"image-test: FAIL: interrupted by signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    started = time.monotonic()
    mode = "inspected"
    try:
        with ExitStack() as stack:
            say(f"image {shown}")
            inspect_config(image, version)
            inspect_files(image, version)
            can_run, why = containers_run(image)
            if can_run:
                tmp = Path(tempfile.mkdtemp(prefix="yrdx-image-test-"))
                stack.callback(shutil.rmtree, tmp, ignore_errors=True)
                run_image(image, tmp, stack)
                mode = "ran"
            elif MODE == "run":
                raise Failure(f"YRDX_IMAGE_TEST=run, but containers cannot run here: {why}")
            else:
                say(f"CONTAINERS CANNOT RUN HERE ({why}): the image was inspected, not run")
                mode = f"inspected only, not run: {why}"
    except Failure as e:
        say(f"FAIL: {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - one closing line, whatever went wrong
        say(f"FAIL: {type(e).__name__}: {e}")
        return 1
    if mode == "ran":
        say(f"PASS: {shown} inspected and run with podman (healthz, readyz, one message JS -> SH relayed and "
            f"receipted, clean stop) in {time.monotonic() - started:.0f} s")
    else:
        say(f"PASS ({mode}): configuration and files of {shown} checked in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
