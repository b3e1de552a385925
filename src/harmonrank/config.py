"""Dataset configuration: which columns hold objectives, requests, users and personalised features.

One format, TOML (read with the standard library's :mod:`tomllib`). A minimal file::

    request_column = "request_id"
    user_column = "user_id"
    time_column = "time"          # optional; used to split train/valid/test by time
    item_column = "streamer_id"   # optional; the candidate id, carried into `harmonrank predict` output

    [[objectives]]
    name = "buy"                  # score column defaults to p_buy, label column to y_buy
    weight = 1.0                  # optional, default 1.0

    [[objectives]]
    name = "follow"
    score = "pred_follow"         # real logs: map your own column names
    label = "is_follow"

    [features]
    categorical = ["u_gender"]
    numeric = ["u_age"]

The simulator's config ships with the package (:func:`simulator_config`).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DatasetConfig", "Objective", "check_keys", "load_config", "read_toml", "simulator_config", "write_config"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_keys(keys: Iterable[str], allowed: Iterable[str], where: str, what: str = "key") -> None:
    """Raise ConfigError listing every key of ``keys`` not in ``allowed``, each with its closest spelling
    (``what`` names the kind of key: "key", "section", "objective").

    >>> check_keys(["catgorical"], ["categorical", "numeric"], "features")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    harmonrank.errors.ConfigError: features: unknown key 'catgorical' (did you mean 'categorical'?); ...
    """
    allowed = sorted(allowed)
    unknown = [k for k in keys if k not in allowed]
    if not unknown:
        return
    parts = []
    for k in unknown:
        close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
        parts.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
    noun = what if len(unknown) == 1 else f"{what}s"
    raise ConfigError(f"{where}: unknown {noun} {', '.join(parts)}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class Objective:
    """One objective: its name, score column, label column and weight in the AUC-sum."""

    name: str
    score: str = ""
    label: str = ""
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"objective name must be an identifier (letters, digits, '_'). Got {self.name!r} instead."
            )
        if not self.score:
            object.__setattr__(self, "score", f"p_{self.name}")
        if not self.label:
            object.__setattr__(self, "label", f"y_{self.name}")
        if not isinstance(self.weight, int | float) or not self.weight >= 0 or self.weight == float("inf"):
            raise ConfigError(
                f"objective {self.name!r}: weight must be a finite number >= 0. Got {self.weight!r} instead."
            )

    @property
    def truth(self) -> str:
        """Column of the ground-truth probability (simulated data only)."""
        return f"true_{self.name}"


@dataclass(frozen=True)
class DatasetConfig:
    """Names the columns of a dataset in the data contract (see MISSION.md / docs/data.md)."""

    objectives: tuple[Objective, ...]
    request_column: str = "request_id"
    user_column: str = "user_id"
    time_column: str | None = None
    item_column: str | None = None
    categorical: tuple[str, ...] = field(default_factory=tuple)
    numeric: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.objectives) == 0:
            raise ConfigError("config must name at least one objective. Got 0 instead.")
        names = [o.name for o in self.objectives]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"objective names must be unique. Got {len(dupes)} duplicated: {', '.join(dupes)}"
            )
        feats = list(self.categorical) + list(self.numeric)
        dup_feats = sorted({f for f in feats if feats.count(f) > 1})
        if dup_feats:
            raise ConfigError(
                f"feature columns must be listed once (categorical or numeric). "
                f"Got {len(dup_feats)} listed twice: {', '.join(dup_feats)}"
            )
        if sum(o.weight for o in self.objectives) <= 0:
            raise ConfigError("objective weights must not all be 0.")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    @property
    def objective_weights(self) -> tuple[float, ...]:
        """Each objective's weight in the AUC-sum (TOML key ``weight``), in objective order."""
        return tuple(float(o.weight) for o in self.objectives)

    def objective(self, name: str) -> Objective:
        for o in self.objectives:
            if o.name == name:
                return o
        raise ConfigError(f"unknown objective {name!r}; the config names: {', '.join(self.names)}")

    def with_objective_weights(self, weights: dict[str, float]) -> DatasetConfig:
        """Copy with some objectives' AUC-sum weights replaced (by name)."""
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ConfigError(f"unknown objective(s) {', '.join(unknown)}; known: {', '.join(self.names)}")
        objs = tuple(
            Objective(o.name, o.score, o.label, float(weights.get(o.name, o.weight))) for o in self.objectives
        )
        return DatasetConfig(objs, self.request_column, self.user_column, self.time_column, self.item_column,
                             self.categorical, self.numeric)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objectives"] = [asdict(o) for o in self.objectives]
        d["categorical"] = list(self.categorical)
        d["numeric"] = list(self.numeric)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> DatasetConfig:
        known = {"objectives", "request_column", "user_column", "time_column", "item_column", "features"}
        check_keys(raw, known | {"categorical", "numeric"}, source)
        objs_raw = raw.get("objectives")
        if not isinstance(objs_raw, list) or not objs_raw:
            raise ConfigError(f"{source}: needs a non-empty [[objectives]] list. Got {objs_raw!r} instead.")
        objectives = []
        for i, o in enumerate(objs_raw):
            if not isinstance(o, dict) or "name" not in o:
                raise ConfigError(f"{source}: objectives[{i}] must be a table with a 'name'. Got {o!r} instead.")
            check_keys(o, {"name", "score", "label", "weight"}, f"{source}: objectives[{i}]")
            objectives.append(Objective(**o))
        feats = raw.get("features", {})
        if not isinstance(feats, dict):
            raise ConfigError(f"{source}: [features] must be a table. Got {feats!r} instead.")
        check_keys(feats, {"categorical", "numeric"}, f"{source}: [features]")
        categorical: Any = raw.get("categorical", feats.get("categorical", []))
        numeric: Any = raw.get("numeric", feats.get("numeric", []))
        for key, val in (("categorical", categorical), ("numeric", numeric)):
            if not isinstance(val, list | tuple) or not all(isinstance(v, str) for v in val):
                raise ConfigError(f"{source}: features.{key} must be a list of column names. Got {val!r}")
        for key in ("request_column", "user_column", "time_column", "item_column"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ConfigError(f"{source}: {key} must be a string. Got {raw[key]!r} instead.")
        return cls(
            objectives=tuple(objectives),
            request_column=raw.get("request_column", "request_id"),
            user_column=raw.get("user_column", "user_id"),
            time_column=raw.get("time_column"),
            item_column=raw.get("item_column"),
            categorical=tuple(categorical),
            numeric=tuple(numeric),
        )


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {err}") from err


def load_config(path: str | Path | None) -> DatasetConfig:
    """Read and validate a TOML dataset config; ``None`` gives the simulator's config."""
    if path is None:
        return simulator_config()
    return DatasetConfig.from_dict(read_toml(path), source=str(path))


def simulator_config(objectives: Sequence[str] | None = None) -> DatasetConfig:
    """The config of data written by ``harmonrank simulate`` (shipped with the package).

    ``objectives``: fuse these instead of the six (a subset, or with the simulator's extra objectives).
    """
    doc = tomllib.loads(resources.files("harmonrank").joinpath("resources/simulator.toml").read_text(encoding="utf-8"))
    if objectives is not None:
        doc["objectives"] = [{"name": m} for m in objectives]
    return DatasetConfig.from_dict(doc, source="simulator.toml")


def write_config(cfg: DatasetConfig, path: str | Path) -> None:
    """Write ``cfg`` as a dataset-config TOML (atomically) that :func:`load_config` reads back."""
    import json

    from .io import write_text

    def q(v: str) -> str:  # a TOML basic string (JSON's escaping is valid TOML)
        return json.dumps(v, ensure_ascii=False)

    lines = [f"request_column = {q(cfg.request_column)}", f"user_column = {q(cfg.user_column)}"]
    lines += [f"{key} = {q(getattr(cfg, key))}" for key in ("time_column", "item_column") if getattr(cfg, key)]
    lines.append("")
    for o in cfg.objectives:
        lines += ["[[objectives]]", f"name = {q(o.name)}"]
        lines += [f"{key} = {q(getattr(o, key))}" for key, default in (("score", f"p_{o.name}"),
                                                                        ("label", f"y_{o.name}"))
                  if getattr(o, key) != default]
        if o.weight != 1.0:
            lines.append(f"weight = {o.weight!r}")
        lines.append("")
    lines += ["[features]", "categorical = [" + ", ".join(q(c) for c in cfg.categorical) + "]",
              "numeric = [" + ", ".join(q(c) for c in cfg.numeric) + "]", ""]
    write_text(path, "\n".join(lines))
