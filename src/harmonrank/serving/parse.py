"""Request bodies -> :class:`Parsed` (numpy scores + feature values), or the problems that make them invalid.

Two paths, one verdict. The fast path decodes with orjson and accepts a body only when it can tell cheaply
that the pydantic schema (:mod:`harmonrank.serving.schema`) accepts it too: exact types, every objective
present and no other, finite scores in [0, 1], unique ids. Anything else — including every invalid body —
goes to pydantic, which is the reference: it either reports the problems with their JSON paths or accepts
a body the fast path was too cautious for. ``tests/test_serving.py`` checks that the two paths agree.
Building thousands of pydantic objects per request was the largest cost of a 2,000-candidate request.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from .schema import Problem, RankModels, problems_of

__all__ = ["Parsed", "parse_fast", "parse_request", "parse_with_pydantic"]

_TOP = frozenset({"request_id", "user", "candidates", "top_k"})
_TOP_CONDITIONED = _TOP | {"weights"}
_INT64 = (-(2**63), 2**63 - 1)
_EXACT_FLOAT = 2**53  # ints beyond this are left to pydantic (float conversion rounds them)


@dataclass
class Parsed:
    """One valid request: ``scores`` (n, M) float32 in the model's objective order; feature values by column
    name (``user`` for every candidate, ``overrides[i]`` only for candidate i's given columns)."""

    request_id: str | None
    top_k: int | None
    ids: list[str | int]
    scores: np.ndarray
    user: dict[str, Any]
    overrides: list[dict[str, Any]] | None
    weights: np.ndarray | None = None  # (M,) on the simplex, preference-conditioned models only


def _features_ok(values: Any, models: RankModels) -> dict[str, Any] | None:
    """The model's feature columns of a JSON object if each fits the schema for sure, else None."""
    if type(values) is not dict:
        return None
    out = {}
    for name in models.categorical:
        if name in values:
            v = values[name]
            t = type(v)
            if not (v is None or t is bool or t is int or (t is str and len(v) <= 1024)):
                return None
            out[name] = v
    for name in models.numeric:
        if name in values:
            v = values[name]
            t = type(v)
            if t is float:
                if v != v or v in (float("inf"), float("-inf")):
                    return None
            elif t is int:
                if abs(v) > _EXACT_FLOAT:
                    return None
            elif v is not None:
                return None
            out[name] = v
    return out


def parse_fast(body: bytes, models: RankModels, max_candidates: int) -> Parsed | None:
    """The request if it is certainly valid, else None (then pydantic decides)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not obj.keys() <= (_TOP if models.default_weights is None else _TOP_CONDITIONED):
        return None
    given = obj.get("weights")
    preference = None
    if models.default_weights is not None:
        if given is not None:
            if type(given) is not dict or not given.keys() <= set(models.objectives):
                return None
            for v in given.values():
                if not (v is None or (type(v) in (float, int) and 0 <= v < float("inf"))):
                    return None
        try:
            preference = models.preference({k: v for k, v in (given or {}).items() if v is not None})
        except ValueError:
            return None
    cands = obj.get("candidates")
    if type(cands) is not list or not 1 <= len(cands) <= max_candidates:
        return None
    rid, top_k, user_raw = obj.get("request_id"), obj.get("top_k"), obj.get("user")
    if rid is not None and (type(rid) is not str or len(rid) > 256):
        return None
    if top_k is not None and (type(top_k) is not int or top_k < 1):
        return None
    user: dict[str, Any] = {}
    if user_raw is not None:
        checked = _features_ok(user_raw, models)
        if checked is None:
            return None
        user = checked
    objectives = models.objectives
    m = len(objectives)
    try:  # C-level passes over the candidates; a non-dict candidate or a missing key raises
        ids = [c["id"] for c in cands]
        score_dicts = [c["scores"] for c in cands]
        if set(map(type, cands)) != {dict} or set(map(type, score_dicts)) != {dict}:
            return None
        if set(map(len, score_dicts)) != {m}:
            return None
        getter = operator.itemgetter(*objectives)
        rows = list(map(getter, score_dicts)) if m > 1 else [(getter(d),) for d in score_dicts]
    except (KeyError, TypeError):
        return None
    sizes = set(map(len, cands))
    overrides: list[dict[str, Any]] | None = None
    if sizes != {2}:
        if not sizes <= {2, 3}:
            return None
        for k, c in enumerate(cands):
            if len(c) == 3:
                if "features" not in c:
                    return None
                if c["features"] is not None:
                    checked = _features_ok(c["features"], models)
                    if checked is None:
                        return None
                    if checked:
                        if overrides is None:
                            overrides = [{} for _ in range(len(cands))]
                        overrides[k] = checked
    id_types = set(map(type, ids))
    if not id_types <= {str, int}:
        return None
    if id_types == {str} and not (min(map(len, ids)) > 0 and max(map(len, ids)) <= 256):
        return None
    if id_types == {int} and not (_INT64[0] <= min(ids) and max(ids) <= _INT64[1]):
        return None
    if id_types == {str, int} and not all(0 < len(i) <= 256 if type(i) is str else _INT64[0] <= i <= _INT64[1]
                                          for i in ids):
        return None
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
        return None
    scores = np.array(rows, dtype=np.float64)
    if not (np.all(scores >= 0.0) and np.all(scores <= 1.0)):  # NaN fails both; inf fails one
        return None
    if len(set(map(str, ids))) != len(ids):
        return None
    return Parsed(rid, top_k, ids, scores.astype(np.float32), user, overrides, preference)


def parse_with_pydantic(body: bytes, models: RankModels) -> Parsed | list[Problem]:
    """The reference path: pydantic's verdict, then the duplicate-id check."""
    try:
        req: Any = models.request.model_validate_json(body)
    except ValidationError as err:
        return problems_of(err)
    seen: dict[str, int] = {}
    dups = []
    for i, c in enumerate(req.candidates):
        key = str(c.id)
        if key in seen:
            dups.append(Problem(path=f"$.candidates[{i}].id", type="duplicate_id",
                                message=f"duplicate id {c.id!r} (first at $.candidates[{seen[key]}].id)"))
        else:
            seen[key] = i
    if dups:
        return dups
    names = [*models.categorical, *models.numeric]
    keys = [*(f"c{i}" for i in range(len(models.categorical))), *(f"n{i}" for i in range(len(models.numeric)))]

    def features(f: Any) -> dict[str, Any]:
        if f is None:
            return {}
        return {n: f.__dict__[k] for k, n in zip(keys, names, strict=True) if k in f.model_fields_set}

    preference = None
    if models.default_weights is not None:
        given = getattr(req, "weights", None)
        named = {} if given is None else {m: given.__dict__[f"o{i}"] for i, m in enumerate(models.objectives)
                                           if f"o{i}" in given.model_fields_set and given.__dict__[f"o{i}"] is not None}
        try:
            preference = models.preference(named)
        except ValueError as err:
            return [Problem(path="$.weights", type="all_zero", message=str(err))]
    overrides = [features(c.features) for c in req.candidates]
    scores = np.array([list(c.scores.__dict__.values()) for c in req.candidates], dtype=np.float64)
    return Parsed(req.request_id, req.top_k, [c.id for c in req.candidates],
                  scores.reshape(len(req.candidates), -1).astype(np.float32), features(req.user),
                  overrides if any(overrides) else None, preference)


def parse_request(body: bytes, models: RankModels, max_candidates: int) -> Parsed | list[Problem]:
    """A valid request, or its problems (each with a JSON path)."""
    fast = parse_fast(body, models, max_candidates)
    return fast if fast is not None else parse_with_pydantic(body, models)
