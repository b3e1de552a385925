"""Serving artifacts: a fitted ranker as ``model.onnx`` plus ``manifest.json``, loadable without Python.

``export_ranker(ranker, out_dir)`` writes

* ``model.onnx``: inputs ``scores`` (B, M) float32 raw probabilities ``p_*`` in the manifest's objective
  order, ``categorical`` (B, C) int64 category ids and ``numeric`` (B, D) float32 encoded numerics; output
  ``score`` (B,) float32. The batch dimension is dynamic. Neural rankers export their network (logit
  standardisation included); the formula exports its weighted product. LambdaMART does not export.
* ``manifest.json``: format version, objectives and their score columns, the feature encoding (vocabulary
  per categorical column with id 0 for unseen values; mean, std, missing flag and clip range per numeric
  column), input and output names, dtypes and shapes, training metadata, and the sha256 of ``model.onnx``.

* ``model.safetensors`` (neural rankers): the network's weights, with its class and config in the manifest
  (``torch``) and their sha256, for harmonrank's own torch engine.

``load_artifact(dir, engine=...)`` checks the format version and the sha256 of every file it uses, then
scores tables like the ranker did: through ONNX Runtime (``engine="onnx"``), or through the network's
inference form in PyTorch (``"torch"``: on the CPU, one fused kernel pass per tile of candidates,
:mod:`harmonrank.kernels`), or ``"auto"`` (torch when the artifact has weights and the kernel is available).
Export uses PyTorch's current exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``),
opset 18; install the ``export`` extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import Tensor, nn

from . import kernels
from .config import DatasetConfig
from .data import Table
from .errors import ConfigError, DataError, HarmonRankError, MissingDependencyError
from .features import EncodedBatch, FeatureEncoder
from .rankers import FormulaRanker, NeuralRanker, Ranker
from .threads import get_threads

__all__ = ["ARTIFACT_FORMAT", "Artifact", "export_ranker", "load_artifact"]

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1
_INPUTS = ("scores", "categorical", "numeric")


class _Graph(nn.Module):
    """Positional tensors in, scores out: the exported signature of a network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, scores: Tensor, categorical: Tensor, numeric: Tensor) -> Tensor:
        out: Tensor = self.net(EncodedBatch(scores, categorical, numeric))
        return out


class _ConditionedGraph(nn.Module):
    """A preference-conditioned network's signature: objective weights (B, M) are a fourth input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, scores: Tensor, categorical: Tensor, numeric: Tensor, weights: Tensor) -> Tensor:
        out: Tensor = self.net(EncodedBatch(scores, categorical, numeric, weights))
        return out


class _Formula(nn.Module):
    """``sum_m e_m log(clip(p_m, 1e-7, 1))``, the weighted product on the log scale."""

    exponents: Tensor

    def __init__(self, exponents: list[float]) -> None:
        super().__init__()
        self.register_buffer("exponents", torch.tensor(exponents, dtype=torch.float32))

    def forward(self, scores: Tensor, categorical: Tensor, numeric: Tensor) -> Tensor:
        return (torch.log(scores.clamp(1e-7, 1.0)) * self.exponents).sum(1)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError as err:
        raise MissingDependencyError(f"{module} is needed: pip install 'harmonrank[export]'") from err


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _graph_of(ranker: Ranker) -> tuple[nn.Module, FeatureEncoder]:
    if isinstance(ranker, NeuralRanker):
        net = ranker.net_.cpu().eval()
        if ranker.conditioned:  # the plain network with w as an input (the folded form has no preference path)
            return _ConditionedGraph(net).eval(), ranker.encoder_
        form = getattr(net, "inference_form", None)  # e.g. HarmonRank's linear maps folded (models/fused.py)
        return _Graph(form() if form is not None else net).eval(), ranker.encoder_
    if isinstance(ranker, FormulaRanker):
        cfg = ranker.config_
        exps = [float(ranker.exponents_.get(m, 0.0)) for m in cfg.names]
        return _Formula(exps).eval(), FeatureEncoder(objectives=tuple(cfg.names))
    raise HarmonRankError(f"ranker {ranker.name!r} ({type(ranker).__name__}) does not export to ONNX: only "
                          "neural rankers and the formula do (a LightGBM model has no converter kept here)")


def export_ranker(ranker: Ranker, out_dir: str | Path, *, opset: int = 18) -> Path:
    """Write ``model.onnx`` and ``manifest.json`` for a fitted ranker into ``out_dir`` (atomically as a folder).

    Examples
    --------
    >>> export_ranker(load_ranker("run/"), "artifact/")  # doctest: +SKIP
    >>> load_artifact("artifact/").score(table)  # doctest: +SKIP
    """
    _require("onnxscript")
    if opset < 18:
        raise ConfigError(f"opset must be >= 18. Got {opset} instead.")
    graph, encoder = _graph_of(ranker)
    cfg = ranker.config_
    m, c, d = len(cfg.names), len(encoder.vocab), encoder.numeric_dim
    conditioned = isinstance(graph, _ConditionedGraph)
    example: tuple[Tensor, ...] = (torch.rand(3, m), torch.zeros(3, c, dtype=torch.int64), torch.zeros(3, d))
    if conditioned:
        example = (*example, torch.full((3, m), 1.0 / m))
    names = [*_INPUTS, *(["weights"] if conditioned else [])]
    batch = torch.export.Dim("batch", min=1)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with warnings.catch_warnings():
            # torch's own exporter internals use a pytree API they deprecate; not our code path
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            # the three inputs share one batch axis on purpose; the exporter notes it keeps one name
            warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used.*", category=UserWarning)
            onnx_logger = logging.getLogger("torch.onnx")
            level = onnx_logger.level
            onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed" notes on every export
            try:
                program = torch.onnx.export(graph, example, dynamo=True, opset_version=opset, verbose=False,
                                            input_names=names, output_names=["score"],
                                            dynamic_shapes=tuple({0: batch} for _ in names))
            finally:
                onnx_logger.setLevel(level)
        if program is None:
            raise HarmonRankError("torch.onnx.export returned no program")
        program.save(str(tmp / "model.onnx"))
        torch_part = None
        if isinstance(ranker, NeuralRanker):  # the weights for harmonrank's torch engine (never pickled)
            save_file({k: v.detach().cpu().contiguous() for k, v in ranker.net_.state_dict().items()},
                      str(tmp / "model.safetensors"))
            torch_part = {"net": ranker.net, "net_config": ranker.net_config_.to_dict(),
                          "weights": "model.safetensors", "weights_sha256": _sha256(tmp / "model.safetensors")}
        meta = getattr(ranker, "history_", None)
        manifest = {
            "format": ARTIFACT_FORMAT,
            "ranker": ranker.name,
            "kind": ranker.kind,
            "objectives": [{"name": o.name, "score_column": o.score} for o in cfg.objectives],
            "request_column": cfg.request_column,
            "user_column": cfg.user_column,
            "item_column": cfg.item_column,
            "features": {
                "categorical": [{"column": k, "vocabulary": v, "unseen_id": 0, "id": "1 + position in vocabulary"}
                                for k, v in encoder.vocab.items()],
                "numeric": [{"column": k, "mean": encoder.numeric_mean[k], "std": encoder.numeric_std[k],
                             "encoding": "[(x - mean) / std, 0] if finite else [0, 1]; clipped to [-10, 10]"}
                            for k in encoder.numeric_mean],
            },
            "inputs": [
                {"name": "scores", "dtype": "float32", "shape": ["batch", m],
                 "meaning": "raw probabilities p_* in [0, 1], objectives in the order above"},
                {"name": "categorical", "dtype": "int64", "shape": ["batch", c]},
                {"name": "numeric", "dtype": "float32", "shape": ["batch", d]},
                *([{"name": "weights", "dtype": "float32", "shape": ["batch", m],
                    "meaning": "objective weights on the simplex (non-negative, summing to 1), objectives in the "
                               "order above; the ranking they ask for"}] if conditioned else []),
            ],
            # raw objective weights: objectives a request does not name keep these (then all are normalised)
            "preference": ({"default_weights": [float(x) for x in cfg.objective_weights]}
                           if conditioned else None),
            "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"], "meaning": "higher ranks first"}],
            "opset": opset,
            "encoder": encoder.to_dict(),
            "dataset_config": cfg.to_dict(),
            "training": {"train_config": asdict(ranker.train) if isinstance(ranker, NeuralRanker) else None,
                         "best_epoch": getattr(ranker, "best_epoch_", None),
                         "epochs": len(meta) if meta else None},
            "onnx_sha256": _sha256(tmp / "model.onnx"),
            "torch": torch_part,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        # replace a previous export with two renames, so a server re-reading ``out`` sees the old or the new
        # artifact whole (flipping a symlink to versioned folders is the gap-free way: docs/serving.md)
        old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class Artifact:
    """A loaded, verified serving artifact: ``score(table)`` through ONNX Runtime or the torch engine.

    ONNX Runtime: the session runs each call on one thread; ``threads`` > 1 scores inputs of at least 512
    rows as chunks (at most ``CHUNK_ROWS`` rows) on that many threads at once (ONNX Runtime releases the
    GIL): the net is many small kernels (benchmarks/results/onnx_profile.md), which parallelise poorly
    inside one call. Torch (``net`` given): the network's inference form, one call; its fused kernel splits
    the candidates over torch's threads itself.
    """

    CHUNK_ROWS = 2048
    MIN_SPLIT_ROWS = 256  # smaller inputs are one call: a thread hop costs more than it saves

    def __init__(self, path: Path, manifest: dict[str, Any], session: Any, threads: int = 1,
                 net: nn.Module | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.session = session
        self.net = net
        self.engine = "torch" if net is not None else "onnx"
        self.threads = threads
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix="harmonrank-onnx")
                      if threads > 1 and net is None else None)
        self.encoder = FeatureEncoder.from_dict(manifest["encoder"])
        self.objectives = tuple(o["name"] for o in manifest["objectives"])
        self.config_ = DatasetConfig.from_dict(manifest["dataset_config"])
        self.name = f"{manifest['ranker']} ({self.engine})"

    def encode(self, table: Table) -> dict[str, np.ndarray]:
        """The ONNX inputs of ``table``'s rows."""
        if tuple(table.objectives) != self.objectives:
            raise DataError(f"artifact {self.path} scores objectives {', '.join(self.objectives)}; "
                            f"the data has {', '.join(table.objectives)}")
        cats, nums = self.encoder.encode_columns(table.features, len(table))
        return {"scores": table.scores.astype(np.float32), "categorical": cats, "numeric": nums}

    def predict(self, table: Table) -> np.ndarray:
        """(n,) float64 scores of ``table``'s rows, like ``Ranker.predict``."""
        return self.score(table)

    @property
    def version(self) -> str:
        """The first 12 hex digits of ``model.onnx``'s sha256: what the server reports as the model version."""
        return str(self.manifest["onnx_sha256"])[:12]

    @property
    def conditioned(self) -> bool:
        """True when the model takes objective weights as a fourth input (docs/preference.md)."""
        return bool(self.manifest.get("preference"))

    def default_weights(self) -> np.ndarray:
        """(M,) float32 on the simplex: the objective weights of a conditioned model when a request names none."""
        w = np.asarray(self.manifest["preference"]["default_weights"], dtype=np.float64)
        out: np.ndarray = (w / w.sum()).astype(np.float32)
        return out

    def _run1(self, scores: np.ndarray, categorical: np.ndarray, numeric: np.ndarray,
              weights: np.ndarray | None) -> np.ndarray:
        feeds = {"scores": scores, "categorical": categorical, "numeric": numeric}
        if self.conditioned:
            w = self.default_weights() if weights is None else weights
            feeds["weights"] = np.ascontiguousarray(np.broadcast_to(w.astype(np.float32), (len(scores), len(w))))
        if self.net is not None:
            fast = getattr(self.net, "score_numpy", None)  # the kernel straight from numpy, where the net has it
            if fast is not None and "weights" not in feeds:
                got: np.ndarray | None = fast(scores, categorical, numeric)
                if got is not None:
                    return got
            t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
            with torch.no_grad():
                score: Tensor = self.net(EncodedBatch(t["scores"], t["categorical"], t["numeric"], t.get("weights")))
            return np.asarray(score.to(torch.float32).numpy())
        out: np.ndarray = self.session.run(None, feeds)[0]
        return out

    def run(self, scores: np.ndarray, categorical: np.ndarray, numeric: np.ndarray,
            weights: np.ndarray | None = None) -> np.ndarray:
        """(n,) float32 scores of already encoded inputs: one call, or chunks on ``threads`` threads.
        ``weights`` ((M,) on the simplex): the objective weights of a conditioned model (default: its own)."""
        n = len(scores)
        if self._pool is None or n < 2 * self.MIN_SPLIT_ROWS:
            return self._run1(scores, categorical, numeric, weights)
        c = min(self.CHUNK_ROWS, -(-n // self.threads))  # a 500-candidate request: two calls of 250 rows
        starts = range(0, n, c)
        parts = self._pool.map(
            lambda a: self._run1(scores[a:a + c], categorical[a:a + c], numeric[a:a + c], weights), starts)
        return np.concatenate(list(parts))

    def score(self, table: Table) -> np.ndarray:
        """(n,) float64 scores of ``table``'s rows."""
        feeds = self.encode(table)
        if len(table) == 0:
            return np.empty(0)
        return self.run(feeds["scores"], feeds["categorical"], feeds["numeric"], None).astype(np.float64)


ENGINES = ("auto", "onnx", "torch")


def load_artifact(path: str | Path, *, threads: int | None = None, engine: str = "onnx") -> Artifact:
    """Load ``manifest.json`` and the model files the engine needs, after checking the format version and
    the sha256 of each file.

    ``threads``: how many ONNX Runtime calls may run at once (default: :func:`harmonrank.threads.get_threads`);
    the torch engine uses torch's thread count. ``engine``: ``"onnx"``, ``"torch"`` (needs the weights a
    neural ranker's export carries) or ``"auto"`` (torch when the artifact has weights and the fused kernel
    is available, else ONNX Runtime).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}. Got {engine!r} instead.")
    d = Path(path)
    try:
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HarmonRankError(f"{d} is not a harmonrank artifact: cannot read manifest.json ({err}); make one "
                              f"from a run folder with: harmonrank export --model RUN --out {d}") from err
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise HarmonRankError(f"{d}/manifest.json has format {manifest.get('format')!r}; this harmonrank reads "
                              f"format {ARTIFACT_FORMAT}")
    onnx_path = d / "model.onnx"
    if not onnx_path.is_file():
        raise HarmonRankError(f"{d} has no model.onnx")
    digest = _sha256(onnx_path)
    if digest != manifest.get("onnx_sha256"):
        raise HarmonRankError(f"{onnx_path}: sha256 {digest[:12]}... does not match the manifest's "
                              f"{str(manifest.get('onnx_sha256'))[:12]}...; the artifact was altered or is incomplete")
    torch_part = manifest.get("torch")
    if engine == "auto":
        engine = "torch" if torch_part and kernels.available() else "onnx"
    if engine == "torch":
        if not torch_part:
            raise HarmonRankError(f"{d}: the torch engine needs the network's weights; this artifact "
                                  f"({manifest.get('ranker')}) has none. Use --engine onnx")
        return Artifact(d, manifest, None, threads=threads or get_threads(), net=_torch_net(d, torch_part))
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1  # parallelism comes from concurrent calls (see Artifact)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    return Artifact(d, manifest, session, threads=threads or get_threads())


def _torch_net(d: Path, part: dict[str, Any]) -> nn.Module:
    """The artifact's network from its verified safetensors weights, as its inference form, on the CPU."""
    from .models import NETWORKS

    fname = str(part.get("weights", "model.safetensors"))
    if Path(fname).name != fname or fname in ("", ".", ".."):
        raise HarmonRankError(f"{d}/manifest.json: the weights file must be a plain file name. Got {fname!r} instead.")
    weights = d / fname
    if not weights.is_file():
        raise HarmonRankError(f"{d} has no {weights.name}, which its manifest names")
    data = weights.read_bytes()  # hashed and parsed from the same bytes
    digest = hashlib.sha256(data).hexdigest()
    if digest != part.get("weights_sha256"):
        raise HarmonRankError(f"{weights}: sha256 {digest[:12]}... does not match the manifest's "
                              f"{str(part.get('weights_sha256'))[:12]}...; the artifact was altered or is incomplete")
    if part.get("net") not in NETWORKS:
        raise HarmonRankError(f"{d}/manifest.json: unknown network {part.get('net')!r}")
    net_cls, cfg_cls = NETWORKS[part["net"]]
    net = net_cls(cfg_cls(**part["net_config"]))
    net.load_state_dict(load_safetensors(data))
    net.eval()
    form = getattr(net, "inference_form", None)
    out: nn.Module = form() if form is not None else net
    return out.eval()
