"""The record and manifest format: names, versions, typed manifest and the one reader of both.

A recording is two files in its output dir: ``episodes.jsonl``, one JSON record per finished
episode (appended, crash-safe), and ``manifest.json``, what the run was (status, job, versions,
the factor schema, counts; replaced atomically). With a process rank they are
``episodes.rank{N}.jsonl`` and ``manifest.rank{N}.json``. Every record starts with the fields of
``IDENTITY_FIELDS``; the manifest says ``producer: "arena-recording"`` so our files are told
apart from other tools' files of the same name.

Files of every schema version up to ``SCHEMA_VERSION`` load into the same typed form; a newer
version is refused with a clear error. Version 1 (no ``producer``; the factor schema held the
sampler's raw parameters) is converted on reading.

Example::

    manifest = read_manifest(Path("outputs/run/manifest.json"))
    print(manifest.status, manifest.counts.episodes, [f.key for f in manifest.factors])
    rows, torn = read_records(Path("outputs/run") / manifest.records)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from arena_recording.errors import ArenaRecordingError

SCHEMA_VERSION = 2
PRODUCER = "arena-recording"
IDENTITY_FIELDS = (
    "schema_version",
    "run_id",
    "rank",
    "seq",
    "episode_id",
    "env_id",
    "episode_in_env",
)
RECORDS_STEM = "episodes"
MANIFEST_STEM = "manifest"
MANIFEST_GLOB = f"{MANIFEST_STEM}*.json"

Status = Literal["created", "running", "completed", "empty", "failed", "interrupted"]
Kind = Literal["continuous", "categorical", "boolean"]
Bounds = Literal["hard", "soft"]
FINISHED: tuple[Status, ...] = ("completed", "empty", "failed", "interrupted")
CRASHED = "crashed"
"""What ``status_now`` calls a ``running`` manifest whose writer stopped beating."""
STALE_HEARTBEATS = 4
"""Heartbeats a writer may miss (a loaded machine, a long step) before it counts as gone."""


class FormatError(ArenaRecordingError, ValueError):
    """A file that is not a recording this version can read; the message names the file."""


class ForeignFileError(FormatError):
    """A file named like ours that another tool wrote (no ``producer: arena-recording``)."""


def records_name(rank: int | None = None) -> str:
    """``episodes.jsonl``, or ``episodes.rank{N}.jsonl`` for a process rank."""
    return f"{RECORDS_STEM}{_rank_suffix(rank)}.jsonl"


def manifest_name(rank: int | None = None) -> str:
    """``manifest.json``, or ``manifest.rank{N}.json`` for a process rank."""
    return f"{MANIFEST_STEM}{_rank_suffix(rank)}.json"


def _rank_suffix(rank: int | None) -> str:
    return "" if rank is None else f".rank{rank}"


# factor schema -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorSchema:
    """What a variation declares about its values: kind, shape, scope and the sampler's own
    description (``SamplerCfg.describe``).

    ``low``/``high`` hold one bound per component (``prod(shape)`` of them, row-major); they
    are ``hard`` when no value can lie beyond them and ``soft`` when values may (an untruncated
    normal, described as mean -/+ 3 std), ``None`` for factors without bounds. ``choices``
    are the categories of a categorical or boolean factor, in the sampler's order.
    """

    key: str
    kind: Kind
    distribution: str
    shape: tuple[int, ...] = ()
    scope: str = "episode"
    enabled: bool = True
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    bounds: Bounds | None = None
    choices: tuple[Any, ...] | None = None
    weights: tuple[float, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> bool:
        """Whether values are categories (``choices``) rather than numbers within bounds."""
        return self.kind in ("categorical", "boolean")

    @property
    def size(self) -> int:
        """The number of components (1 for a scalar)."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "shape": list(self.shape),
            "scope": self.scope,
            "enabled": self.enabled,
            "distribution": self.distribution,
            "kind": self.kind,
            "low": None if self.low is None else list(self.low),
            "high": None if self.high is None else list(self.high),
            "bounds": self.bounds,
            "choices": None if self.choices is None else list(self.choices),
            "weights": None if self.weights is None else list(self.weights),
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FactorSchema:
        """The schema of today's samplers (with ``bounds`` and ``params``) or of version 1."""
        if "params" not in data:
            return _factor_v1(data)
        known = {f.name for f in fields(cls)}
        _no_unknown(data, known, f"factor {data.get('key')!r}")
        key = _required(data, "key", "factor")
        shape = tuple(int(s) for s in data.get("shape") or ())
        size = math.prod(shape)
        kind = data.get("kind")
        if kind not in ("continuous", "categorical", "boolean"):
            raise FormatError(f"factor {key!r}: unknown kind {kind!r}")
        bounds = data.get("bounds")
        if bounds not in ("hard", "soft", None):
            raise FormatError(f"factor {key!r}: bounds {bounds!r} is not 'hard', 'soft' or null")
        choices, weights = data.get("choices"), data.get("weights")
        return cls(
            key=key,
            kind=kind,
            distribution=str(data.get("distribution", "")),
            shape=shape,
            scope=str(data.get("scope", "episode")),
            enabled=bool(data.get("enabled", True)),
            low=_floats(data.get("low"), size, f"factor {key!r} low"),
            high=_floats(data.get("high"), size, f"factor {key!r} high"),
            bounds=bounds,
            choices=None if choices is None else tuple(choices),
            weights=None if weights is None else tuple(float(w) for w in weights),
            params=dict(data.get("params") or {}),
        )


_V1_NORMAL_SPAN = 3.0  # version 1 files were analysed with an untruncated normal's mean -/+ 3 std
_V1_COMMON = ("key", "kind", "shape", "scope", "enabled", "distribution")
_V1_PARAMS = {
    "uniform": ("low", "high"),
    "log_uniform": ("low", "high"),
    "normal": ("mean", "std", "low", "high"),
    "choice": ("choices", "weights"),
    "bernoulli": ("p",),
    "constant": ("value",),
}


def _factor_v1(data: Mapping[str, Any]) -> FactorSchema:
    """A version 1 factor schema: the sampler's raw parameters, bounds derived here."""
    key = _required(data, "key", "factor")
    distribution = data.get("distribution")
    if distribution not in _V1_PARAMS:
        raise FormatError(f"factor {key!r}: unknown distribution {distribution!r}")
    _no_unknown(data, {*_V1_COMMON, *_V1_PARAMS[distribution]}, f"factor {key!r}")
    params = {name: data.get(name) for name in _V1_PARAMS[distribution]}
    shape = tuple(int(s) for s in data.get("shape") or ())
    size = math.prod(shape)
    common = {
        "key": key,
        "distribution": distribution,
        "shape": shape,
        "scope": str(data.get("scope", "episode")),
        "enabled": bool(data.get("enabled", True)),
        "params": params,
    }
    where = f"factor {key!r}"
    if distribution == "choice":
        weights = params["weights"]
        return FactorSchema(
            kind="categorical",
            choices=tuple(params["choices"]),
            weights=None if weights is None else tuple(float(w) for w in weights),
            **common,
        )
    if distribution == "bernoulli":
        return FactorSchema(kind="boolean", choices=(False, True), **common)
    if distribution == "constant":
        value = _floats(params["value"], size, f"{where} value")
        return FactorSchema(kind="continuous", low=value, high=value, bounds="hard", **common)
    low = _floats(params["low"], size, f"{where} low")
    high = _floats(params["high"], size, f"{where} high")
    bounds: Bounds = "hard"
    if distribution == "normal" and (low is None or high is None):
        mean = _floats(params["mean"], size, f"{where} mean") or ()
        std = _floats(params["std"], size, f"{where} std") or ()
        spans = [_V1_NORMAL_SPAN * s for s in std]
        low = low or tuple(m - s for m, s in zip(mean, spans, strict=True))
        high = high or tuple(m + s for m, s in zip(mean, spans, strict=True))
        bounds = "soft"
    return FactorSchema(kind="continuous", low=low, high=high, bounds=bounds, **common)


def _floats(value: Any, size: int, where: str) -> tuple[float, ...] | None:
    """``size`` floats from a scalar or a list (a length-1 list is broadcast); ``None`` stays."""
    if value is None:
        return None
    values = list(value) if isinstance(value, list | tuple) else [value]
    if len(values) == 1:
        values *= size
    if len(values) != size:
        raise FormatError(f"{where}: {len(values)} values for {size} component(s)")
    return tuple(float(v) for v in values)


# counts --------------------------------------------------------------------------------------

_UNDRAWN = "undrawn:"


@dataclass
class Counts:
    """A run's tally: episodes by how they ended, resets without a step, undrawn factors.

    ``success`` is ``None`` when the env reports no success; ``undrawn`` counts, per factor
    key, the records that lack a value of it. The recorder keeps the same tally as a flat
    ``Counter`` (``undrawn:<key>``); ``from_counter``/``to_counter`` convert.
    """

    episodes: int = 0
    terminated: int = 0
    truncated: int = 0
    aborted: int = 0
    success: int | None = None
    resets_without_steps: int = 0
    undrawn: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_counter(cls, counter: Mapping[str, int]) -> Counts:
        """The typed tally of a recorder's or session's flat counter."""
        flat = {k: int(v) for k, v in counter.items() if not k.startswith(_UNDRAWN)}
        undrawn = {k[len(_UNDRAWN) :]: int(v) for k, v in counter.items() if k.startswith(_UNDRAWN)}
        _no_unknown(flat, {f.name for f in fields(cls)} - {"undrawn"}, "counts")
        return cls(**flat, undrawn=undrawn)

    def to_counter(self) -> Counter[str]:
        """The flat counter a session resumes from."""
        counter: Counter[str] = Counter()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "undrawn":
                counter.update({f"{_UNDRAWN}{k}": v for k, v in value.items()})
            elif value is not None:
                counter[f.name] = value
        return counter

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counts:
        """Today's counts (``undrawn`` nested) or version 1's (``undrawn:<key>`` keys, and
        ``draws_without_env``, which variations bound to their env made meaningless)."""
        flat = {k: v for k, v in data.items() if k not in ("undrawn", "draws_without_env")}
        nested = data.get("undrawn") or {}
        counts = cls.from_counter({k: v for k, v in flat.items() if v is not None})
        counts.undrawn.update({str(k): int(v) for k, v in nested.items()})
        return counts


# job and envs --------------------------------------------------------------------------------


@dataclass
class JobInfo:
    """The job that recorded (a Hydra job's name, number, overrides...); all optional.

    ``argv``, ``module`` (set when the app ran as ``python -m module``) and ``cwd`` say how the
    app was launched, so ``arena-recording rerun`` can launch it again. Keys the launcher adds
    beyond these are kept in ``extra`` and written back as they were.
    """

    name: str | None = None
    num: int | None = None
    id: str | None = None
    overrides: list[str] = field(default_factory=list)
    sweep_dir: str | None = None
    output_dir: str | None = None
    config_name: str | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    module: str | None = None
    cwd: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return known | self.extra

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobInfo:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names and v is not None}
        if "num" in known:
            known["num"] = int(known["num"])
        for name in ("overrides", "argv"):
            if name in known:
                known[name] = [str(o) for o in known[name]]
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)


@dataclass
class EnvInfo:
    """One env a session recorded: its number of sub-envs, device and seed."""

    num_envs: int
    device: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"num_envs": self.num_envs, "device": self.device, "seed": self.seed}


@dataclass
class Segment:
    """One process's part of a recording: a session start, or a resume after it.

    ``first_seq`` and ``first_episode_id`` are where its records start in the records file.
    """

    id: str
    started_at: str
    first_seq: int = 0
    first_episode_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segment:
        return cls(
            str(data["id"]),
            str(data["started_at"]),
            int(data.get("first_seq") or 0),
            int(data.get("first_episode_id") or 0),
        )


# manifest ------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a recording was: written by the session at start, at each bind and at finish.

    ``schema_version`` is the version the file was written with (``to_dict`` always writes the
    current layout and version); ``records`` names the records file beside the manifest;
    ``config`` is the recorder config and ``terms`` each term's description; ``replay`` says
    what a replay ran (source, selection, which factors were replayed and which stayed live;
    ``arena_recording.core.replay``). A running
    writer rewrites it every ``heartbeat_s`` seconds (``updated_at``), so ``status_now`` can
    tell a live run from a killed one; ``segments`` lists each process that wrote the records
    (a resume adds one).
    """

    run_id: str
    status: Status
    records: str
    rank: int = 0
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    heartbeat_s: float | None = None
    segments: list[Segment] = field(default_factory=list)
    job: JobInfo = field(default_factory=JobInfo)
    versions: dict[str, str] = field(default_factory=dict)
    envs: list[EnvInfo] = field(default_factory=list)
    factors: list[FactorSchema] = field(default_factory=list)
    terms: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    replay: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    producer: str = PRODUCER

    @property
    def num_envs(self) -> int | None:
        """The sub-envs of the last env recorded."""
        return self.envs[-1].num_envs if self.envs else None

    @property
    def seed(self) -> int | None:
        """The seed of the last env recorded."""
        return self.envs[-1].seed if self.envs else None

    @property
    def finished(self) -> bool:
        """Whether the session finished (completed, failed or interrupted): counts are final."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "producer": self.producer,
            "run_id": self.run_id,
            "rank": self.rank,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "updated_at": self.updated_at,
            "heartbeat_s": self.heartbeat_s,
            "segments": [segment.to_dict() for segment in self.segments],
            "records": self.records,
            "job": self.job.to_dict(),
            "versions": dict(self.versions),
            "envs": [env.to_dict() for env in self.envs],
            "num_envs": self.num_envs,
            "seed": self.seed,
            "factors": [factor.to_dict() for factor in self.factors],
            "terms": dict(self.terms),
            "config": dict(self.config),
            "counts": self.counts.to_dict(),
            "replay": self.replay,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest") -> Manifest:
        """A manifest of any version up to ``SCHEMA_VERSION``; errors name ``where``."""
        if not is_ours(data):
            raise ForeignFileError(f"{where} was not written by {PRODUCER}")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise FormatError(
                f"{where} has schema version {version!r}; this {PRODUCER} reads versions up to "
                f"{SCHEMA_VERSION}: upgrade {PRODUCER} to read it"
            )
        if data.get("status") not in get_args(Status):
            raise FormatError(f"{where}: unknown status {data.get('status')!r}")
        try:
            return cls(
                run_id=str(data["run_id"]),
                status=data["status"],
                records=str(data.get("records") or records_name()),
                rank=int(data.get("rank") or 0),
                error=data.get("error"),
                started_at=data.get("started_at"),
                finished_at=data.get("finished_at"),
                updated_at=data.get("updated_at"),
                heartbeat_s=None if data.get("heartbeat_s") is None else float(data["heartbeat_s"]),
                segments=[Segment.from_dict(s) for s in data.get("segments") or []],
                job=JobInfo.from_dict(data.get("job") or {}),
                versions=dict(data.get("versions") or {}),
                envs=[
                    EnvInfo(int(e["num_envs"]), str(e["device"]), int(e["seed"]))
                    for e in data.get("envs") or []
                ],
                factors=[FactorSchema.from_dict(f) for f in data.get("factors") or []],
                terms=dict(data.get("terms") or {}),
                config=dict(data.get("config") or {}),
                counts=Counts.from_dict(data.get("counts") or {}),
                replay=data.get("replay"),
                schema_version=version,
            )
        except FormatError as err:
            raise FormatError(f"{where}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise FormatError(f"{where} is malformed: {type(err).__name__}: {err}") from None


def status_now(manifest: Manifest, now: datetime | None = None) -> str:
    """The manifest's status as of ``now`` (default: the current time): ``crashed`` for a
    ``running`` manifest whose writer has not rewritten it for ``STALE_HEARTBEATS``
    heartbeats (killed, or its machine is gone), else the status it says. A manifest without
    a heartbeat (written before heartbeats existed) is taken at its word.

    Example::

        if status_now(read_manifest(path)) == "crashed":
            print("resume it with recorder.resume=true")
    """
    if manifest.status != "running" or not manifest.updated_at or not manifest.heartbeat_s:
        return manifest.status
    now = now or datetime.now(UTC)
    silent = (now - datetime.fromisoformat(manifest.updated_at)).total_seconds()
    return CRASHED if silent > STALE_HEARTBEATS * manifest.heartbeat_s else manifest.status


def is_ours(data: Mapping[str, Any]) -> bool:
    """Whether a parsed manifest was written by arena-recording: its ``producer`` says so, or
    it is a version 1 manifest (which predates the field) with our required fields."""
    if not isinstance(data, Mapping):
        return False
    if "producer" in data:
        return data["producer"] == PRODUCER
    return data.get("schema_version") == 1 and {"run_id", "status", "records", "counts"} <= set(
        data
    )


# readers -------------------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    """The typed manifest at ``path``.

    Raises ``ForeignFileError`` for a file another tool wrote, ``FormatError`` for a newer
    schema version or a malformed file, and ``FileNotFoundError`` for a missing one.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ForeignFileError(f"{path} is not JSON ({err})") from None
    return Manifest.from_dict(data, where=str(path))


def find_manifests(directory: Path) -> list[tuple[Path, Manifest]]:
    """Every manifest of ours directly in ``directory`` (one per rank), by name; other tools'
    files named like ours are skipped."""
    found = []
    for path in sorted(Path(directory).glob(MANIFEST_GLOB)):
        try:
            found.append((path, read_manifest(path)))
        except ForeignFileError:
            continue
    return found


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The complete records of a records file and how many torn lines were skipped.

    A line without its newline (a write cut short by a kill) or that is not JSON is never
    trusted: it is counted, not parsed. A missing file has no records. Raises ``FormatError``
    for a record of a newer schema version than this reader knows.
    """
    records: list[dict[str, Any]] = []
    torn = 0
    path = Path(path)
    if not path.exists():
        return records, torn
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                torn += 1
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            version = record.get("schema_version", 1) if isinstance(record, dict) else None
            if not isinstance(version, int):
                torn += 1
                continue
            if version > SCHEMA_VERSION:
                raise FormatError(
                    f"{path}:{number} has schema version {version}; this {PRODUCER} reads "
                    f"versions up to {SCHEMA_VERSION}: upgrade {PRODUCER} to read it"
                )
            records.append(record)
    return records, torn


# helpers -------------------------------------------------------------------------------------


def _required(data: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in data:
        raise FormatError(f"{where} has no {name!r}")
    return data[name]


def _no_unknown(data: Mapping[str, Any], known: set[str] | Sequence[str], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FormatError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
