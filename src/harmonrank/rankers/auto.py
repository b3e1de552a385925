"""``auto``: HarmonRank when the two-step structure pays on this data, its one-step ablation otherwise.

For teams that weigh cost: the two-step relation-aware net costs about 4x the one-step net's training time
and about 3x its serving cost, and its gain over its one-step ablation (``one_step_rank``, the same soft
AUC-sum loss without tokens, alignment or fusion) is small: +0.0027 test AUC-sum on average over the
two-step study's cells, +0.0074 on KuaiRand-Pure, rarely significant (docs/benchmark.md, "When the two-step
alignment pays"). The default ranker stays ``harmonrank``: a validation check loses part of such gains
(docs/models.md, "Which ranker to deploy"). Both nets are trained on the training data (same knobs and
seed) and compared on the validation data (:func:`choose_two_step`) by one of two rules (``rule``, CLI
``--auto-rule``):

* ``gain`` (default): keep HarmonRank if its validation AUC-sum is higher than the one-step net's (a tie goes
  to the cheaper one-step net). On KuaiRand-Pure HarmonRank won on the test days in 5 of 5 seeds while no
  seed's validation gain was significant (benchmarks/results/two_step_real/report.md), so a significance rule
  throws such gains away; ``gain`` keeps most of them.
* ``ci``: keep HarmonRank only if the paired request-bootstrap 95% interval of that gain is above zero: for
  teams that pay HarmonRank's serving cost only for a demonstrated gain (a small validation set then needs a
  large gain).

Both report the gain and its interval. The kept model is saved exactly as if it had been trained alone
(``harmonrank predict``, ``export`` and ``serve`` read it unchanged); ``model.json`` records the decision
under ``"selection"``, and both candidates are saved under ``candidates/<name>/`` so the other can be
deployed without retraining.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import DatasetConfig
from ..data import Table
from ..errors import ConfigError, HarmonRankError
from ..metrics import auc_sum, paired_bootstrap
from .base import BatchCallback, EpochCallback, Ranker, labels_of
from .neural import NeuralRanker

if TYPE_CHECKING:
    from ..stream import ParquetSource
    from ..train import TrainConfig

__all__ = ["AutoRanker", "Selection", "choose_two_step", "request_keys"]

#: a lower interval end this close to zero is rounding (float sums in a different order), not a gain
ROUNDING = 1e-9

#: the candidates, in training order (the cheap one first)
CANDIDATES = ("one_step_rank", "harmonrank")


@dataclass(frozen=True)
class Selection:
    """The decision: validation AUC-sums, HarmonRank's gain with its 95% interval, the rule and the model kept."""

    chosen: str
    rule: str
    valid_auc_sum: dict[str, float]
    gain: float
    low: float
    high: float
    n_boot: int
    valid_rows: int
    valid_requests: int

    PACKED: ClassVar[int] = 8  # length of pack(): what rank 0 broadcasts under torchrun

    def pack(self) -> np.ndarray:
        return np.array([self.chosen == "harmonrank", self.valid_auc_sum["harmonrank"],
                         self.valid_auc_sum["one_step_rank"], self.gain, self.low, self.high, self.valid_rows,
                         self.valid_requests], dtype=np.float64)

    @classmethod
    def unpack(cls, v: np.ndarray, n_boot: int, rule: str) -> Selection:
        return cls("harmonrank" if v[0] else "one_step_rank", rule,
                   {"harmonrank": float(v[1]), "one_step_rank": float(v[2])}, float(v[3]), float(v[4]), float(v[5]),
                   n_boot, int(v[6]), int(v[7]))

    def text(self) -> str:
        if self.chosen == "harmonrank":
            why = "its validation AUC-sum is higher" if self.rule == "gain" else "its gain's 95% interval is above zero"
        else:
            why = ("HarmonRank is not better on validation" if self.rule == "gain" else
                   "HarmonRank is not better beyond the validation noise") + ", and the one-step net is cheaper"
        return (f"auto: kept {self.chosen} ({why}): HarmonRank - one_step_rank valid AUC-sum {self.gain:+.4f} "
                f"[{self.low:+.4f}, {self.high:+.4f}] over {self.valid_requests:,} requests")


def request_keys(request: np.ndarray) -> np.ndarray:
    """(n,) int64 keys of request ids: 64 bits of blake2b of their text. A request gets the same key in every
    row group and process, so the bootstrap draws the same requests however the rows were read or sharded
    (a request cut across validation row groups is still one request)."""
    values, inverse = np.unique(np.asarray(request).astype(str), return_inverse=True)
    keys = np.array([int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little", signed=True)
                     for v in values.tolist()], dtype=np.int64)
    return keys[inverse.reshape(-1)]


def keeps(rule: str, gain: float, low: float) -> str:
    """The candidate a rule keeps given HarmonRank's validation gain and the lower end of its 95% interval."""
    return "harmonrank" if (gain if rule == "gain" else low) > ROUNDING else "one_step_rank"


#: the rules of :func:`choose_two_step`
RULES = {"gain": "HarmonRank if its validation AUC-sum is higher",
         "ci": "HarmonRank only if the paired request-bootstrap 95% interval of its validation gain is above zero"}


def choose_two_step(harmonrank: np.ndarray, one_step: np.ndarray, labels: np.ndarray, request: np.ndarray, *,
                    rule: str = "gain", weights: tuple[float, ...] | list[float] | None = None, n_boot: int = 200,
                    random_state: int = 0) -> Selection:
    """The ``auto`` decision on validation scores of both nets (module docs): ``rule="gain"`` keeps HarmonRank
    if ``AUC-sum(harmonrank) - AUC-sum(one_step)`` is above zero, ``rule="ci"`` if the lower end of its paired
    request-bootstrap 95% interval is. Either way the interval is computed and reported."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}. Got {rule!r} instead.")
    res = paired_bootstrap(harmonrank, one_step, labels, request, weights=weights, n_boot=n_boot,
                           random_state=random_state)
    sums = {"harmonrank": auc_sum(harmonrank, labels, weights), "one_step_rank": auc_sum(one_step, labels, weights)}
    return Selection(keeps(rule, res.difference, res.low), rule, sums, res.difference, res.low, res.high,
                     n_boot, len(labels), len(np.unique(request)))


class AutoRanker(Ranker):
    """Trains ``one_step_rank`` and ``harmonrank`` and keeps one by :func:`choose_two_step` (module docs).

    After ``fit``, ``chosen_`` is the kept :class:`NeuralRanker`, ``candidates_`` both, ``selection_`` the
    decision. ``predict``/``save`` are the kept model's; a saved ``auto`` model loads as that ranker.
    """

    kind = "auto"

    def __init__(self, *, train: TrainConfig | None = None, name: str = "auto", rule: str = "gain",
                 n_boot: int = 200, on_candidate: Callable[[str], None] | None = None,
                 **candidate_options: Any) -> None:
        from ..train import TrainConfig

        if rule not in RULES:
            raise ConfigError(f"rule must be one of {', '.join(RULES)}. Got {rule!r} instead.")
        self.rule = rule
        self.train = train or TrainConfig()
        self.name = name
        self.n_boot = n_boot
        self.on_candidate = on_candidate  # told each candidate's name before it trains (progress)
        self.candidate_options = candidate_options  # for both candidates, e.g. max_vocab / min_count

    @classmethod
    def from_spec(cls, name: str, train: TrainConfig, options: Mapping[str, Any]) -> Ranker:
        return cls(train=train, name=name, **options)

    def _candidates(self) -> dict[str, NeuralRanker]:
        from . import make_ranker

        out = {}
        for name in CANDIDATES:
            r = make_ranker(name, self.train, **self.candidate_options)
            assert isinstance(r, NeuralRanker)
            out[name] = r
        return out

    def _decide(self, valid: Table) -> None:
        scores = {name: r.predict(valid) for name, r in self.candidates_.items()}
        self._choose(scores["harmonrank"], scores["one_step_rank"], labels_of(valid, "auto's validation"),
                     request_keys(valid.request), valid.config)

    def _choose(self, hr: np.ndarray, os_: np.ndarray, labels: np.ndarray, keys: np.ndarray,
                config: DatasetConfig) -> None:
        self._set(choose_two_step(hr, os_, labels, keys, rule=self.rule, weights=config.objective_weights,
                                  n_boot=self.n_boot, random_state=self.train.seed))

    def _set(self, selection: Selection) -> None:
        self.selection_ = selection
        self.chosen_ = self.candidates_[self.selection_.chosen]
        self.history_ = self.chosen_.history_
        self.best_epoch_ = self.chosen_.best_epoch_

    @staticmethod
    def _check_resume(run_dir: str | Path | None, resume: bool) -> None:
        """A run folder holding a single ranker's checkpoint (e.g. trained with --ranker harmonrank) is not
        resumed as auto, which keeps its candidates' checkpoints in candidates/<name>/: refused, naming it."""
        if not resume or run_dir is None or not (Path(run_dir) / "checkpoint.json").exists():
            return
        try:
            ranker = json.loads((Path(run_dir) / "checkpoint.json").read_text(encoding="utf-8"))["model"]["ranker"]
        except (OSError, ValueError, KeyError, TypeError):
            ranker = "another ranker"
        raise ConfigError(f"{run_dir} holds a checkpoint of {ranker!r}, not of auto (whose candidates' checkpoints "
                          f"are in candidates/<name>/): resume it with --ranker {ranker}")

    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None:
        if valid is None:
            raise HarmonRankError("auto chooses between its candidates on validation data: pass valid=")
        self._check_resume(run_dir, resume)
        self.candidates_ = self._candidates()
        for name, r in self.candidates_.items():
            if self.on_candidate is not None:
                self.on_candidate(name)
            r.fit(train, valid, run_dir=None if run_dir is None else Path(run_dir) / "candidates" / name,
                  resume=resume, on_epoch=on_epoch, on_batch=on_batch)
        self._decide(valid)

    def fit_stream(self, train: ParquetSource, valid: ParquetSource, config: DatasetConfig, *,
                   run_dir: str | Path | None = None, resume: bool = False, on_epoch: EpochCallback | None = None,
                   on_batch: BatchCallback | None = None, **streaming: Any) -> AutoRanker:
        """Both candidates streamed (:meth:`NeuralRanker.fit_stream`), then the validation data streamed once
        through both; under torchrun every rank scores its share and the scores are gathered."""
        from ..distributed import all_sizes, broadcast_from_main, gather_rows_to_main, world
        from ..stream import StreamLoader

        self._check_resume(run_dir, resume)
        self.config_ = config
        self.candidates_ = self._candidates()
        for name, r in self.candidates_.items():
            if self.on_candidate is not None:
                self.on_candidate(name)
            r.fit_stream(train, valid, config, run_dir=None if run_dir is None else Path(run_dir) / "candidates" / name,
                         resume=resume, on_epoch=on_epoch, on_batch=on_batch, **streaming)
        info = world()
        loader = StreamLoader(valid, config, self.candidates_["harmonrank"].encoder_, self.train.batch_size,
                              self.train.seed, info)
        parts: dict[str, list[np.ndarray]] = {"hr": [], "os": [], "y": [], "req": []}
        for t in loader.tables(None):  # this rank's share of the validation row groups
            parts["hr"].append(self.candidates_["harmonrank"].predict(t).astype(np.float64))
            parts["os"].append(self.candidates_["one_step_rank"].predict(t).astype(np.float64))
            parts["y"].append(labels_of(t, "auto's validation").astype(np.int8))
            parts["req"].append(request_keys(t.request))
        empty: dict[str, np.ndarray] = {"hr": np.zeros(0), "os": np.zeros(0), "req": np.zeros(0, np.int64),
                                        "y": np.zeros((0, len(config.names)), np.int8)}
        local: dict[str, np.ndarray] = {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}
        sizes = all_sizes(len(local["hr"]))
        every = {k: gather_rows_to_main(v, sizes) for k, v in local.items()}  # rank 0 decides, tells the others
        if info.main:
            self._choose(every["hr"], every["os"], every["y"], every["req"], config)  # type: ignore[arg-type]
            packed = self.selection_.pack()
        else:
            packed = np.zeros(Selection.PACKED)
        self._set(Selection.unpack(broadcast_from_main(packed), self.n_boot, self.rule))
        return self

    def _predict(self, table: Table) -> np.ndarray:
        return self.chosen_.predict(table)

    def save(self, run_dir: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """The kept model in ``run_dir`` (with ``"selection"`` in its model.json); both candidates under
        ``run_dir/candidates/<name>/``."""
        d = Path(run_dir)
        for name, r in self.candidates_.items():
            r.save(d / "candidates" / name)
        selection = {"by": self.name, **asdict(self.selection_), "rule_text": RULES[self.rule]}
        return self.chosen_.save(d, extra={"selection": selection, **(extra or {})})

    def _save(self, d: Path) -> dict[str, Any]:  # pragma: no cover - save() is overridden
        raise NotImplementedError

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> Ranker:  # pragma: no cover - saved as the kept ranker
        raise HarmonRankError(f"{d}: an auto model is saved as the ranker it kept")
