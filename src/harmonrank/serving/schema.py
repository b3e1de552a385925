"""The ranking API's request and response models, built for one artifact's objectives and features.

A request is one user's candidate list::

    {"request_id": "r1",                                   # optional, echoed back
     "user": {"u_age_group": "25-34", "u_tenure_days": 412},  # user features (optional, any subset)
     "candidates": [{"id": "v1", "scores": {"click": 0.12, "like": 0.03, ...},
                     "features": {"u_device": "ios"}},      # optional per-candidate features
                    ...],
     "top_k": 50}                                            # optional: return only the best k

``scores`` must hold every objective of the model, each a finite number in [0, 1]; unknown names are
refused. Feature values override the user's for that candidate; absent features are scored as missing
(categorical: the unseen id 0; numeric: the missing flag); unknown feature names are ignored. Ids are
strings or integers and must be unique within the request. Field names in the Python models are positional
(``o0``, ``f0``...) with the JSON names as aliases, so any objective or column name is safe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, create_model

__all__ = ["MAX_PROBLEMS", "ErrorResponse", "Problem", "RankModels", "RankResponse", "json_path", "problems_of"]

MAX_PROBLEMS = 20  # a 422 lists at most this many problems (and says how many there were)

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]
Number = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
CandidateId = Annotated[StrictStr, Field(min_length=1, max_length=256)] | Int64
Category = Annotated[StrictStr, Field(max_length=1024)] | StrictInt | StrictBool | None


class Problem(BaseModel):
    path: str = Field(description="JSON path of the offending value, e.g. $.candidates[3].scores.click")
    message: str
    type: str = Field(description="machine-readable kind, e.g. missing, extra_forbidden, less_than_equal")


class ErrorResponse(BaseModel):
    detail: str
    problems: list[Problem] = Field(default_factory=list)
    problem_count: int = 0


class RankedCandidate(BaseModel):
    id: StrictStr | Int64
    score: float


class RankResponse(BaseModel):
    model_version: str = Field(description="first 12 hex digits of the ONNX file's sha256")
    request_id: str | None = None
    candidates: list[RankedCandidate] = Field(description="sorted by score, best first; ties keep request order")
    unseen_categories: int = Field(description="categorical values (over all candidates) scored as unseen or missing")


def json_path(loc: Sequence[str | int]) -> str:
    """``("candidates", 3, "scores", "click")`` -> ``"$.candidates[3].scores.click"``."""
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_UNION_TAG = re.compile(r"^(constrained-)?(str|int|bool|float|none)$|[\[\]]|^(Features|Scores|Candidate)$")


def problems_of(err: ValidationError) -> list[Problem]:
    """pydantic's errors as problems with JSON paths (the names the client sent), one per path.

    A value that fits no branch of a union (an id that is neither a string nor an integer) gives one
    problem whose message joins the branches' messages with "or".
    """
    by_path: dict[str, Problem] = {}
    for e in err.errors(include_url=False, include_context=False, include_input=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and _UNION_TAG.search(p))]
        path = json_path(loc)
        if path in by_path:
            prev = by_path[path]
            if e["msg"] not in prev.message:
                prev.message += f", or {e['msg'][0].lower()}{e['msg'][1:]}"
        else:
            by_path[path] = Problem(path=path, message=e["msg"], type=e["type"])
    return list(by_path.values())


def _model(name: str, fields: dict[str, Any], extra: str, doc: str) -> type[BaseModel]:
    config = ConfigDict(extra=extra, populate_by_name=False, title=name)  # type: ignore[typeddict-item]
    model: type[BaseModel] = create_model(name, __config__=config, __doc__=doc, **fields)
    return model


NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]


@dataclass(frozen=True)
class RankModels:
    """The pydantic models of one artifact's API (rebuilt when a reload changes objectives or features).

    ``default_weights`` (raw, one per objective) is set for a preference-conditioned model: its requests may
    carry ``weights``; objectives they do not name keep these, then all are normalised."""

    request: type[BaseModel]
    scores: type[BaseModel]
    features: type[BaseModel]
    objectives: tuple[str, ...]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    default_weights: tuple[float, ...] | None = None

    def preference(self, given: dict[str, float] | None) -> np.ndarray | None:
        """(M,) float32 objective weights on the simplex for a request (None: not conditioned), or raises
        ValueError when they would all be 0."""
        if self.default_weights is None:
            return None
        w = np.array([float((given or {}).get(m, d)) for m, d in zip(self.objectives, self.default_weights,
                                                                    strict=True)])
        if w.sum() <= 0:
            raise ValueError("at least one objective weight must be > 0")
        out: np.ndarray = (w / w.sum()).astype(np.float32)
        return out

    @classmethod
    def build(cls, objectives: Sequence[str], categorical: Sequence[str], numeric: Sequence[str],
              max_candidates: int, default_weights: Sequence[float] | None = None) -> RankModels:
        scores = _model("Scores", {f"o{i}": (Probability, Field(alias=m, description=f"p({m}) in [0, 1]"))
                                   for i, m in enumerate(objectives)}, "forbid",
                        "One probability per objective of the model; every objective is required.")
        feats: dict[str, Any] = {f"c{i}": (Category, Field(None, alias=c)) for i, c in enumerate(categorical)}
        feats.update({f"n{i}": (Number | None, Field(None, alias=c)) for i, c in enumerate(numeric)})
        features = _model("Features", feats, "ignore",
                          "Feature values by column name; absent = missing, unknown names are ignored.")
        candidate = _model("Candidate", {
            "id": (CandidateId, Field(description="candidate id, unique within the request")),
            "scores": (scores, ...),
            "features": (features | None, Field(None, description="overrides the user's values for this candidate")),
        }, "forbid", "One candidate: its id, the upstream probabilities, optional features.")
        fields: dict[str, Any] = {
            "request_id": (Annotated[StrictStr, Field(max_length=256)] | None, None),
            "user": (features | None, Field(None, description="features shared by every candidate")),
            "candidates": (list[candidate], Field(min_length=1, max_length=max_candidates)),  # type: ignore[valid-type]
            "top_k": (Annotated[StrictInt, Field(ge=1)] | None, Field(None, description="return only the best k")),
        }
        if default_weights is not None:  # a preference-conditioned model: the ranking's objective weights
            weights = _model("Weights", {f"o{i}": (NonNegative | None, Field(None, alias=m))
                                         for i, m in enumerate(objectives)}, "forbid",
                             "Objective weights to rank for (>= 0); objectives not named keep the model's defaults.")
            fields["weights"] = (weights | None, Field(None, description="objective weights (conditioned models)"))
        request = _model("RankRequest", fields, "forbid", "One user's candidates to rank.")
        return cls(request, scores, features, tuple(objectives), tuple(categorical), tuple(numeric),
                   tuple(float(x) for x in default_weights) if default_weights is not None else None)
