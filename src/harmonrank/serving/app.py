"""The HTTP ranking service: a FastAPI app over one loaded ONNX artifact, swapped without downtime.

Endpoints (docs/serving.md has examples):

* ``POST /v1/rank``: one user's candidates -> candidates sorted by score, with the model version.
* ``GET /healthz`` (process up), ``GET /readyz`` (model loaded, warm-up passed, not draining),
  ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` and ``/docs``.
* ``POST /v1/admin/reload``: re-read the artifact path given at start (a symlink flipped to a new export,
  or a folder replaced by ``harmonrank export``), verify and warm it up, then swap. Requests in flight finish
  on the model they started with; a broken artifact is refused (409) and the old model keeps serving.
  Guarded by a bearer token read from an environment variable; disabled when it is unset. ``SIGHUP`` does
  the same reload.

Every client mistake is a 4xx with a JSON body naming the JSON path of the first problems: 422 for a body
that is not valid JSON or does not fit the model's schema (unknown/missing objectives, non-finite or
out-of-range scores, wrong types, empty or too long candidate lists, duplicate ids), 413 for a body over the
size limit, 503 with ``Retry-After`` when more requests wait than the queue allows. No endpoint takes a file
path, and nothing is unpickled: the artifact is an ONNX graph plus JSON, verified by sha256.

Scoring runs on worker threads while the event loop parses the next requests; requests beyond ``max_queue``
parsing, waiting or running are shed with 503. The engine (``engine``, default ``auto``): the torch engine
scores one request at a time in one call of the network's inference form, whose fused kernel splits the
candidates over ``threads`` torch threads; ONNX Runtime scores up to ``threads`` requests at once, each one
single-threaded call, or chunks of a large one spread over the threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import prometheus_client
    from fastapi import FastAPI, Request
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
except ModuleNotFoundError as _err:  # pragma: no cover - the serve extra is missing
    from ..errors import MissingDependencyError

    raise MissingDependencyError(f"{_err.name} is needed to serve: pip install 'harmonrank[serve]'") from _err

from ..errors import ConfigError, HarmonRankError, MissingDependencyError
from ..export import ENGINES, Artifact, load_artifact
from ..threads import set_threads
from .parse import Parsed, parse_request, parse_with_pydantic
from .schema import MAX_PROBLEMS, ErrorResponse, Problem, RankModels, RankResponse

__all__ = ["LoadedModel", "ServeConfig", "ServiceState", "create_app"]

log = logging.getLogger("harmonrank.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MISSING = "__missing__"  # what the batch reader gives a null categorical value (data.iter_tables)
_PATHS = ("/v1/rank", "/v1/admin/reload", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError as err:
        raise MissingDependencyError(f"{module} is needed to serve: pip install 'harmonrank[serve]'") from err


@dataclass(frozen=True)
class ServeConfig:
    """Limits and knobs of the service (``harmonrank serve`` options)."""

    artifact: Path
    threads: int = 1
    max_candidates: int = 10_000
    max_body_bytes: int = 16 << 20
    max_queue: int = 256
    admin_token_env: str = "HARMONRANK_ADMIN_TOKEN"
    engine: str = "auto"  # "onnx", "torch" or "auto" (harmonrank.export.load_artifact)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}. Got {self.engine!r} instead.")
        for name in ("threads", "max_candidates", "max_body_bytes", "max_queue"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer. Got {value!r} instead.")


def _category(value: Any) -> str:
    """A JSON category value as the batch reader would see it after Arrow's cast to string."""
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Ranked:
    order: np.ndarray
    scores: np.ndarray
    unseen: dict[str, int]


@dataclass
class LoadedModel:
    """One verified, warmed-up artifact and the request models of its objectives and features."""

    artifact: Artifact
    models: RankModels
    version: str
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: Path, config: ServeConfig) -> LoadedModel:
        """Load (format, sha256), build the API models, and score a warm-up request; raises on any failure."""
        art = load_artifact(path, threads=config.threads, engine=config.engine)
        enc = art.encoder
        defaults = art.manifest["preference"]["default_weights"] if art.conditioned else None
        models = RankModels.build(art.objectives, tuple(enc.vocab), tuple(enc.numeric_mean), config.max_candidates,
                                  default_weights=defaults)
        model = cls(art, models, str(art.manifest["onnx_sha256"])[:12])
        warm = parse_with_pydantic(_json_bytes({"candidates": [
            {"id": i, "scores": dict.fromkeys(art.objectives, p)} for i, p in enumerate((0.0, 0.01, 0.5, 1.0))]}),
            models)
        if not isinstance(warm, Parsed):
            raise HarmonRankError(f"{path}: the warm-up request does not fit the model's own schema: {warm}")
        out = model.rank(warm)
        if out.scores.shape != (4,) or not np.all(np.isfinite(out.scores)):
            raise HarmonRankError(f"{path}: the warm-up request scored {out.scores!r}; expected 4 finite scores")
        return model

    def rank(self, req: Parsed) -> Ranked:
        """Score one valid request; a candidate's given feature values override the user's."""
        n = len(req.ids)
        m = self.models
        overrides = req.overrides
        rows = n if overrides is not None else 1
        feats: dict[str, np.ndarray] = {}
        for name in m.categorical:
            default = req.user.get(name)
            vals = [default] if overrides is None else [o.get(name, default) for o in overrides]
            feats[name] = np.array([_category(v) for v in vals], dtype=object)
        for name in m.numeric:
            default = req.user.get(name)
            vals = [default] if overrides is None else [o.get(name, default) for o in overrides]
            feats[name] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        cats, nums = self.artifact.encoder.encode_columns(feats, rows)
        if rows == 1:
            cats, nums = np.repeat(cats, n, axis=0), np.repeat(nums, n, axis=0)
        out = self.artifact.run(req.scores, cats, nums, req.weights)
        unseen = {name: int((cats[:, k] == 0).sum()) for k, name in enumerate(m.categorical)}
        return Ranked(np.argsort(-out, kind="stable"), out, unseen)


class _Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        pc = prometheus_client
        pc.disable_created_metrics()  # type: ignore[no-untyped-call] # no *_created series: they double the exposition for nothing
        self.pc = pc
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter("harmonrank_requests", "HTTP requests by path and status code",
                                   ["path", "code"], registry=r)
        self.errors = pc.Counter("harmonrank_request_errors", "HTTP responses with a 4xx/5xx code", ["code"],
                                 registry=r)
        self.latency = pc.Histogram("harmonrank_request_latency_seconds", "time from request to response, by path",
                                    ["path"], registry=r,
                                    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
                                             0.25, 0.5, 1.0, 2.5))
        self.candidates = pc.Counter("harmonrank_candidates_scored", "candidates scored", registry=r)
        self.unseen = pc.Counter("harmonrank_unseen_categories",
                                 "candidates whose categorical feature was unseen or missing (scored with id 0)",
                                 ["feature"], registry=r)
        self.inflight = pc.Gauge("harmonrank_rank_requests_inflight", "rank requests admitted and not answered",
                                 registry=r)
        self.shed = pc.Counter("harmonrank_rank_requests_shed", "rank requests refused with 503 (queue full)",
                               registry=r)
        self.reloads = pc.Counter("harmonrank_model_reloads", "model reload attempts by result", ["result"],
                                  registry=r)
        self.info = pc.Gauge("harmonrank_model_info", "the model being served (value 1)",
                             ["version", "ranker", "path", "engine"], registry=r)

    def set_model(self, model: LoadedModel) -> None:
        self.info.clear()
        self.info.labels(model.version, str(model.artifact.manifest.get("ranker")), str(model.artifact.path),
                         model.artifact.engine).set(1)


class ServiceState:
    """The model being served and what the endpoints share; ``reload`` swaps the model atomically."""

    def __init__(self, config: ServeConfig, model: LoadedModel | None = None) -> None:
        self.config = config
        self.model = model if model is not None else LoadedModel.load(config.artifact, config)
        self.metrics = _Metrics()
        self.metrics.set_model(self.model)
        workers = config.threads
        if self.model.artifact.engine == "torch":
            # the kernel splits each request over `threads` torch threads; one request scored at a time keeps
            # concurrent requests from starting one thread team each on the same cores
            set_threads(config.threads)
            workers = 1
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="harmonrank-score")
        self.admitted = 0
        self.draining = False
        self._reload_lock = threading.Lock()

    def admit(self) -> tuple[int, bytes] | None:
        """None if a rank request may proceed (then :meth:`release` it), else the 503 to answer."""
        if self.admitted >= self.config.max_queue:
            self.metrics.shed.inc()
            return 503, _error_bytes(f"{self.admitted} requests are queued (limit {self.config.max_queue}); "
                                     "retry shortly")
        self.admitted += 1
        self.metrics.inflight.inc()
        return None

    def release(self) -> None:
        self.admitted -= 1
        self.metrics.inflight.dec()

    def too_large(self, declared: str | None) -> tuple[int, bytes] | None:
        """The 413 for a declared Content-Length over the limit, else None."""
        if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return 413, _error_bytes(f"body of {int(declared):,} bytes is over the limit of "
                                     f"{self.config.max_body_bytes:,} bytes")
        return None

    async def rank(self, body: bytes) -> tuple[int, bytes]:
        """Status and JSON body of one rank request (validated before anything is scored)."""
        model = self.model  # this request finishes on this model, whatever a reload does meanwhile
        parsed = parse_request(body, model.models, self.config.max_candidates)
        if not isinstance(parsed, Parsed):
            first = parsed[0]
            return 422, _error_bytes(f"{len(parsed)} problem(s) in the request: {first.path}: {first.message}", parsed)
        ranked = await asyncio.get_running_loop().run_in_executor(self.pool, model.rank, parsed)
        order = ranked.order[:parsed.top_k] if parsed.top_k else ranked.order
        m = self.metrics
        m.candidates.inc(len(parsed.ids))
        unseen = 0
        for name, count in ranked.unseen.items():
            if count:
                m.unseen.labels(name).inc(count)
                unseen += count
        ids = parsed.ids
        scores = ranked.scores.astype(np.float64)[order].tolist()
        out = {"model_version": model.version, "request_id": parsed.request_id,
               "candidates": [{"id": ids[i], "score": x} for i, x in zip(order.tolist(), scores, strict=True)],
               "unseen_categories": unseen}
        return 200, _json_bytes(out)

    def reload(self) -> tuple[bool, str]:
        """Load the artifact path again and swap if it verifies and warms up: (swapped, message)."""
        with self._reload_lock:
            old = self.model
            try:
                new = LoadedModel.load(self.config.artifact, self.config)
            except Exception as err:  # any failure keeps the old model serving
                self.metrics.reloads.labels("refused").inc()
                log.warning("reload refused: %s; still serving %s", err, old.version)
                return False, f"refused: {err}; still serving model {old.version}"
            if new.version == old.version:
                self.metrics.reloads.labels("unchanged").inc()
                return True, f"model {old.version} unchanged"
            self.model = new
            self.metrics.set_model(new)
            self.metrics.reloads.labels("swapped").inc()
            log.warning("reloaded: model %s -> %s", old.version, new.version)
            return True, f"model {old.version} -> {new.version}"


def _error_bytes(detail: str, problems: list[Problem] | None = None) -> bytes:
    probs = problems or []
    body = ErrorResponse(detail=detail, problems=probs[:MAX_PROBLEMS], problem_count=len(probs))
    return _json_bytes(body.model_dump())


def _json_bytes(obj: Any) -> bytes:
    try:
        import orjson

        out: bytes = orjson.dumps(obj)
        return out
    except ModuleNotFoundError:  # pragma: no cover - orjson is in the serve extra
        import json

        return json.dumps(obj, separators=(",", ":")).encode()


class _MetricsMiddleware:
    """Counts every response by path and code and times it (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        label = path if path in _PATHS else "other"
        code = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                code[0] = int(message["status"])
            await send(message)

        try:
            if label == "/v1/rank" and scope.get("method") == "POST":
                await self._rank(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            m = self.state.metrics
            m.requests.labels(label, str(code[0])).inc()
            if code[0] >= 400:
                m.errors.labels(str(code[0])).inc()
            m.latency.labels(label).observe(time.perf_counter() - start)


    async def _rank(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/rank straight on ASGI: the same answers as the FastAPI route, without its per-request
        machinery (which cost about as much as scoring a 100-candidate request)."""
        state = self.state
        headers = dict(scope.get("headers") or [])
        refused = state.admit()
        if refused is not None:
            await _send(send, *refused, [(b"retry-after", b"1")])
            return
        try:
            declared = headers.get(b"content-length")
            too_large = state.too_large(declared.decode("latin-1") if declared is not None else None)
            if too_large is not None:
                await _send(send, *too_large)
                return
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > state.config.max_body_bytes:
                    await _send(send, 413, _error_bytes(f"body is over the limit of {state.config.max_body_bytes:,} "
                                                        "bytes"))
                    return
                chunks.append(chunk)
                more = bool(message.get("more_body", False))
            await _send(send, *await state.rank(b"".join(chunks)))
        finally:
            state.release()


async def _send(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(state: ServiceState) -> Any:
    """The FastAPI app over ``state`` (wrapped in the metrics middleware)."""
    cfg = state.config

    def error(code: int, detail: str, problems: list[Problem] | None = None,
              headers: dict[str, str] | None = None) -> Response:
        return Response(_error_bytes(detail, problems), status_code=code, media_type="application/json",
                        headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_hup() -> None:
            loop.run_in_executor(None, state.reload)

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        yield
        state.pool.shutdown(wait=True)

    app = FastAPI(title="harmonrank ranking service", version=importlib.metadata.version("harmonrank"),
                  description="Fuses per-objective probabilities of each candidate into one ranking score "
                              "(docs/serving.md).", lifespan=lifespan)

    error_responses: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorResponse, "description": "body larger than the limit"},
        422: {"model": ErrorResponse, "description": "not JSON, or does not fit the schema; problems name JSON paths"},
        503: {"model": ErrorResponse, "description": "too many requests queued: retry after the Retry-After seconds"},
    }

    @app.post("/v1/rank", response_model=RankResponse, responses=error_responses,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/RankRequest"}}}}})
    async def rank(request: Request) -> Response:
        """Rank one user's candidates: best first, with scores and the model version.

        (Served by the ASGI fast route in front of this app; this route gives the same answers.)"""
        refused = state.admit()
        if refused is not None:
            return Response(refused[1], status_code=refused[0], media_type="application/json",
                            headers={"Retry-After": "1"})
        try:
            code, body = state.too_large(request.headers.get("content-length")) or (0, b"")
            if not code:
                chunks, size = [], 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cfg.max_body_bytes:
                        code, body = 413, _error_bytes(f"body is over the limit of {cfg.max_body_bytes:,} bytes")
                        break
                    chunks.append(chunk)
                else:
                    code, body = await state.rank(b"".join(chunks))
            return Response(body, status_code=code, media_type="application/json")
        finally:
            state.release()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse, "description": "not ready (draining)"}})
    async def readyz() -> Response:
        """The model is loaded, its warm-up call passed, and the server is not draining."""
        if state.draining:
            return error(503, "shutting down")
        model = state.model
        return JSONResponse({"status": "ready", "model_version": model.version,
                             "ranker": model.artifact.manifest.get("ranker"), "engine": model.artifact.engine,
                             "objectives": list(model.models.objectives)})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        pc = state.metrics.pc
        return Response(pc.generate_latest(state.metrics.registry), media_type=pc.CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/reload", responses={
        401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
        403: {"model": ErrorResponse, "description": "reload is disabled (no token configured)"},
        409: {"model": ErrorResponse, "description": "the artifact was refused; the old model keeps serving"}})
    async def reload(request: Request) -> Response:
        """Re-read the artifact path given at start; swap if it verifies and warms up. Bearer token required."""
        token = os.environ.get(cfg.admin_token_env, "")
        if not token:
            return error(403, f"reload is disabled: start the server with ${cfg.admin_token_env} set")
        auth = request.headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode())):
            return error(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        ok, message = await asyncio.get_running_loop().run_in_executor(None, state.reload)
        if not ok:
            return error(409, message)
        return JSONResponse({"status": "ok", "detail": message, "model_version": state.model.version})

    def openapi() -> dict[str, Any]:
        """The schema of the current model's request (objectives and features are part of it)."""
        models = state.model.models
        schema: dict[str, Any] = get_openapi(title=app.title, version=app.version, description=app.description,
                                             routes=app.routes)
        req = models.request.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps.update(req.pop("$defs", {}))
        comps["RankRequest"] = req
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return _MetricsMiddleware(app, state)
