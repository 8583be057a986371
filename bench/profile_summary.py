"""Summarise py-spy ``--format raw`` profiles (collapsed stacks): where the samples went.

    .venv/bin/python -m bench.profile_summary PROFILE.txt [--top 30] [--focus FUNCTION]

Prints the functions with the most samples on the stack (inclusive) and at the top (self), as a
share of all samples. ``--focus`` keeps only stacks through that function (a substring of it).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")


def frames(stack: str) -> list[str]:
    out = []
    for frame in stack.split(";"):
        # "function (path/to/file.py:123)" -> "function (file.py)"; process/thread frames as they are
        m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
        if m:
            out.append(f"{m.group(1)} ({Path(m.group(2)).name})")
        else:
            out.append(frame)
    return out


def summarise(path: Path, top: int = 30, focus: str | None = None) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stack, count = frames(m.group(1)), int(m.group(2))
        if focus and not any(focus in f for f in stack):
            continue
        total += count
        for f in set(stack):
            inclusive[f] += count
        leaf[stack[-1]] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path.name}: {total} samples{f' through {focus!r}' if focus else ''}", "", "inclusive:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--focus")
    args = parser.parse_args()
    for p in args.profiles:
        print(summarise(p, args.top, args.focus))
        print()
