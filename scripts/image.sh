#!/usr/bin/env bash
# The gateway's container image (./Dockerfile) built from Debian packages alone: our machines reach package
# registries but no container registry, so the base image is debootstrapped and the wheels are downloaded on
# the host with pip. Every verb is idempotent and reuses what an earlier run left in the cache.
#
#   scripts/image.sh build    tools, podman settings, base, wheelhouse, then `podman build` -> $IMAGE
#   scripts/image.sh test     the smoke test of $IMAGE (tests/image/smoke.py): runs it against a real broker,
#                             or only inspects it where containers cannot run (and says so)
#   scripts/image.sh tools | base | wheels    one step of build
#
# Settings (environment): IMAGE (localhost/yrdx:<version of pyproject.toml>), BASE_IMAGE
# (localhost/bookworm-python:base), DEBIAN_MIRROR (default: the Debian mirror apt is configured with, else
# http://deb.debian.org/debian), IMAGE_SOURCE (org.opencontainers.image.source label; default empty).
# Cache: $YRDX_CACHE, else $YRDX_HOME, else ~/.cache/yrdx; under image/: the base image (`podman save`) and the
# wheelhouse, each keyed on what it was made from. Podman keeps the build's layers itself.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "image.sh: $*" >&2; exit 1; }
say() { echo "image.sh: $*" >&2; }

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=${IMAGE:-localhost/yrdx:$VERSION}
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-python:base}
CACHE=${YRDX_CACHE:-${YRDX_HOME:-$HOME/.cache/yrdx}}/image
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
WHEELHOUSE=build/image/wheelhouse  # inside the build context (.dockerignore lets it in), git-ignored
TOOLS=(podman buildah debootstrap skopeo umoci runc uidmap)

is_root() { [ "$(id -u)" = 0 ]; }

# One image build or smoke test at a time per machine: they share the cache, podman's store and the image's name
# (two clones, CI beside a developer). Held until the script exits.
lock() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        say "waiting for another image build or test on this machine to finish ($CACHE/.lock)"
        flock 9
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# tools and settings

tools() {
    local missing=() p
    for p in "${TOOLS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        is_root || die "missing Debian packages: ${missing[*]}; as root: apt-get install -y ${missing[*]}"
        say "installing ${missing[*]}"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; then
            apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
        fi
    fi
    settings
}

# The two settings podman needs on these machines (../shared/CONTAINERS.md): crun refuses the hybrid cgroup
# layout, so runc; the default rlimits cannot be raised on this VM, so lower ones. A drop-in file of
# containers.conf.d, so that an existing containers.conf is left as it is; plain `podman run` by hand works too.
settings() {
    local dir conf want
    if is_root; then dir=/etc/containers/containers.conf.d; else dir=$HOME/.config/containers/containers.conf.d; fi
    conf=$dir/50-yrdx.conf
    want='# Written by scripts/image.sh (yrdx): what podman needs on these machines; see the README, "Container image".
[containers]
default_ulimits = ["nofile=10000:10000", "nproc=4096:4096"]

[engine]
runtime = "runc"'
    if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
        mkdir -p "$dir"
        printf '%s\n' "$want" > "$conf"
        say "wrote $conf (runtime runc, default_ulimits)"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# base: a Debian bookworm minbase with python3, imported as $BASE_IMAGE and saved in the cache

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -E 's%^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)([a-z]+://[^[:space:]]*/debian)/?([[:space:]].*)?$%\3%p' \
        | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

drop_if_unnamed() {  # drop_if_unnamed ID: remove an image that a newer one of the same name replaced
    if [ -n "$1" ] && [ -z "$(podman image inspect --format '{{join .RepoTags ","}}' "$1" 2>/dev/null)" ]; then
        podman rmi "$1" >/dev/null 2>&1 || true
    fi
}

label() {  # label IMAGE KEY: the value of a label, empty when the image or the label is missing
    podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null | sed 's/^<no value>$//'
}

base() {
    local mirror arch key tarball root pyver glibc old
    mirror=$(debian_mirror)
    arch=$(dpkg --print-architecture)
    key=$(printf '%s\n' "v2" "$SUITE" "$BASE_PACKAGES" "$mirror" "$arch" | sha256sum | cut -c1-16)
    tarball=$CACHE/base-$SUITE-$arch-$key.tar
    if [ "$(label "$BASE_IMAGE" org.yrdx.base-key)" = "$key" ]; then
        say "base $BASE_IMAGE is current (Python $(label "$BASE_IMAGE" org.yrdx.python))"
        return
    fi
    mkdir -p "$CACHE"
    if [ -s "$tarball" ]; then
        say "loading base $BASE_IMAGE from $tarball"
        podman load -q -i "$tarball" >/dev/null
        [ "$(label "$BASE_IMAGE" org.yrdx.base-key)" = "$key" ] || die "$tarball does not hold $BASE_IMAGE ($key)"
        return
    fi
    is_root || die "debootstrap needs root (or load a saved base: podman load -i base.tar)"
    say "debootstrap $SUITE minbase with $BASE_PACKAGES from $mirror (first run only, about a minute)"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 30 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/var/log/apt/* \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
    # No manuals, info pages or translations in a server image (a third of minbase); the copyright files stay.
    find "$root"/usr/share/doc -depth -mindepth 1 ! -name copyright ! -type d -delete
    find "$root"/usr/share/doc -depth -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    # Nothing of the host: debootstrap copies its resolver and host name (podman provides both at run time).
    rm -f "$root"/etc/resolv.conf "$root"/etc/hostname
    old=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    pyver=$(chroot "$root" python3 -c 'import platform; print(platform.python_version())')
    glibc=$(chroot "$root" python3 -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split()[1])')
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$root" -c . \
        | podman import -q \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            --change "LABEL org.yrdx.base-key=$key" \
            --change "LABEL org.yrdx.python=$pyver" \
            --change "LABEL org.yrdx.glibc=$glibc" \
            --change "LABEL org.yrdx.debian-mirror=$mirror" \
            - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    drop_if_unnamed "$old"
    rm -f "$CACHE"/base-*.tar  # an older base (other packages or mirror): this one replaces it
    podman save -q -o "$tarball.tmp" "$BASE_IMAGE"
    mv "$tarball.tmp" "$tarball"
    say "base $BASE_IMAGE: Debian $SUITE, Python $pyver, glibc $glibc; saved to $tarball"
}

# ---------------------------------------------------------------------------------------------------------------
# wheels: every wheel the image installs, downloaded on the host for the base's Python, ABI and platform

wheels() {
    local pyver glibc arch minor platforms=() reqs cons key dir y abi
    pyver=$(label "$BASE_IMAGE" org.yrdx.python)
    glibc=$(label "$BASE_IMAGE" org.yrdx.glibc)
    [ -n "$pyver" ] && [ -n "$glibc" ] || die "$BASE_IMAGE has no org.yrdx.python/glibc labels: run scripts/image.sh base"
    arch=$(uname -m)
    abi=cp$(echo "$pyver" | cut -d. -f1,2 | tr -d .)  # 3.11.2 -> cp311
    # manylinux wheels for this glibc and every older one (pip does not widen a --platform by itself)
    minor=${glibc#2.}
    for ((y = minor; y >= 17; y--)); do platforms+=(--platform "manylinux_2_${y}_${arch}"); done
    platforms+=(--platform "manylinux2014_${arch}")
    if [ "$arch" = x86_64 ]; then
        platforms+=(--platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_5_x86_64
                    --platform manylinux1_x86_64)
    fi
    # What the wheel requires and what builds it; pinned to the versions of .venv (those `make test` ran),
    # where a .venv exists, so that the image runs what the suite tested.
    reqs=$("$PY" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"] + d["build-system"]["requires"]))')
    cons=""
    if [ -x .venv/bin/pip ]; then cons=$(.venv/bin/pip freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9._-]+==' || true); fi
    key=$(printf '%s\n' "v1" "$pyver" "$arch" "${platforms[*]}" "$reqs" "--" "$cons" | sha256sum | cut -c1-16)
    dir=$CACHE/wheelhouse-$key
    if [ ! -e "$dir/.complete" ]; then
        say "downloading wheels for CPython $pyver, glibc $glibc, $arch into $dir"
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        printf '%s\n' "$reqs" > "$dir.tmp/requirements.txt"
        printf '%s\n' "$cons" > "$dir.tmp/constraints.txt"
        "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: \
            --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none \
            "${platforms[@]}" -r "$dir.tmp/requirements.txt" -c "$dir.tmp/constraints.txt" -d "$dir.tmp" \
            || die "pip download failed: a dependency without a binary wheel for CPython $pyver on ${arch}?"
        touch "$dir.tmp/.complete"
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
        # older wheelhouses (other requirements, versions or Python): this one replaces them
        find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -name "wheelhouse-$key" -exec rm -rf {} +
    fi
    # Into the build context (hard links when the cache is on the same file system).
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    cp -l "$dir"/*.whl "$WHEELHOUSE"/ 2>/dev/null || cp "$dir"/*.whl "$WHEELHOUSE"/
    say "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels (CPython $pyver, $arch)"
}

# ---------------------------------------------------------------------------------------------------------------

build() {
    local started old new revision created
    started=$(date +%s)
    mkdir -p "$CACHE"
    tools
    base
    wheels
    revision=$(git rev-parse HEAD 2>/dev/null || true)
    # The commit's time, so that a rebuild of one commit is a cache hit; outside a git checkout, now.
    created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    say "podman build $IMAGE (offline: --pull=never --network none, FROM $BASE_IMAGE)"
    # The labels that vary are also given as --label: buildah 1.28 reuses a cached LABEL step even when the
    # build argument in it changed (a new commit with the same files would keep the old revision).
    local oci=org.opencontainers.image
    podman build --pull=never --network none -f Dockerfile -t "$IMAGE" \
        --build-arg BASE="$BASE_IMAGE" --build-arg WHEELHOUSE="$WHEELHOUSE" \
        --build-arg VERSION="$VERSION" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
        --build-arg SOURCE="${IMAGE_SOURCE:-}" \
        --label "$oci.version=$VERSION" --label "$oci.revision=$revision" --label "$oci.created=$created" \
        --label "$oci.source=${IMAGE_SOURCE:-}" --label "$oci.base.name=$BASE_IMAGE" \
        . >"$CACHE/build.log" 2>&1 \
        || { tail -n 40 "$CACHE/build.log" >&2; die "podman build failed (log: $CACHE/build.log)"; }
    new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    printf '%s %s\n' "$IMAGE" "$new" > build/image/built  # what `test` checks: this build, by id
    # The image this build replaced, if nothing else names it, and untagged images of earlier builds (ours: they
    # carry the base's label) not used for a week: the store does not grow run after run, the cache stays warm.
    [ "$old" = "$new" ] || drop_if_unnamed "$old"
    podman image prune -f --filter label=org.yrdx.base-key --filter until=168h >/dev/null 2>&1 || true
    say "built $IMAGE (${new:0:12}, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')) in $(( $(date +%s) - started )) s"
}

smoke() {
    local ref=$IMAGE name id
    tools
    # The image this checkout built last, by id (the name may have moved to another checkout's build since).
    if read -r name id < build/image/built 2>/dev/null && [ "$name" = "$IMAGE" ] && podman image exists "$id"; then
        ref=$id
    fi
    podman image exists "$ref" || die "no image $IMAGE: run make image"
    exec "$PY" tests/image/smoke.py --image "$ref" --name "$IMAGE"
}

case "${1:-}" in
    build) lock; build ;;
    test) lock; smoke ;;
    tools) tools ;;
    base) lock; tools; base ;;
    wheels) lock; wheels ;;
    *) die "usage: scripts/image.sh build|test|tools|base|wheels" ;;
esac
