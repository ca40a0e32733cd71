"""The ``arena-recording`` command.

``merge`` builds the sweep tables of a Hydra multirun (see ``arena_recording.analysis.sweeps``);
the recorder callback does it when a multirun ends, but Hydra skips that when a job failed::

    arena-recording merge multirun/2026-01-01/12-00-00
    arena-recording merge multirun/2026-01-01/12-00-00 --out tables/ --format parquet
    python -m arena_recording.cli merge multirun/2026-01-01/12-00-00

``compact`` rewrites the JSONL records of a run or sweep (one that crashed before its finish
compacted them) as Parquet files beside them (``arena_recording.analysis.compact``)::

    arena-recording compact outputs/2026-01-01/12-00-00

``analyze`` ranks the factors of a run, a sweep or a records file by their effect on an outcome
(``arena_recording.analysis.sensitivity``), ``report`` writes its HTML report
(``arena_recording.analysis.report``), and ``catalog`` lists the variations and recorder terms
an app exposes with their override paths (``arena_recording.integrations.hydra_catalog``)::

    arena-recording analyze outputs/2026-01-01/12-00-00 --outcome success
    arena-recording analyze multirun/2026-01-01/12-00-00 --json
    arena-recording report outputs/2026-01-01/12-00-00
    arena-recording catalog arena_recording.evaluate:evaluate

``rerun`` prints the command that runs selected episodes of a recording again, each with the
factor values it ran with, under the app and overrides that recorded them
(``arena_recording.core.replay``); ``--run`` runs it::

    arena-recording rerun outputs/2026-01-01/12-00-00 --where 'success == false'
    arena-recording rerun outputs/2026-01-01/12-00-00 --episodes 3 17 --run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

from arena_recording.analysis.sweeps import merge_sweep


def _merge(args: argparse.Namespace) -> int:
    table = merge_sweep(args.sweep_dir, out_dir=args.out, formats=args.format)
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


def _analyze(args: argparse.Namespace) -> int:
    from arena_recording.analysis.load import load
    from arena_recording.analysis.pools import pools
    from arena_recording.analysis.sensitivity import sensitivity

    rec = load(args.path, columns=[args.outcome, "variations.*"])
    for warning in rec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    groups = pools(rec)
    results = []
    for pool in groups:
        part = pool.recording(rec)
        result = sensitivity(part, args.outcome, num_resamples=args.resamples, seed=args.seed)
        results.append((pool, result))
    if args.json:
        found = {"path": str(rec.path), "kind": rec.kind, "warnings": rec.warnings}
        if len(results) == 1:
            found |= results[0][1].to_dict()
        else:
            found["pools"] = [
                {"jobs": [j.num for j in pool.jobs], "overrides": pool.fixed} | result.to_dict()
                for pool, result in results
            ]
        print(json.dumps(found, indent=2, default=str))
        return 0
    for i, (pool, result) in enumerate(results):
        if len(results) > 1:
            print(("\n" if i else "") + f"== {pool.describe(rec)}")
        print(result.to_text())
        print()
        print(result.summary())
        for note in result.notes:
            print(f"note: {note}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from arena_recording.analysis.compact import compact_dir

    written = compact_dir(args.path)
    if not written:
        print(f"no records to compact under {args.path}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from arena_recording.analysis.report import write_report

    print(write_report(args.path, out=args.out, outcome=args.outcome))
    return 0


def _rerun(args: argparse.Namespace) -> int:
    from arena_recording.integrations.hydra_rerun import rerun_commands

    commands = rerun_commands(args.path, args.where, args.episodes)
    status = 0
    for command in commands:
        print(command, flush=True)
        if args.execute:
            status = status or subprocess.run(command.argv, cwd=command.cwd).returncode
    return status


def _catalog(args: argparse.Namespace) -> int:
    from arena_recording.integrations.hydra_catalog import catalog

    found = catalog(args.app, config_dir=args.config_dir, overrides=args.overrides)
    print(json.dumps(found.to_dict(), indent=2) if args.json else found.to_text())
    return 0


def _add_outcome(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a run dir, a sweep dir or a records file (episodes.jsonl)")
    parser.add_argument(
        "--outcome", default="success", help="success (default) or any numeric column"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``arena-recording``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="arena-recording", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser(
        "merge", help="one table of every episode recorded by the jobs of a sweep dir"
    )
    merge.add_argument("sweep_dir", help="the sweep dir (hydra.sweep.dir) of a multirun")
    merge.add_argument("--out", default=None, help="where to write the tables (default: sweep dir)")
    merge.add_argument(
        "--format",
        nargs="+",
        choices=("parquet", "csv", "jsonl"),
        default=["parquet", "csv"],
        help="the Parquet dataset sweep_episodes/ and the CSV table (default), or JSONL",
    )
    merge.set_defaults(run=_merge)

    analyze = commands.add_parser("analyze", help="rank the factors by their effect on an outcome")
    _add_outcome(analyze)
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument("--resamples", type=int, default=100, help="bootstrap resamples")
    analyze.add_argument("--seed", type=int, default=0, help="seed of the dummy and bootstrap")
    analyze.set_defaults(run=_analyze)

    report = commands.add_parser("report", help="write the HTML report of a run or sweep")
    _add_outcome(report)
    report.add_argument("--out", default=None, help="the HTML file (default: PATH/report.html)")
    report.set_defaults(run=_report)

    compact = commands.add_parser(
        "compact", help="rewrite the records of a run or sweep as Parquet, for fast loading"
    )
    compact.add_argument("path", help="a run dir, a sweep dir or a records file")
    compact.set_defaults(run=_compact)

    rerun = commands.add_parser(
        "rerun", help="the command that runs selected episodes again with their factor values"
    )
    rerun.add_argument("path", help="a run dir, a sweep dir or a records file (episodes.jsonl)")
    rerun.add_argument("--where", default=None, help="a pandas query: 'success == false'")
    rerun.add_argument("--episodes", nargs="+", type=int, default=None, help="episode ids")
    rerun.add_argument("--run", dest="execute", action="store_true", help="run the command too")
    rerun.set_defaults(run=_rerun)

    catalog = commands.add_parser(
        "catalog", help="the variations and recorder terms an app exposes, with override paths"
    )
    catalog.add_argument("app", help="module:config_name, or a config name with --config-dir")
    catalog.add_argument("overrides", nargs="*", help="Hydra overrides to apply first")
    catalog.add_argument("--config-dir", default=None, help="the config dir of a YAML app")
    catalog.add_argument("--json", action="store_true", help="print JSON instead of text")
    catalog.set_defaults(run=_catalog)

    # overrides may come after options (catalog APP --json a.b=1): argparse leaves them over
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "catalog" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    try:
        return args.run(args)
    except ImportError as err:
        print(
            f"arena-recording {args.command}: {err} (pip install 'arena-recording[analysis]')",
            file=sys.stderr,
        )
    except (OSError, ValueError) as err:
        print(f"arena-recording {args.command}: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
