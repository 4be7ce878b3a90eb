"""Where the time went, from py-spy's collapsed stacks (``py-spy record --format raw``).

    python bench/profile_top.py /tmp/prof/payorch.folded [--top 40] [--filter payorch]

Prints each function's inclusive share of the samples (the time spent in it and in what it called)
and its own share, largest first.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folded", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--filter", default="", help="only functions whose name or file contains this")
    parser.add_argument("--within", default="", help="only stacks through a frame containing this")
    parser.add_argument("--own", action="store_true", help="sort by own time")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():  # a line cut short when the profiled process stopped
            continue
        count = int(count_text)
        total += count
        frames = [short(f) for f in stack.split(";") if f]
        if args.within and not any(args.within in frame for frame in frames):
            continue
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    print(f"{total} samples")
    print(f"{'incl %':>7} {'own %':>7}  function")
    for frame, count in (own if args.own else inclusive).most_common():
        count = inclusive[frame]
        if args.filter and args.filter not in frame:
            continue
        print(f"{100 * count / total:7.1f} {100 * own[frame] / total:7.1f}  {frame}")
        args.top -= 1
        if args.top <= 0:
            break


if __name__ == "__main__":
    main()
