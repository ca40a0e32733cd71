"""Benchmark of analysis at scale: loading, ``analyze`` and ``report`` on synthetic runs.

For runs of 10^5, 10^6 and 10^7 episodes with five factors (``write_synthetic_run``: written
with numpy through the recorder's line encoder, into a temp dir, never into git), each step
runs in its own process so that its peak RSS (``ru_maxrss``) is its own:

- *floor JSONL*: pyarrow's JSON reader reading the records file into a table, nothing else;
- *load JSONL*: ``load(run)``, every column, typed by the manifest, checks included;
- *compact*: ``arena-recording compact`` (JSONL to Parquet);
- *floor Parquet*: pyarrow reading that Parquet file into a table, nothing else;
- *load Parquet*: ``load(run)`` again, now from the Parquet file;
- *analyze*: ``arena-recording analyze RUN`` (loads the outcome and factor columns);
- *report*: ``arena-recording report RUN``.

Run it and write the results beside this file (``--sizes`` to choose; the 10^7 run needs about
5 GB of disk for its JSONL)::

    .venv/bin/python benchmarks/bench_analysis.py
    .venv/bin/python benchmarks/bench_analysis.py --sizes 100000 1000000 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = (
    "floor_jsonl",
    "load_jsonl",
    "compact",
    "floor_parquet",
    "load_parquet",
    "analyze",
    "report",
)
HERE = Path(__file__).parent


def measure(step: str, run: Path) -> dict[str, float]:
    """Run one step in this process; its wall time and this process's peak RSS."""
    records = run / "episodes.jsonl"
    # each step imports only what it needs, before the clock starts (imports count in RSS only)
    if step == "floor_jsonl":
        import pyarrow.json as pj

        start = time.perf_counter()
        pj.read_json(records, pj.ReadOptions(block_size=1 << 24))
    elif step == "floor_parquet":
        import pyarrow.parquet as pq

        start = time.perf_counter()
        pq.read_table(run / "episodes.parquet")
    elif step in ("load_jsonl", "load_parquet"):
        from arena_recording.analysis.load import load

        start = time.perf_counter()
        rec = load(run)
        assert len(rec.episodes) and not rec.warnings, rec.warnings
    else:
        from arena_recording.cli import main

        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([step, str(run)]) == 0
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gb": _peak_kb() / 1e6}


def _peak_kb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(step: str, run: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", step, str(run)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(sizes: list[int], tmp: Path) -> list[dict]:
    from arena_recording.analysis.synthetic import write_synthetic_run

    rows = []
    for n in sizes:
        run = tmp / f"run{n}"
        start = time.perf_counter()
        write_synthetic_run(run, n)
        generated = time.perf_counter() - start
        row = {"episodes": n, "jsonl_mb": (run / "episodes.jsonl").stat().st_size / 1e6}
        row["generate_s"] = generated
        for step in STEPS:
            row[step] = _child(step, run)
            print(n, step, row[step], flush=True)
        row["parquet_mb"] = (run / "episodes.parquet").stat().st_size / 1e6
        rows.append(row)
        for path in run.iterdir():
            path.unlink()
    return rows


def _cell(result: dict) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    return f"{result['seconds']:.2f} s / {result['peak_gb']:.2f} GB"


def markdown(rows: list[dict], load: tuple[float, float, float]) -> str:
    lines = [
        "# Analysis benchmark",
        "",
        f"`benchmarks/bench_analysis.py` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: the machine was shared, "
        "so times are upper bounds; compare each step with the floor of the same run).",
        "",
        "Each cell: wall time / peak RSS of the process that ran only that step (imports "
        "included in RSS, not in time). Synthetic runs with five factors.",
        "",
        "| episodes | JSONL MB | Parquet MB | " + " | ".join(STEPS) + " |",
        "|" + "---|" * (len(STEPS) + 3),
    ]
    for row in rows:
        cells = [f"{row['episodes']:,}", f"{row['jsonl_mb']:.0f}", f"{row['parquet_mb']:.0f}"]
        lines.append("| " + " | ".join(cells + [_cell(row[s]) for s in STEPS]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--measure", nargs=2, metavar=("STEP", "RUN"), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        rows = bench(args.sizes, Path(tmp))
    text = markdown(rows, os.getloadavg())
    print(text)
    if not args.no_write:
        (HERE / "bench_analysis.md").write_text(text)
        (HERE / "bench_analysis.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
