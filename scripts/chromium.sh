#!/usr/bin/env bash
# Debian's chromium for the console's browser test (tests/e2e/test_console.py drives it headless over the Chrome
# DevTools Protocol). Idempotent: nothing to do when it is already installed.
#
#   scripts/chromium.sh install    install Debian's chromium when no chromium is on PATH
#   scripts/chromium.sh path       print the chromium binary (exit 1 when there is none)
#
# apt's package lists are refreshed first only when `apt-cache policy chromium` shows no candidate (a machine
# whose lists were never fetched, or are too old to name it).
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

chromium_bin() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    done
    return 1
}

has_candidate() {
    local candidate
    candidate=$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

install() {
    chromium_bin >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "chromium is not installed; as root: apt-get install -y chromium"
    if ! has_candidate; then
        echo "chromium.sh: no chromium candidate in apt's lists; apt-get update" >&2
        apt-get update -q
    fi
    has_candidate || die "apt knows no chromium package (is this Debian, with its main component?)"
    echo "chromium.sh: installing Debian's chromium" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation
    chromium_bin >/dev/null || die "chromium installed, but no chromium on PATH"
}

case "${1:-}" in
    install) install ;;
    path) chromium_bin || die "no chromium on PATH (bash scripts/chromium.sh install)" ;;
    *) die "usage: $0 install | path" ;;
esac
