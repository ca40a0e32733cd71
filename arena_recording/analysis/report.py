"""HTML reports: one self-contained page per run or sweep, with its plots embedded as PNG.

The page holds the success rate with its Wilson interval, the data-quality warnings, the
factor ranking (``arena_recording.analysis.sensitivity``) with its plain-language summary, the
success rate against each factor in bins over the manifest's bounds, the factor schema, and,
for a sweep, a comparison of its jobs. It has no external resources: it can be mailed,
archived or opened from a CI artifact as it is.

With ``recorder.report=true`` the recorder callback writes ``report.html`` into each job dir
when the job ends, and into the sweep dir when a multirun ends. By hand::

    arena-recording report outputs/2026-01-01/12-00-00

or, from Python::

    path = write_report("multirun/2026-01-01/12-00-00")   # -> .../report.html
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from arena_recording.analysis.factors import Factor
from arena_recording.analysis.load import Recording, load
from arena_recording.analysis.outcomes import CONF_LEVEL, binned, ended, job_table, success_rate
from arena_recording.analysis.pools import pools
from arena_recording.analysis.sensitivity import (
    DUMMY,
    METHOD_NAMES,
    PAWN_SLICES,
    Sensitivity,
    sensitivity,
)
from arena_recording.core.sinks import write_atomic

REPORT_NAME = "report.html"
MAX_JOB_SERIES = 4  # more jobs than this: factor plots show the pooled episodes only
_JOB_TABLE_COLUMNS = ("job", "status", "episodes", "successes", "success_rate", "ci_low", "ci_high")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f3f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.headline { font-size: 2.2em; font-weight: 600; } .muted { color: #666; }
.warn { background: #fff4e0; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.ok { background: #e8f6ea; border-left: 4px solid #3a3; padding: 0.5em 1em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr)); gap: 1em; }
img { max-width: 100%; } pre { white-space: pre-wrap; }
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        text = "" if math.isnan(value) else f"{value:.4g}"
        return f'<td class="num">{text}</td>'
    return f"<td>{_e('' if value is None else value)}</td>"


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    head = "" if header is None else "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _series(rec: Recording) -> list[tuple[str, pd.DataFrame]]:
    """What the factor plots draw: the pooled episodes, or one series per job of a sweep."""
    if rec.kind != "sweep" or "job_num" not in rec.episodes:
        return [("all episodes", rec.episodes)]
    jobs = job_table(rec)
    if not 1 < len(jobs) <= MAX_JOB_SERIES:
        return [("all episodes", rec.episodes)]
    labels = _job_labels(rec, jobs)
    return [
        (label, rec.episodes[rec.episodes["job_num"] == job.num])
        for job, label in zip(rec.jobs, labels, strict=True)
        if job.manifests
    ]


def _job_labels(rec: Recording, jobs: pd.DataFrame) -> list[str]:
    swept = [c for c in jobs.columns if c not in _JOB_TABLE_COLUMNS]
    return [
        " ".join(f"{k.removeprefix('variations.')}={row[k]}" for k in swept) or str(row["job"])
        for _, row in jobs.iterrows()
    ]


def _factor_plot(factor: Factor, series: list[tuple[str, pd.DataFrame]], outcome: str) -> str:
    fig = Figure(figsize=(5.2, 3.3))
    ax = fig.add_subplot()
    counts = ax.twinx()
    share = 1 / len(series)
    for i, (label, episodes) in enumerate(series):
        table = binned(episodes, factor, outcome)
        width = (table["stop"] - table["start"]) * share
        colour = _COLOURS[i % len(_COLOURS)]
        counts.bar(
            table["start"] + i * width,
            table["n"],
            width=width,
            align="edge",
            color=colour,
            alpha=0.15,
        )
        # categories: each series' points sit over its own bar
        x = table["start"] + (i + 0.5) * width if factor.categorical else table["centre"]
        error = [table["value"] - table["low"], table["high"] - table["value"]]
        ax.errorbar(x, table["value"], yerr=error, fmt="o-", capsize=3, color=colour, label=label)
    if factor.categorical:
        ax.set_xticks(range(len(factor.choices)), [str(c) for c in factor.choices])
    elif factor.distribution == "log_uniform":
        ax.set_xscale("log")
    ax.set_zorder(counts.get_zorder() + 1)  # points above the count bars
    ax.patch.set_visible(False)
    ax.set_xlabel(factor.column.removeprefix("variations."))
    ax.set_ylabel(f"{outcome} rate" if outcome == "success" else f"mean {outcome}")
    if outcome == "success":
        ax.set_ylim(-0.03, 1.03)
    counts.set_ylabel("episodes per bin", color="#888")
    if len(series) > 1:
        ax.legend(fontsize="small")
    return _png(fig)


def _ranking_plot(result: Sensitivity) -> str:
    names = [c.removeprefix("variations.") for c in result.table.index][::-1]
    count = len(result.methods)
    fig = Figure(figsize=(7.5, 0.8 + 0.3 * len(names) * count))
    ax = fig.add_subplot()
    height = 0.8 / count
    for i, method in enumerate(result.methods):
        colour = _COLOURS[i % len(_COLOURS)]
        y = [k + ((count - 1) / 2 - i) * height for k in range(len(names))]  # first on top
        ax.barh(
            y,
            result.table[method][::-1],
            height=height,
            xerr=result.table[f"{method}_conf"][::-1],
            capsize=2,
            color=colour,
            alpha=0.8,
            label=METHOD_NAMES[method],
        )
        ax.axvline(result.dummy[method], color=colour, linestyle="--", linewidth=1)
    ax.plot([], [], color="#555", linestyle="--", label=f"{DUMMY} noise level")
    ax.set_yticks(range(len(names)), names)
    ax.axvline(0, color="#333", linewidth=0.8)
    ax.set_xlabel(f"sensitivity index (error bars: {result.conf_level:.0%} interval)")
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)


def _jobs_plot(jobs: pd.DataFrame, labels: list[str]) -> str:
    fig = Figure(figsize=(max(5.0, 1.1 * len(jobs)), 3.3))
    ax = fig.add_subplot()
    rates = jobs["success_rate"]
    error = [rates - jobs["ci_low"], jobs["ci_high"] - rates]
    ax.bar(range(len(jobs)), rates, yerr=error, capsize=4, color="#1f77b4", alpha=0.8)
    ax.set_xticks(range(len(jobs)), labels, rotation=20 if len(jobs) > 4 else 0, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"success rate ({CONF_LEVEL:.0%} Wilson interval)")
    return _png(fig)


def _header(rec: Recording) -> str:
    manifests = rec.manifests
    versions = manifests[0].versions if manifests else {}
    statuses = sorted({m.status for m in manifests})
    rows = [
        ("recording", str(rec.path)),
        ("kind", rec.kind + (f" of {len(rec.jobs)} jobs" if rec.kind == "sweep" else "")),
        ("episodes", len(rec.episodes)),
        ("status", ", ".join(statuses) or "unknown"),
        ("started", min((m.started_at or "" for m in manifests), default="")),
        ("finished", max((m.finished_at or "" for m in manifests), default="")),
        ("seeds", ", ".join(sorted({str(m.seed) for m in manifests}))),
        ("envs", ", ".join(sorted({str(m.num_envs) for m in manifests}))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    if rec.kind == "run" and manifests:
        rows.append(("overrides", " ".join(manifests[0].job.overrides)))
    return _table(None, rows)


def _quality(rec: Recording) -> str:
    if not rec.warnings:
        return (
            '<p class="ok">No problems found: every writer\'s records are complete and '
            "unique (seq), every job completed, every value lies within its declared bounds.</p>"
        )
    items = "".join(f"<li>{_e(w)}</li>" for w in rec.warnings)
    return f'<div class="warn"><ul>{items}</ul></div>'


def _outcome_section(rec: Recording, outcome: str) -> str:
    if outcome != "success":
        values = ended(rec.episodes).get(outcome)
        if values is None or not pd.api.types.is_numeric_dtype(values):
            return f"<p>No numeric column {_e(outcome)}.</p>"
        return f'<p class="headline">mean {_e(outcome)} {values.mean():.4g}</p>'
    rate = success_rate(rec.episodes)
    if not rate.episodes:
        return "<p>No episode recorded a success value.</p>"
    aborted = len(rec.episodes) - len(ended(rec.episodes))
    extra = f"; {aborted} aborted episode(s) not counted" if aborted else ""
    return (
        f'<p><span class="headline">{_percent(rate.rate)}</span> success '
        f"({rate.successes} of {rate.episodes} episodes; {CONF_LEVEL:.0%} Wilson interval "
        f"{_percent(rate.low)} to {_percent(rate.high)}{extra})</p>"
    )


def _jobs_section(rec: Recording) -> str:
    jobs = job_table(rec)
    labels = _job_labels(rec, jobs)
    rows = [
        [*(row[c] for c in jobs.columns if c not in ("ci_low", "ci_high", "success_rate"))]
        + [
            _percent(row["success_rate"]),
            f"{_percent(row['ci_low'])} to {_percent(row['ci_high'])}",
        ]
        for _, row in jobs.iterrows()
    ]
    header = [c for c in jobs.columns if c not in ("ci_low", "ci_high", "success_rate")]
    table = _table([*header, "success rate", f"{CONF_LEVEL:.0%} interval"], rows)
    plot = _jobs_plot(jobs, labels) if jobs["episodes"].sum() else ""
    return "<h2>Jobs</h2>" + table + plot


def _ranking_section(rec: Recording, outcome: str, options: dict[str, Any]) -> str:
    groups = pools(rec)
    if len(groups) == 1:
        return _ranking(rec, outcome, options, "")
    head = (
        "<h2>Factor rankings</h2><p>The jobs differ in more than their variations: each pool "
        "of jobs that differ only in variations is ranked apart.</p>"
    )
    return head + "".join(
        _ranking(pool.recording(rec), outcome, options, pool.describe(rec)) for pool in groups
    )


def _ranking(rec: Recording, outcome: str, options: dict[str, Any], pool: str) -> str:
    title = f"Factor ranking: effect on {_e(outcome)}" + (f" ({_e(pool)})" if pool else "")
    try:
        result = sensitivity(rec, outcome, **options)
    except (ValueError, ImportError) as err:
        return f"<h2>{title}</h2><p>No ranking: {_e(err)}</p>"
    header, *rows = result.rows()
    summary = "".join(f"<p>{_e(line)}</p>" for line in result.summary().splitlines())
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.notes)
    return (
        f"<h2>{title}</h2>{summary}"
        + _table(header, rows)
        + _ranking_plot(result)
        + (f"<p class='muted'>Notes:</p><ul class='muted'>{notes}</ul>" if notes else "")
        + f"<p class='muted'>SALib {_e(result.salib_version)}: PAWN (median Kolmogorov-Smirnov "
        f"distance over {PAWN_SLICES} conditioning slices), RBD-FAST and delta first-order "
        "indices from "
        "the recorded episodes. Intervals are normal bootstrap intervals, shown as "
        "index ± half-width.</p>"
    )


def _factors_section(rec: Recording, outcome: str) -> str:
    plotted = [f for f in rec.factors if f.scope != "interval" and f.excluded is None]
    plots = ""
    if outcome in rec.episodes and plotted:
        series = _series(rec)
        plots = (
            f"<h2>{_e(outcome)} against each factor</h2><p class='muted'>Bins span the bounds "
            "the manifest declares; error bars are 95% intervals; shaded bars count the "
            "episodes per bin.</p><div class='grid'>"
            + "".join(_factor_plot(f, series, outcome) for f in plotted)
            + "</div>"
        )
    rows = [
        [
            f.column,
            f.kind,
            f.distribution,
            ", ".join(map(str, f.choices))
            if f.categorical
            else f"[{f.low}, {f.high}]" + (f" ({f.bounds})" if f.bounds else ""),
            f.scope,
            f.note or (f"not analysed: it {f.excluded}" if f.excluded else ""),
        ]
        for f in rec.factors
    ]
    schema = _table(["column", "kind", "distribution", "bounds or choices", "scope", "note"], rows)
    return plots + "<h2>Factors (from the manifest)</h2>" + schema


def render_report(rec: Recording, outcome: str = "success", **options: Any) -> str:
    """The report page of a loaded recording; ``options`` go to ``sensitivity``."""
    title = f"Evaluation report: {rec.path.name}"
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    parts = [
        f"<h1>{_e(title)}</h1><p class='muted'>generated {generated} by arena-recording</p>",
        _header(rec),
        "<h2>Outcome</h2>",
        _outcome_section(rec, outcome),
        "<h2>Data quality</h2>",
        _quality(rec),
    ]
    if rec.kind == "sweep":
        parts.append(_jobs_section(rec))
    parts.append(_ranking_section(rec, outcome, options))
    parts.append(_factors_section(rec, outcome))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def write_report(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    outcome: str = "success",
    **options: Any,
) -> Path:
    """Load ``path`` (run dir, sweep dir or records file) and write its report.

    The default ``out`` is ``report.html`` in the run or sweep dir, or ``<file>.report.html``
    beside a records file. Written atomically, so a reader never sees half a page.
    """
    rec = load(path, columns=[outcome, "variations.*"])
    if out is None:
        out = rec.path.with_suffix(".report.html") if rec.kind == "file" else rec.path / REPORT_NAME
    out = Path(out)
    page = render_report(rec, outcome, **options)
    write_atomic(out, lambda f: f.write(page))  # ranks of one job may write it at once
    return out
