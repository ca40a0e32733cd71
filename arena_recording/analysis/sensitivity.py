"""Factor sensitivity: rank a recording's factors by their effect on an outcome.

``sensitivity`` uses SALib's given-data methods on the recorded episodes: PAWN, RBD-FAST and
delta's first-order index, with the factor bounds the manifest declares. Seeded random *dummy*
factors go through the same estimators: they show how large an index gets from noise alone at
this number of episodes, which is what separates "no effect" from "small effect".

Example::

    result = sensitivity(load("outputs/2026-01-01/12-00-00"), outcome="success")
    print(result.to_text())
    print(result.summary())
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from arena_recording.analysis.factors import Factor
from arena_recording.analysis.load import Recording
from arena_recording.analysis.outcomes import CONF_LEVEL, Rate, codes, ended, success_rate, z_score
from arena_recording.analysis.pools import pools

METHODS = ("pawn", "rbd_fast", "delta")
METHOD_NAMES = {"pawn": "PAWN", "rbd_fast": "RBD-FAST S1", "delta": "delta S1"}
DUMMY = "(dummy)"
MIN_EPISODES = 30
PAWN_SLICES = 10  # PAWN's conditioning intervals per factor (SALib's default)
STABILITY_RESAMPLES = 10  # the second subset only ranks: its intervals are not reported


@contextlib.contextmanager
def _salib(seed: int, notes: list[str]) -> Iterator[None]:
    """Run SALib code reproducibly and quietly, whatever its version.

    SALib draws from numpy's global generator, and its ``seed`` arguments skip ``0`` (``if
    seed:``) in some estimators and make a ``Generator`` in others: the global generator is
    seeded here and restored afterwards. SALib 1.6's delta also resets the warning filters of
    the whole process: warnings are captured here instead, and become notes.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        np.random.set_state(state)
        notes.extend(f"SALib: {w.message}" for w in caught)


def _bootstrap(
    index: Callable[[np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    num_resamples: int,
    conf_level: float,
    seed: int,
) -> np.ndarray:
    """Half-width of a normal bootstrap interval (SALib's own convention for ``*_conf``)."""
    rng = np.random.default_rng(seed)
    n = len(Y)
    draws = [index(X[rows], Y[rows]) for rows in rng.integers(0, n, (num_resamples, n))]
    return z_score(conf_level) * np.nanstd(np.asarray(draws), axis=0, ddof=1)


@dataclass(frozen=True)
class _Design:
    problem: dict[str, Any]
    X: np.ndarray
    Y: np.ndarray
    num_resamples: int
    conf_level: float
    seed: int


def pawn_median(X: np.ndarray, Y: np.ndarray, slices: int = PAWN_SLICES) -> np.ndarray:
    """PAWN's index as SALib defines it, vectorized: per factor, the median over ``slices``
    quantile slices ``[q_s, q_s+1)`` of the Kolmogorov-Smirnov distance between the outcome's
    distribution within the slice and over all episodes (empty slices are skipped)."""
    values, inverse = np.unique(Y, return_inverse=True)
    overall = np.cumsum(np.bincount(inverse, minlength=len(values))) / len(Y)
    edges = np.nanquantile(X, np.linspace(0, 1, slices + 1), axis=0)
    out = np.full(X.shape[1], np.nan)
    for d in range(X.shape[1]):
        x = X[:, d]
        slice_of = np.searchsorted(edges[:, d], x, side="right") - 1
        inside = (slice_of >= 0) & (slice_of < slices) & (x < edges[-1, d])
        counts = np.bincount(
            slice_of[inside] * len(values) + inverse[inside], minlength=slices * len(values)
        ).reshape(slices, len(values))
        sizes = counts.sum(axis=1)
        filled = sizes > 0
        within = np.cumsum(counts[filled], axis=1) / sizes[filled, None]
        if filled.any():
            out[d] = np.median(np.abs(within - overall).max(axis=1))
    return out


def _pawn(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """PAWN's median KS distance over the slices; SALib gives no interval: bootstrap it."""
    conf = _bootstrap(
        pawn_median, design.X, design.Y, design.num_resamples, design.conf_level, design.seed
    )
    return pawn_median(design.X, design.Y), conf


def _rbd_fast(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from SALib.analyze import rbd_fast

    with _salib(design.seed, notes):
        result = rbd_fast.analyze(
            design.problem,
            design.X,
            design.Y,
            M=10,
            num_resamples=design.num_resamples,
            conf_level=design.conf_level,
            seed=design.seed,
        )
    return (
        np.asarray(result["S1"], dtype=np.float64),
        np.asarray(result["S1_conf"], dtype=np.float64),
    )


def _delta(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """delta's first-order index only: its delta index needs a density of the outcome, which
    a success flag does not have (and the key it is returned under changed in SALib 1.6)."""
    from SALib.analyze import delta

    with _salib(design.seed, notes):
        result = delta.analyze(
            design.problem,
            design.X,
            design.Y,
            num_resamples=design.num_resamples,
            conf_level=design.conf_level,
            method="sobol",
            seed=design.seed,
        )
    return (
        np.asarray(result["S1"], dtype=np.float64),
        np.asarray(result["S1_conf"], dtype=np.float64),
    )


_ESTIMATORS: dict[str, Callable[[_Design, list[str]], tuple[np.ndarray, np.ndarray]]] = {
    "pawn": _pawn,
    "rbd_fast": _rbd_fast,
    "delta": _delta,
}


def _salib_version() -> str:
    try:
        return metadata.version("SALib")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "sensitivity analysis needs SALib: pip install 'arena-recording[analysis]'"
        ) from None


@dataclass
class Sensitivity:
    """Factor ranking for one outcome.

    ``table`` has a row per factor, best first: ``rank``, per method its index and the
    half-width of its confidence interval (``pawn``, ``pawn_conf``, ``rbd_fast``...), and
    ``effect``: ``clear`` (for every method, the factor's interval lies wholly above the
    dummies' noise level), ``uncertain`` (for some methods) or ``none detected``. ``dummy``
    holds the noise level per method: the largest upper confidence bound of the dummy factors.
    ``episodes`` and ``rate`` count every usable episode; ``subset`` says when the indices
    come from a random subset of them.
    """

    outcome: str
    episodes: int
    methods: tuple[str, ...]
    table: pd.DataFrame
    dummy: dict[str, float]
    conf_level: float
    num_resamples: int
    salib_version: str
    notes: list[str]
    rate: Rate | None = None
    subset: Subset | None = None

    def _names(self, effect: str) -> list[str]:
        return [_short(c) for c in self.table.index[self.table["effect"] == effect]]

    def summary(self) -> str:
        """The ranking in plain words, with what it rests on."""
        if self.rate is None:
            lines = [f"{self.outcome} over {self.episodes} episodes."]
        else:
            lines = [f"Success rate {self.rate}, over every ended episode."]
        clear, uncertain, none = map(self._names, ("clear", "uncertain", "none detected"))
        if clear:
            strongest = self.table.index[0]
            figures = ", ".join(
                f"{METHOD_NAMES[m]} {self.table.at[strongest, m]:.2f}" for m in self.methods
            )
            if len(clear) > 1:
                figures = f"strongest first; {_short(strongest)}: {figures}"
            lines.append(f"Clear effect on {self.outcome}: {_join(clear)} ({figures}).")
        if uncertain:
            lines.append(
                f"Uncertain: {_join(uncertain)} (above the noise level for some methods only; "
                "more episodes would settle it)."
            )
        if none:
            lines.append(
                f"No effect detected: {_join(none)} (not above the upper confidence bound of "
                "random dummy factors, the noise level at this number of episodes)."
            )
        firsts = {m: self.table[m].idxmax() for m in self.methods if self.table[m].notna().any()}
        if len(set(firsts.values())) > 1:
            lines.append(
                "The methods disagree on the strongest factor: "
                + ", ".join(f"{METHOD_NAMES[m]} says {_short(c)}" for m, c in firsts.items())
                + "."
            )
        if self.subset is not None:
            lines.append(self.subset.describe(list(self.table.index)))
        lines.append(
            f"Ranked by the mean of the {len(self.methods)} methods' ranks; "
            f"{self.conf_level:.0%} intervals from {self.num_resamples} bootstrap resamples. "
            "PAWN compares whole outcome distributions; the S1 indices count only the variance "
            "a factor explains alone, so an effect that acts through interactions shows in "
            "PAWN more than in S1."
        )
        return "\n".join(lines)

    def rows(self) -> list[list[str]]:
        """The ranking as text cells: a header, a row per factor, the dummy's noise level."""
        rows = [["rank", "factor", *(METHOD_NAMES[m] for m in self.methods), "effect"]]
        for column, row in self.table.iterrows():
            cells = [
                f"{row[m]:.3f} ± {row[f'{m}_conf']:.3f}" if np.isfinite(row[m]) else "n/a"
                for m in self.methods
            ]
            rows.append([str(int(row["rank"])), _short(column), *cells, row["effect"]])
        noise = f"noise level (upper {self.conf_level:.0%} bound)"
        rows.append(["", DUMMY, *(f"{self.dummy[m]:.3f}" for m in self.methods), noise])
        return rows

    def to_text(self) -> str:
        """The ranking as an aligned text table."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ranking, the dummy's indices, notes and the summary."""
        factors = [
            {
                "factor": column,
                "rank": int(row["rank"]),
                "effect": row["effect"],
                **{m: _number(row[m]) for m in self.methods},
                **{f"{m}_conf": _number(row[f"{m}_conf"]) for m in self.methods},
            }
            for column, row in self.table.iterrows()
        ]
        return {
            "outcome": self.outcome,
            "episodes": self.episodes,
            "methods": list(self.methods),
            "conf_level": self.conf_level,
            "num_resamples": self.num_resamples,
            "salib_version": self.salib_version,
            "success_rate": None
            if self.rate is None
            else {
                "rate": self.rate.rate,
                "successes": self.rate.successes,
                "episodes": self.rate.episodes,
                "ci_low": self.rate.low,
                "ci_high": self.rate.high,
            },
            "factors": factors,
            "dummy": {m: _number(v) for m, v in self.dummy.items()},
            "subset": None
            if self.subset is None
            else {
                "size": self.subset.size,
                "of": self.subset.total,
                "seed": self.subset.seed,
                "success_rate": None if self.subset.rate is None else self.subset.rate.rate,
                "second_seed": self.subset.seed + 1,
                "second_order": list(self.subset.second_order),
                "kendall_tau": self.subset.tau,
            },
            "notes": self.notes,
            "summary": self.summary(),
        }


def _short(column: str) -> str:
    return column.removeprefix("variations.")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _number(value: Any) -> float | None:
    return float(value) if np.isfinite(value) else None


def _inputs(
    data: pd.DataFrame, factors: list[Factor], rng: np.random.Generator
) -> tuple[np.ndarray, list[list[float]]]:
    """The input matrix and its bounds. Categories enter as their codes spread uniformly over
    ``[code, code + 1)``, so that slicing and sorting estimators see ordered bins."""
    columns, bounds = [], []
    for factor in factors:
        values = data[factor.column]
        if factor.categorical:
            category = codes(values)
            columns.append(category + rng.uniform(size=len(category)))
            bounds.append([0.0, float(len(factor.choices))])
        else:
            columns.append(values.to_numpy(dtype=np.float64))
            bounds.append([factor.low, factor.high])
    return np.column_stack(columns), bounds


def _outcome(data: pd.DataFrame, outcome: str) -> pd.Series:
    if outcome not in data:
        numeric = [c for c in data if pd.api.types.is_numeric_dtype(data[c])]
        raise ValueError(f"no column {outcome!r}; numeric columns: {numeric}")
    values = data[outcome]
    if values.dtype == "boolean" or values.dtype == bool:
        return values.astype("Float64").astype(np.float64)
    if not pd.api.types.is_numeric_dtype(values):
        raise ValueError(f"outcome {outcome!r} is not numeric ({values.dtype})")
    return values.astype(np.float64)


@dataclass(frozen=True)
class Subset:
    """The seeded random subset the estimators ran on when the episodes were too many, and the
    ranking a second subset (seed + 1) gives: how far the order rests on the draw."""

    size: int
    total: int
    seed: int
    rate: Rate | None
    second_order: tuple[str, ...]
    tau: float

    def describe(self, order: Sequence[str]) -> str:
        same = tuple(order) == self.second_order
        rate = "" if self.rate is None else f"; the subset's success rate {self.rate}"
        agreement = (
            "the same order"
            if same
            else f"{' > '.join(map(_short, self.second_order))} (Kendall's tau {self.tau:.2f})"
        )
        return (
            f"The indices and their intervals come from a seeded random subset of {self.size:,} "
            f"of the {self.total:,} episodes (seed {self.seed}){rate}. A second subset (seed "
            f"{self.seed + 1}) ranks {agreement}."
        )


def _kendall_tau(first: Sequence[str], second: Sequence[str]) -> float:
    """Kendall's tau between two orders of the same names (1: same order, -1: reversed)."""
    where = {name: i for i, name in enumerate(second)}
    pairs = [(where[a], where[b]) for i, a in enumerate(first) for b in first[i + 1 :]]
    if not pairs:
        return 1.0
    return sum(1 if a < b else -1 for a, b in pairs) / len(pairs)


def _rank(
    data: pd.DataFrame,
    y: pd.Series,
    factors: list[Factor],
    methods: Sequence[str],
    num_resamples: int,
    conf_level: float,
    seed: int,
    dummies: int,
    notes: list[str],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The ranking table and the dummies' noise level: per method, the largest upper bound of
    the dummies' intervals. A factor's effect is ``clear`` when its lower bound lies above
    that for every method."""
    rng = np.random.default_rng(seed)
    X, bounds = _inputs(data, factors, rng)
    X = np.column_stack([X, rng.uniform(size=(len(X), dummies))])
    bounds.extend([[0.0, 1.0]] * dummies)
    names = [f"x{i}" for i in range(X.shape[1])]  # SALib forbids some suffixes in names
    design = _Design(
        {"num_vars": len(names), "names": names, "bounds": bounds},
        X,
        y.to_numpy(),
        num_resamples,
        conf_level,
        seed,
    )
    columns: dict[str, np.ndarray] = {}
    for method in methods:
        try:
            value, conf = _ESTIMATORS[method](design, notes)
        except Exception as err:  # one failing estimator must not hide the others
            notes.append(f"{METHOD_NAMES[method]} failed: {type(err).__name__}: {err}")
            value = conf = np.full(len(names), np.nan)
        columns[method], columns[f"{method}_conf"] = value, conf
    every = pd.DataFrame(columns)
    table = every.iloc[: len(factors)].set_axis([f.column for f in factors])
    dummy_rows = every.iloc[len(factors) :]
    noise = {m: float((dummy_rows[m] + dummy_rows[f"{m}_conf"]).max()) for m in methods}
    above = pd.DataFrame(
        {m: table[m] - table[f"{m}_conf"] > noise[m] for m in methods if np.isfinite(noise[m])}
    )
    if above.columns.empty:
        table["effect"] = "unknown"  # no method gave the dummy's noise level
    else:
        table["effect"] = np.select(
            [above.all(axis=1), above.any(axis=1)], ["clear", "uncertain"], "none detected"
        )
    ranks = table[list(methods)].rank(ascending=False)
    table["rank"] = ranks.mean(axis=1)
    table = table.sort_values(["rank", methods[0]], ascending=[True, False])
    table["rank"] = np.arange(1, len(table) + 1)
    return table[["rank", *columns, "effect"]], noise


def sensitivity(
    rec: Recording,
    outcome: str = "success",
    *,
    methods: Sequence[str] = METHODS,
    num_resamples: int = 100,
    conf_level: float = CONF_LEVEL,
    seed: int = 0,
    dummies: int = 3,
    max_episodes: int = 20_000,
) -> Sensitivity:
    """Rank ``rec``'s factors by their effect on ``outcome`` (ended episodes only).

    Bounds come from the manifest. Factors drawn several times per episode (interval scope) or
    held constant are left out, which ``notes`` says. The success rate and the episode count
    are those of every usable episode; beyond ``max_episodes`` the estimators (whose bootstrap
    is the cost) run on a seeded random subset, and a second subset shows how stable the
    order is (``subset``). Raises ``ValueError`` when there is nothing to rank: no usable
    factor, too few episodes, an outcome that never varies, or a sweep whose jobs differ in
    more than variations (``arena_recording.analysis.pools`` splits those).
    """
    unknown = sorted(set(methods) - set(_ESTIMATORS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(_ESTIMATORS)}")
    version = _salib_version()
    groups = pools(rec)
    if len(groups) > 1:
        raise ValueError(
            "the jobs differ in more than their variations, so their episodes cannot be pooled; "
            "analyse each pool apart (arena_recording.analysis.pools): "
            + "; ".join(pool.describe(rec) for pool in groups)
        )
    notes: list[str] = [groups[0].describe(rec)] if groups[0].sweep else []
    factors = []
    for factor in rec.factors:
        if factor.excluded:
            notes.append(f"{_short(factor.column)} left out: it {factor.excluded}")
        else:
            factors.append(factor)
            if factor.note:
                notes.append(f"{_short(factor.column)}: {factor.note}")
    if not factors:
        raise ValueError(f"no factor to analyse in {rec.path} (factors come from manifest.json)")
    data = ended(rec.episodes)
    if len(data) < len(rec.episodes):
        notes.append(f"{len(rec.episodes) - len(data)} aborted episode(s) left out")
    y = _outcome(data, outcome)
    usable = y.notna() & data[[f.column for f in factors]].notna().all(axis=1)
    if not usable.all():
        notes.append(
            f"{int((~usable).sum())} episode(s) without {outcome} or a factor value left out"
        )
    data, y = data[usable], y[usable]
    if len(data) < MIN_EPISODES:
        raise ValueError(f"{len(data)} usable episodes; at least {MIN_EPISODES} are needed")
    if y.nunique() < 2:
        raise ValueError(f"{outcome} is {y.iloc[0]:g} in every episode: nothing to rank")
    for factor in [f for f in factors if data[f.column].nunique() < 2]:
        factors.remove(factor)  # a build-scope draw, or a choice that came up alone
        notes.append(f"{_short(factor.column)} left out: it has one value in every episode")
    if not factors:
        raise ValueError("every factor has one value in every episode: nothing to rank")
    rate = success_rate(data) if outcome == "success" else None
    total = len(data)
    args = (methods, num_resamples, conf_level, seed, dummies, notes)
    subset = None
    if total > max_episodes:
        first, second = (
            np.sort(np.random.default_rng(s).choice(total, max_episodes, replace=False))
            for s in (seed, seed + 1)
        )
        table, noise = _rank(data.iloc[first], y.iloc[first], factors, *args)
        again, _ = _rank(
            data.iloc[second],
            y.iloc[second],
            factors,
            methods,
            STABILITY_RESAMPLES,
            conf_level,
            seed + 1,
            dummies,
            [],
        )
        subset = Subset(
            max_episodes,
            total,
            seed,
            success_rate(data.iloc[first]) if outcome == "success" else None,
            tuple(again.index),
            _kendall_tau(list(table.index), list(again.index)),
        )
    else:
        table, noise = _rank(data, y, factors, *args)
    notes = list(dict.fromkeys(notes))
    return Sensitivity(
        outcome,
        total,
        tuple(methods),
        table,
        noise,
        conf_level,
        num_resamples,
        version,
        notes,
        rate,
        subset,
    )
