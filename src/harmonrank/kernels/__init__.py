"""A fused CPU kernel for HarmonRank's step-1 block, built on first use and loaded with ctypes.

The block (self-attention over the M objective tokens, residual, LayerNorm, GELU feed-forward, residual,
LayerNorm) is computed for 8 candidates at a time, one per SIMD lane, forward and backward
(``align_block.cpp`` says why and how). :func:`align_block` is a drop-in for the PyTorch block: the same
parameters, the same function (to float32 rounding; ``tests/test_kernels.py`` checks outputs and every
gradient against the PyTorch block), differentiable as a torch custom operator with a registered backward.

Building: the C++ source (no ATen headers) is compiled once per machine with the system C++ compiler
(``$CXX``, else ``c++``/``g++``/``clang++``; about a second) into ``$HARMONRANK_KERNEL_CACHE`` (default
``~/.cache/harmonrank/kernels``; a fresh private temporary folder if that cannot be written), keyed by the
source, the flags and the CPU's flags; written to a temporary name and renamed, so concurrent processes
(torchrun ranks) never load a half-written library. If there is no compiler, or the build or load fails,
the block runs in PyTorch and one warning says why.

``HARMONRANK_FUSED_BLOCK=0`` turns the kernel off (the PyTorch block is used everywhere).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ScorePlan", "align_block", "align_block_params", "available", "block_params", "enabled", "load_error"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("align_block.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-march=native", "-fno-math-errno")
# tried first with GCC: the library then needs libgomp.so.1, which the dynamic loader resolves to the copy torch
# has already loaded, so the kernel's parallel parts run on the OpenMP threads torch's own operators use (clang
# would link its own libomp, a second runtime; it builds without)
OPENMP = ("-fopenmp",)


def _is_gcc(cxx: str) -> bool:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in out and "clang" not in out.lower()
_LANES = 8

_lock = threading.RLock()
_lib: Any = None
_error: str | None = None
_tried = False
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def enabled() -> bool:
    """Whether the fused kernel may be used (``HARMONRANK_FUSED_BLOCK`` is not ``0``)."""
    return os.environ.get("HARMONRANK_FUSED_BLOCK", "1") != "0"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cache_dir() -> Path:
    env = os.environ.get("HARMONRANK_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "harmonrank" / "kernels"


def _build() -> Path:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    source = SOURCE.read_bytes()
    omp = OPENMP if _is_gcc(cxx) else ()

    def name(flags: tuple[str, ...]) -> str:
        key = hashlib.sha256(source + " ".join((cxx, *flags, platform.machine(), _cpu_flags())).encode()).hexdigest()
        return f"align_block-{key[:20]}.so"

    out_dir = _cache_dir()
    for flags in ((*FLAGS, *omp), FLAGS):  # an earlier build with OpenMP, else one without
        if (out_dir / name(flags)).exists():
            return out_dir / name(flags)
    out = out_dir / name((*FLAGS, *omp))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    except OSError:  # an unwritable cache (some CI runners, containers): a fresh private temporary folder,
        # never a shared, predictable one another user could plant a library in
        out_dir = Path(tempfile.mkdtemp(prefix="harmonrank-kernels-", dir=tempfile.gettempdir()))
        out = out_dir / out.name
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *FLAGS, *omp, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0 and omp:  # no OpenMP after all: the same kernel, its parts on Python threads
            out = out.with_name(name(FLAGS))
            proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {proc.stderr.strip()[-2000:]}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o755 & ~umask)  # mkstemp's 0600 would hide a shared cache's library from other users
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load() -> Any:
    global _lib, _error, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        try:
            lib = ctypes.CDLL(str(_build()))
            i64, i32, f32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
            lib.hr_align_forward.argtypes = [i64, i32, i32, i32, i32, f32, ptr, ptr, ptr, i64, i64]
            lib.hr_align_backward.argtypes = [i64, i32, i32, i32, i32, f32, ptr, ptr, ptr, ptr, ptr, i64, i64]
            lib.hr_score_forward.argtypes = [i64, i32, i32, i32, i32, f32, i32, i32, i32, i32, ptr, ptr, ptr, ptr,
                                             i32, ptr, ptr, ptr, ptr, ptr, ptr, f32, ptr, i64, i64, i32]
            lib.hr_openmp.restype = i32
            lib.hr_align_lanes.restype = i32
            if lib.hr_align_lanes() != _LANES:
                raise RuntimeError(f"kernel built with {lib.hr_align_lanes()} lanes, expected {_LANES}")
            _lib = lib
        except Exception as err:  # no compiler, a failed build or load: the PyTorch block stays in use
            _error = f"{type(err).__name__}: {err}"
            log.warning("fused HarmonRank block unavailable (%s); using the PyTorch block", _error)
        _tried = True
    return _lib


def load_error() -> str | None:
    """Why the kernel could not be built or loaded (None if it loaded or was not tried)."""
    _load()
    return _error


def available(x: Tensor | None = None) -> bool:
    """Whether :func:`align_block` can run (on ``x``: CPU, float32, 3-D).

    Under torch.compile this is traced: the environment variable and the loaded library are guarded (a change
    recompiles), and a library not yet loaded counts as unavailable (tracing into the build would break the
    graph); :class:`harmonrank.train.CompiledOrEager` loads it before compiling."""
    if x is not None and (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 3):
        return False
    if not enabled():
        return False
    if torch.compiler.is_compiling():
        return _lib is not None
    return _load() is not None


def _reset_pool() -> None:
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):  # a forked child inherits the pool's bookkeeping, not its threads
    os.register_at_fork(after_in_child=_reset_pool)


def _run_tiles(fn: Any, n: int, n_tiles: int, make_args: Any, keep: tuple[Any, ...]) -> None:
    """Call ``fn(*make_args(part), tile0, tile1)`` over ``n`` contiguous tile ranges (ctypes releases the GIL,
    so the ranges run in parallel). Every call holds ``keep`` (the tensors whose raw pointers C reads and
    writes), and all calls have finished before this returns or raises, even on an interrupt."""
    global _pool, _pool_size
    if n == 1:
        fn(*make_args(0), 0, n_tiles)
        return
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="harmonrank-block"), n
        pool: Any = _pool
    bounds = [n_tiles * k // n for k in range(n + 1)]
    futures = []
    try:
        for k in range(n):
            args = (*make_args(k), bounds[k], bounds[k + 1])
            futures.append(pool.submit(lambda a=args, _keep=keep: fn(*a)))
    finally:
        wait(futures)
    for f in futures:
        f.result()


def _parts(n_tiles: int) -> int:
    """How many ranges the tiles run in: one per torch thread, each at least 4 tiles."""
    return max(1, min(torch.get_num_threads(), n_tiles // 4))


def _forward(x: Tensor, params: list[Tensor], heads: int, eps: float) -> Tensor:
    lib = _load()
    b, m, d = x.shape
    y = torch.empty_like(x)
    ptrs = (ctypes.c_void_p * len(params))(*(p.data_ptr() for p in params))
    n_tiles = -(-b // _LANES)
    _run_tiles(lib.hr_align_forward, _parts(n_tiles), n_tiles,
               lambda _k: (b, m, d, heads, params[6].shape[0], eps, x.data_ptr(), ptrs, y.data_ptr()),
               keep=(x, y, params, ptrs))
    return y


def _backward(x: Tensor, dy: Tensor, params: list[Tensor], heads: int, eps: float) -> list[Tensor]:
    lib = _load()
    b, m, d = x.shape
    dx = torch.empty_like(x)
    ptrs = (ctypes.c_void_p * len(params))(*(p.data_ptr() for p in params))
    n_tiles = -(-b // _LANES)
    sizes = [p.numel() for p in params]
    parts = _parts(n_tiles)
    grads = torch.zeros(parts, sum(sizes) * _LANES, dtype=torch.float32)  # per part, per lane
    _run_tiles(lib.hr_align_backward, parts, n_tiles,
               lambda k: (b, m, d, heads, params[6].shape[0], eps, x.data_ptr(), dy.data_ptr(), ptrs,
                          dx.data_ptr(), grads[k].data_ptr()),
               keep=(x, dy, dx, grads, params, ptrs))
    flat = grads.view(grads.shape[0], -1, _LANES).sum((0, 2))
    return [dx, *(g.view_as(p).clone() for g, p in zip(torch.split(flat, sizes), params, strict=True))]  # no aliasing


# registered as torch custom operators, so torch.compile (the Trainer's compile=True) keeps the kernel as
# one opaque node in its graph instead of breaking the graph at a ctypes call
@torch.library.custom_op("harmonrank::align_block", mutates_args=())
def _align_op(x: Tensor, params: list[Tensor], heads: int, eps: float) -> Tensor:
    return _forward(x.contiguous(), [p.contiguous() for p in params], heads, eps)


@_align_op.register_fake
def _(x: Tensor, params: list[Tensor], heads: int, eps: float) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("harmonrank::align_block_backward", mutates_args=())
def _align_backward_op(x: Tensor, dy: Tensor, params: list[Tensor], heads: int, eps: float) -> list[Tensor]:
    return _backward(x.contiguous(), dy.contiguous(), [p.contiguous() for p in params], heads, eps)


@_align_backward_op.register_fake
def _(x: Tensor, dy: Tensor, params: list[Tensor], heads: int, eps: float) -> list[Tensor]:
    return [torch.empty_like(x, memory_format=torch.contiguous_format),
            *(torch.empty_like(p, memory_format=torch.contiguous_format) for p in params)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, params, heads, eps = inputs
    ctx.save_for_backward(x, *params)
    ctx.heads, ctx.eps = heads, eps


def _autograd_backward(ctx: Any, dy: Tensor) -> tuple[Any, ...]:
    x, *params = ctx.saved_tensors
    dx, *grads = _align_backward_op(x, dy, params, ctx.heads, ctx.eps)
    return dx, grads, None, None


_align_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def align_block(x: Tensor, block: Any, heads: int) -> Tensor:
    """``block(x)`` for a :class:`harmonrank.models.harmonrank._AlignBlock` ``block`` through the fused
    kernel: (B, M, d) float32 CPU tokens -> (B, M, d). Differentiable in ``x`` and every parameter."""
    if block.norm1.eps != block.norm2.eps:
        raise ValueError("the fused block needs both LayerNorms to share eps")
    return align_block_params(x, block_params(block), heads, float(block.norm1.eps))


def block_params(block: Any) -> list[Tensor]:
    """The 12 parameters of an ``_AlignBlock`` in the kernel's order (:func:`align_block_params`), as views
    of the block's own parameters (Q and K/V weights concatenated), so gradients reach them."""
    attn, ff1, ff2 = block.attn, block.ff[0], block.ff[2]
    return [torch.cat([attn.q.weight, attn.kv.weight]), torch.cat([attn.q.bias, attn.kv.bias]), attn.out.weight,
            attn.out.bias, block.norm1.weight, block.norm1.bias, ff1.weight, ff1.bias, ff2.weight, ff2.bias,
            block.norm2.weight, block.norm2.bias]


def align_block_params(x: Tensor, params: list[Tensor], heads: int, eps: float) -> Tensor:
    """:func:`align_block` with the block's 12 parameters given as a list: the QKV weight (3d, d) and bias
    (unscaled: the kernel applies 1/sqrt(d_h)), the output projection, LayerNorm 1, the two feed-forward
    layers, LayerNorm 2 (weight before bias); both LayerNorms with ``eps``."""
    _check(x, params, heads)
    out: Tensor = _align_op(x, params, heads, eps)
    return out


def _check(x: Tensor, params: list[Tensor], heads: int) -> None:
    """What the C code trusts: float32 CPU tensors of the block's shapes, and heads dividing the width."""
    if x.dim() != 3 or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"the fused block takes (B, M, d) float32 CPU tokens. Got {tuple(x.shape)} {x.dtype} on "
                         f"{x.device} instead.")
    d = x.shape[2]
    ffn = params[6].shape[0]
    shapes = [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (ffn, d), (ffn,), (d, ffn), (d,), (d,), (d,)]
    for k, (p, shape) in enumerate(zip(params, shapes, strict=True)):
        if p.dtype != torch.float32 or p.device.type != "cpu" or tuple(p.shape) != shape:
            raise ValueError(f"fused block parameter {k}: expected float32 CPU {shape}. Got {p.dtype} on "
                             f"{p.device} {tuple(p.shape)} instead.")
    if heads < 1 or d % heads:
        raise ValueError(f"heads must be >= 1 and divide the width {d}. Got {heads} instead.")


class ScorePlan:
    """The whole folded HarmonRank net in one pass per tile of 8 candidates (inference only, no gradient):
    objective tokens, the step-1 blocks, the cross-attention, the head MLP and the gate's weighted product.

    The weights are checked and copied once, here: ``blocks``, each step-1 block's 12 parameters
    (:func:`align_block_params`' order); knots (K), wtok (M, K + 1, d), btok (M, d), whead (hd, M d + d),
    w2 (hd), b2; ``gated``: whether the net has the gate branch. :meth:`run` then costs one C call per batch
    (the fixed cost matters at a few hundred candidates per request).
    :class:`harmonrank.models.fused.FusedHarmonRank` holds the reference semantics; ``tests/test_kernels.py``
    checks this against the trained network.
    """

    def __init__(self, blocks: list[list[Tensor]], heads: int, eps: float, knots: Tensor, wtok: Tensor,
                 btok: Tensor, whead: Tensor, w2: Tensor, b2: float, gated: bool) -> None:
        lib = _load()
        if lib is None:
            raise RuntimeError(f"the fused kernel is unavailable: {_error}")
        if not blocks:
            raise ValueError("ScorePlan needs at least one step-1 block")
        m, d = btok.shape
        k, hd = knots.shape[0], whead.shape[0]
        for name, t, shape in (("knots", knots, (k,)), ("wtok", wtok, (m, k + 1, d)), ("btok", btok, (m, d)),
                               ("whead", whead, (hd, m * d + d)), ("w2", w2, (hd,))):
            if t.dtype != torch.float32 or t.device.type != "cpu" or tuple(t.shape) != shape:
                raise ValueError(f"ScorePlan {name}: expected float32 CPU {shape}. Got {t.dtype} on {t.device} "
                                 f"{tuple(t.shape)} instead.")
        x0 = torch.empty(0, m, d)
        for params in blocks:
            _check(x0, params, heads)
            if params[6].shape != blocks[0][6].shape:
                raise ValueError("ScorePlan: every block needs the same feed-forward width")
        self.m, self.d, self.k, self.hd, self.heads, self.eps, self.gated = m, d, k, hd, heads, eps, gated
        self.ffn, self.layers, self.b2 = blocks[0][6].shape[0], len(blocks), float(b2)
        self.width = d + hd + (m if gated else 0)  # columns of the user terms
        self._flat = [p.detach().contiguous().clone() for params in blocks for p in params]
        self._ptrs = (ctypes.c_void_p * len(self._flat))(*(p.data_ptr() for p in self._flat))
        self._w = [t.detach().contiguous().clone() for t in (knots, wtok, btok, whead, w2)]
        self._lib = lib

    def run(self, z: np.ndarray, logp: np.ndarray | None, uidx: np.ndarray, users: np.ndarray) -> np.ndarray:
        """(B,) float32 scores. z (B, M) float32 standardised logits; logp (B, M) float32 clipped
        log-probabilities (None unless gated); uidx (B,) int64: the row of ``users`` (U, d + hd [+ M]) float32
        holding each candidate's user terms (query in token space, head user term, softplus of the gate)."""
        b = z.shape[0] if z.ndim == 2 else -1
        _need("z", z, np.float32, (b, self.m))
        _need("uidx", uidx, np.int64, (b,))
        _need("users", users, np.float32, (users.shape[0] if users.ndim == 2 else -1, self.width))
        if self.gated:
            if logp is None:
                raise ValueError("ScorePlan.run: a gated net needs logp")
            _need("logp", logp, np.float32, (b, self.m))
        out = np.empty(b, dtype=np.float32)
        if b == 0:
            return out
        if int(uidx.min()) < 0 or int(uidx.max()) >= users.shape[0]:
            raise ValueError(f"ScorePlan.run uidx: values must lie in [0, {users.shape[0]})")
        lp = logp if self.gated else None
        knots, wtok, btok, whead, w2 = (t.data_ptr() for t in self._w)
        n_tiles = -(-b // _LANES)
        args = (b, self.m, self.d, self.heads, self.ffn, self.eps, self.k, self.hd, self.layers, int(self.gated),
                z.ctypes.data, lp.ctypes.data if lp is not None else None, uidx.ctypes.data, users.ctypes.data,
                self.width, self._ptrs, knots, wtok, btok, whead, w2, self.b2, out.ctypes.data)
        parts = _parts(n_tiles)
        if self._lib.hr_openmp():  # one call; its parts run on OpenMP threads
            self._lib.hr_score_forward(*args, 0, n_tiles, parts)
        else:
            _run_tiles(lambda *a: self._lib.hr_score_forward(*a, 1), parts, n_tiles, lambda _k: args,
                       keep=(z, lp, uidx, users, out))
        return out


def _need(name: str, a: np.ndarray, dtype: type, shape: tuple[int, ...]) -> None:
    if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
        raise ValueError(f"ScorePlan.run {name}: expected C-contiguous {np.dtype(dtype).name} {shape}. Got {a.dtype} "
                         f"{a.shape} instead.")
