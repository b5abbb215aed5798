#!/usr/bin/env bash
# Check the Prometheus alert rules the chart ships (helm/yrdx/files/yrdx-alerts.rules.yaml) with promtool:
#   1. promtool check rules: the file parses, every expression is valid PromQL, every template renders;
#   2. promtool test rules helm/yrdx/files/yrdx-alerts.test.yaml: each alert fires on series that should
#      raise it, with the labels and annotations expected, and stays quiet on series that should not;
#   3. every PromQL expression of the Grafana dashboard (helm/yrdx/files/yrdx-dashboard.json) parses: they
#      are written as recording rules to a temporary file (Grafana's $__rate_interval as 5m, $region as .*)
#      and checked with promtool check rules.
#
# promtool comes from PATH, else from ${YRDX_CACHE:-$HOME/.cache/yrdx}/bin/promtool, else from Debian's
# `prometheus` package (which carries promtool): `apt-get download` fetches the .deb (after `apt-get update`
# when apt knows no candidate for it) and promtool is unpacked from it into that directory. Unpacking
# instead of `apt-get install` runs none of the package's maintainer scripts, so no Prometheus server is
# set up or started on the machine. Safe to run again: later runs use the unpacked promtool.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES="$ROOT/helm/yrdx/files"
RULES="$FILES/yrdx-alerts.rules.yaml"
TESTS="$FILES/yrdx-alerts.test.yaml"
DASHBOARD="$FILES/yrdx-dashboard.json"
BIN="${YRDX_CACHE:-$HOME/.cache/yrdx}/bin"

say() { printf '\n==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }

install_promtool() {
    command -v apt-get >/dev/null || { echo "promtool is not installed and apt-get is not here" >&2; exit 1; }
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || { echo "apt knows no prometheus package; as root: apt-get update" >&2; exit 1; }
        say "apt-get update (apt knows no prometheus package yet)"
        run apt-get update -q
    fi
    say "unpacking promtool from Debian's prometheus package into $BIN (once)"
    local work
    work=$(mktemp -d)
    # as root apt would drop to its _apt user, which cannot write to this directory, and warn
    (cd "$work" && run apt-get download -q -o APT::Sandbox::User="$(id -un)" prometheus)
    run dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    mkdir -p "$BIN"
    install -m 0755 "$work/root/usr/bin/promtool" "$BIN/promtool"
    rm -rf "$work"
}

if command -v promtool >/dev/null; then
    PROMTOOL=$(command -v promtool)
elif [ -x "$BIN/promtool" ]; then
    PROMTOOL="$BIN/promtool"
else
    install_promtool
    PROMTOOL="$BIN/promtool"
fi
run "$PROMTOOL" --version | head -n 1

say "promtool check rules"
run "$PROMTOOL" check rules "$RULES"
say "promtool test rules"
run "$PROMTOOL" test rules "$TESTS"
say "promtool check rules on the dashboard's expressions"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PYTHON=python3
command -v python3 >/dev/null || PYTHON="$ROOT/.venv/bin/python"
"$PYTHON" - "$DASHBOARD" "$WORK/dashboard.rules.yaml" <<'PY'
import json, sys

board = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if t.get("expr")]
assert exprs, "no expression in the dashboard"
with open(sys.argv[2], "w") as out:  # JSON is YAML: one recording rule per expression
    rules = [{"record": f"yrdx_dashboard:expr_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$region", ".*")} for i, e in enumerate(exprs)]
    json.dump({"groups": [{"name": "yrdx-dashboard", "rules": rules}]}, out)
print(f"   {len(exprs)} expressions from {len(board['panels'])} panels")
PY
run "$PROMTOOL" check rules "$WORK/dashboard.rules.yaml"
say "alert rules and dashboard expressions OK"
