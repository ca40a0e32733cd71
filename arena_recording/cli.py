"""The ``arena-recording`` command.

``merge`` builds the sweep tables of a Hydra multirun (see ``arena_recording.sweeps``); the
recorder callback does it when a multirun ends, but Hydra skips that when a job failed::

    arena-recording merge multirun/2026-01-01/12-00-00
    arena-recording merge multirun/2026-01-01/12-00-00 --out tables/ --format csv
    python -m arena_recording.cli merge multirun/2026-01-01/12-00-00
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from arena_recording.sweeps import merge_sweep


def _merge(args: argparse.Namespace) -> int:
    formats = ("csv", "jsonl") if args.format == "both" else (args.format,)
    table = merge_sweep(args.sweep_dir, out_dir=args.out, formats=formats)
    if not any(job.manifests for job in table.jobs):
        print(f"no recordings under {table.sweep_dir}", file=sys.stderr)
        return 1
    statuses = Counter(job.status for job in table.jobs)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    print(f"{len(table.jobs)} jobs ({summary}), {table.episodes} episodes")
    if table.torn_lines:
        print(f"skipped {table.torn_lines} torn lines", file=sys.stderr)
    for path in table.paths:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``arena-recording``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="arena-recording", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser(
        "merge", help="one table of every episode recorded by the jobs of a sweep dir"
    )
    merge.add_argument("sweep_dir", help="the sweep dir (hydra.sweep.dir) of a multirun")
    merge.add_argument("--out", default=None, help="where to write the tables (default: sweep dir)")
    merge.add_argument("--format", choices=("csv", "jsonl", "both"), default="both")
    merge.set_defaults(run=_merge)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
