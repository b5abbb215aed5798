#!/usr/bin/env python3
"""Where a gateway spends its CPU: summaries of the profiles written by ``bench/relay.py --profile DIR``.

* ``<region>.pyspy.txt``: py-spy ``--format raw`` (collapsed stacks, one ``frame;frame;... count`` a line),
  sampled only during the measured window. py-spy records threads that wait, too: its idle detection let
  through 8-25 % of a gateway's samples in the event loop's epoll and up to 26 % in idle worker threads at 100
  msg/s (blocking and --nonblocking alike). Those samples (`IDLE_LEAVES`) are counted apart and left out of
  every share. The rest still include time a thread spent runnable but waiting for a core: at 100 msg/s
  py-spy put 9.7 % of the JS gateway's samples in `_SelectorSocketTransport.write` where perf's on-CPU samples
  put `sendto` at 2.6 % (a send wakes its peer, which often takes the core). Printed: the share of each part
  of the data path, the inclusive time of the gateway's own functions, and the functions where the time is
  spent (self time).
* ``<region>.prof``: cProfile of the whole process life (start-up and warmup included), printed by pstats.

    .venv/bin/python bench/hotspots.py DIR_OR_FILE [--top N]
"""

from __future__ import annotations

import argparse
import io
import pstats
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# Parts of the data path, by a function somewhere on the stack; the first rule that matches wins.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inbox API: pull + ack (SH)", ("get_inbox (gateway/http/api.py)", "post_inbox_ack (gateway/http/api.py)")),
    ("ingress: POST /v1/messages/batch handler",
     ("post_batch (gateway/http/api.py)", "post_message (gateway/http/api.py)")),
    ("JWT authentication (middleware)", ("authenticate (gateway/http/auth.py)",)),
    ("egress: Egress.handle (SH: messages; JS: receipts)", ("handle (gateway/relay/egress.py)",)),
    ("consumer poll + commit", ("poll (gateway/kafka/transport.py)", "commit (gateway/kafka/transport.py)")),
    ("audit segment flush", ("_flush (gateway/audit/trail.py)",)),
    ("broker probe / jti purge", ("_probe_broker (gateway/runtime.py)",)),
    ("aiokafka background (sender, fetcher, connections)", ("aiokafka/",)),
    ("aiohttp machinery (parsing, writing, connections)", ("aiohttp/",)),
    ("asyncio event loop", ("asyncio/",)),
)

# Leaf frames of a thread that waits for work: the event loop in epoll, a thread pool's worker on its queue.
IDLE_LEAVES = frozenset({"EpollSelector.select (selectors.py)", "_worker (concurrent/futures/thread.py)"})

# Frames on (nearly) every stack of a gateway process: they say nothing about where the time goes.
_ENTRY_POINTS = frozenset({
    "<module> (gateway/cli/__main__.py)", "main (gateway/cli/main.py)", "cmd_serve (gateway/cli/serve.py)",
    "serve (gateway/runtime.py)",
})


def short_file(path: str) -> str:
    """A readable path: relative to the repo, to site-packages, or to the standard library."""
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.*)", path)
    return m.group(1) if m else path


def frame_name(frame: str) -> str:
    """`func (file:line)` -> `func (short file)`: lines of one function are added up."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    return f"{m['func']} ({short_file(m['file'])})"


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def category(frames: list[str]) -> str:
    for label, markers in CATEGORIES:
        if any(marker in frame for frame in frames for marker in markers):
            return label
    return "other"


def summarize_collapsed(path: Path, top: int = 25, out: io.TextIOBase | None = None,
                        detail_min: float = 0.05, detail_top: int = 12) -> None:
    w = out or sys.stdout
    sampled = read_collapsed(path)
    stacks = [(frames, c) for frames, c in sampled if frames[-1] not in IDLE_LEAVES]
    idle = sum(c for _, c in sampled) - sum(c for _, c in stacks)
    total = sum(c for _, c in stacks)
    if not total:
        print(f"{path}: no samples", file=w)
        return
    categories: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    within: dict[str, Counter[str]] = {}  # category -> gateway functions (inclusive), other leaves (self)
    for frames, count in stacks:
        label = category(frames)
        categories[label] += count
        detail = within.setdefault(label, Counter())
        for f in set(frames):
            if "gateway/" in f:
                inclusive[f] += count
                detail[f] += count
        leaf[frames[-1]] += count
        if "gateway/" not in frames[-1]:
            detail[f"[self] {frames[-1]}"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    print(f"== {path.name}: {total:,} samples of work, the shares below (and {idle:,} of threads waiting for "
          "work, left out: epoll, idle pool workers)", file=w)
    print("  by part of the data path (a function on the stack), with its main costs:", file=w)
    for label, n in categories.most_common():
        print(f"    {pct(n)}  {label}", file=w)
        if n < total * detail_min:
            continue
        # the functions that enclose every sample of the part (cli main, the loop, the handler) tell nothing
        parts = [(f, c) for f, c in within[label].most_common() if c < 0.97 * n and f not in _ENTRY_POINTS]
        for name, c in parts[:detail_top]:
            print(f"        {pct(c)}  {name}", file=w)
    print(f"  gateway functions, inclusive (top {top}):", file=w)
    for name, n in [(f, c) for f, c in inclusive.most_common() if f not in _ENTRY_POINTS][:top]:
        print(f"    {pct(n)}  {name}", file=w)
    print(f"  self time, any code (top {top}):", file=w)
    for name, n in leaf.most_common(top):
        print(f"    {pct(n)}  {name}", file=w)


def summarize_pstats(path: Path, top: int = 25, out: io.TextIOBase | None = None) -> None:
    w = out or sys.stdout
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"== {path.name} (cProfile, whole process life)", file=w)
    print(buf.getvalue(), file=w)


def summarize_folder(folder: Path, top: int = 25) -> None:
    files = sorted(folder.glob("*.pyspy.txt")) + sorted(folder.glob("*.prof"))
    if not files:
        print(f"no profiles in {folder}")
    for path in files:
        summarize(path, top)
        print()


def summarize(path: Path, top: int = 25) -> None:
    if path.suffix == ".prof":
        summarize_pstats(path, top)
    else:
        summarize_collapsed(path, top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="a profile folder, a .pyspy.txt or a .prof file")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    if args.target.is_dir():
        summarize_folder(args.target, args.top)
    else:
        summarize(args.target, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
