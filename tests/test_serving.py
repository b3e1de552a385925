"""The HTTP ranking service, started as a real process on a free loopback port and called over HTTP.

Covers: scores equal to `harmonrank predict` on the same rows, every validation case (4xx with the JSON path,
never a 5xx), unseen categories, metrics, reload (good, broken, unauthorised), graceful shutdown with a
request in flight, and a bounded schemathesis fuzz run against the served OpenAPI schema.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clihelp import free_port, run
from harmonrank import TrainConfig, kernels, make_ranker
from harmonrank.export import export_ranker
from harmonrank.rankers import FormulaRanker

TOKEN = "test-token-123"
OBJ = ("click", "long_view", "like", "comment", "follow", "buy")


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def post(self, path: str, body: Any = None, *, content: bytes | None = None, **kw: Any) -> httpx.Response:
        if content is None:
            content = json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers={"content-type": "application/json",
                                                                     **kw.pop("headers", {})}, timeout=30, **kw)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)


@contextmanager
def serving(artifact: Path, log: Path, *args: str, token: str | None = TOKEN) -> Iterator[Server]:
    """`harmonrank serve` as a child process on a free port; stopped (SIGTERM, then kill) on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "HARMONRANK_ADMIN_TOKEN"}
    if token is not None:
        env["HARMONRANK_ADMIN_TOKEN"] = token
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harmonrank", "serve", "-a", str(artifact), "--port", str(port),
                                 "--log-level", "warning", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
            try:
                if server.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after 90 s: {log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def models(splits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """A trained HarmonRank run folder and its artifact, a formula artifact, and the test rows as Parquet."""
    train, valid, test = splits
    root = tmp_path_factory.mktemp("serving")
    ranker = make_ranker("harmonrank", TrainConfig(max_epochs=2, device="cpu")).fit(train, valid=valid)
    ranker.save(root / "run")
    export_ranker(ranker, root / "art_hr")
    export_ranker(FormulaRanker.fixed(train, {"click": 1.0, "buy": 2.0}), root / "art_formula")
    # 30 requests of the test split, with a row id as the candidate id
    keep = np.isin(test.request, np.unique(test.request)[:30])
    cols: dict[str, Any] = {"request_id": test.request[keep], "user_id": test.user[keep],
                            "row": np.flatnonzero(keep), "time": np.zeros(int(keep.sum()))}
    for j, m in enumerate(test.objectives):
        cols[f"p_{m}"] = test.scores[keep, j]
    for c, v in test.features.items():
        cols[c] = v[keep]
    pq.write_table(pa.table(cols), root / "rows.parquet")
    return {"root": root, "run": root / "run", "hr": root / "art_hr", "formula": root / "art_formula",
            "rows": root / "rows.parquet"}


@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[Server]:
    with serving(models["hr"], models["root"] / "server.log", "--max-candidates", "100", "--max-body-mb", "0.05") as s:
        yield s


def _candidate(i: int | str, p: float = 0.5, **scores: Any) -> dict[str, Any]:
    return {"id": i, "scores": {**dict.fromkeys(OBJ, p), **scores}}


def test_scores_equal_harmonrank_predict_for_the_same_rows(server: Server, models: dict[str, Path],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "pred.parquet"
    assert run(["predict", "-m", str(models["run"]), "-d", str(models["rows"]), "-o", str(out),
                "--keep", "row"]) == 0
    pred = pq.read_table(out).to_pydict()
    expected = dict(zip(pred["row"], pred["score"], strict=True))
    rows = pq.read_table(models["rows"]).to_pylist()
    feats = [c for c in rows[0] if c.startswith("u_")]
    by_request: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_request.setdefault(r["request_id"], []).append(r)
    for rid, cands in by_request.items():
        body = {"request_id": str(rid), "candidates": [
            {"id": r["row"], "scores": {m: r[f"p_{m}"] for m in OBJ}, "features": {c: r[c] for c in feats}}
            for r in cands]}
        resp = server.post("/v1/rank", body)
        assert resp.status_code == 200, resp.text
        got = resp.json()
        assert got["request_id"] == str(rid) and len(got["model_version"]) == 12
        ids = [c["id"] for c in got["candidates"]]
        scores = np.array([c["score"] for c in got["candidates"]])
        want = np.array([expected[i] for i in ids])
        assert np.all(np.abs(scores - want) <= np.maximum(1e-5, np.abs(want) * 2.0**-20)), np.abs(scores - want).max()
        assert np.all(np.diff(scores) <= 0)  # best first
        assert sorted(ids) == sorted(r["row"] for r in cands)


def test_top_k_user_features_and_unseen_categories(server: Server) -> None:
    cands = [_candidate(f"v{i}", click=i / 10, buy=1 - i / 10) for i in range(10)]
    full = server.post("/v1/rank", {"candidates": cands, "user": {"u_device": "never-seen-device"}}).json()
    top = server.post("/v1/rank", {"candidates": cands, "user": {"u_device": "never-seen-device"}, "top_k": 3}).json()
    assert top["candidates"] == full["candidates"][:3]
    assert full["unseen_categories"] == 10 * 5  # u_device unseen, the other four categoricals absent
    missing = server.post("/v1/rank", {"candidates": cands}).json()
    assert missing["candidates"] == full["candidates"]  # unseen and missing are both scored with id 0
    metrics = server.get("/metrics").text
    assert 'harmonrank_unseen_categories_total{feature="u_device"}' in metrics


BIG_IDS = [_candidate(i) for i in range(101)]


@pytest.mark.parametrize(("body", "code", "path", "kind"), [
    ({"candidates": [{"id": 1, "scores": {**dict.fromkeys(OBJ, 0.5), "clik": 0.1}}]}, 422,
     "$.candidates[0].scores.clik", "extra_forbidden"),
    ({"candidates": [{"id": 1, "scores": dict.fromkeys(OBJ[:-1], 0.5)}]}, 422, "$.candidates[0].scores.buy", "missing"),
    (b'{"candidates": [{"id": 1, "scores": {"click": NaN, "long_view": 0.5, "like": 0.5, "comment": 0.5, '
     b'"follow": 0.5, "buy": 0.5}}]}', 422, "$.candidates[0].scores.click", "finite_number"),
    (b'{"candidates": [{"id": 1, "scores": {"click": Infinity, "long_view": 0.5, "like": 0.5, "comment": 0.5, '
     b'"follow": 0.5, "buy": 0.5}}]}', 422, "$.candidates[0].scores.click", None),
    ({"candidates": [_candidate(1), _candidate(2, like=1.5)]}, 422, "$.candidates[1].scores.like", "less_than_equal"),
    ({"candidates": [_candidate(1, buy=-0.1)]}, 422, "$.candidates[0].scores.buy", "greater_than_equal"),
    ({"candidates": [_candidate(1, click="0.5")]}, 422, "$.candidates[0].scores.click", "float_type"),
    ({"candidates": [_candidate(1, click=True)]}, 422, "$.candidates[0].scores.click", "float_type"),
    ({"candidates": [_candidate("a"), _candidate("b"), _candidate("a")]}, 422, "$.candidates[2].id", "duplicate_id"),
    ({"candidates": []}, 422, "$.candidates", "too_short"),
    ({"candidates": BIG_IDS}, 422, "$.candidates", "too_long"),
    ({"candidates": {"id": 1}}, 422, "$.candidates", "list_type"),
    ({"candidates": [_candidate(1.5)]}, 422, "$.candidates[0].id", None),
    ({"candidates": [_candidate("")]}, 422, "$.candidates[0].id", None),
    ({"candidates": [_candidate(1)], "top_k": 0}, 422, "$.top_k", None),
    ({"candidates": [_candidate(1)], "user": {"u_tenure_days": "long"}}, 422, "$.user.u_tenure_days", None),
    ({"candidates": [_candidate(1)], "extra": 1}, 422, "$.extra", "extra_forbidden"),
    ({"candidates": [_candidate(1)], "weights": {"buy": 1}}, 422, "$.weights", "extra_forbidden"),  # not conditioned
    ({}, 422, "$.candidates", "missing"),
    ([1, 2], 422, "$", "model_type"),
    (b'{"candidates": [', 422, "$", "json_invalid"),
    (b"", 422, "$", "json_invalid"),
    (b"\xff\xfe not utf-8", 422, "$", "json_invalid"),
    (b" " * 60_000 + b"{}", 413, None, None),
])
def test_bad_requests_get_4xx_with_the_json_path(server: Server, body: Any, code: int, path: str | None,
                                                  kind: str | None) -> None:
    resp = server.post("/v1/rank", content=body if isinstance(body, bytes) else json.dumps(body).encode())
    assert resp.status_code == code, resp.text
    err = resp.json()
    assert err["detail"]
    if path is not None:
        assert err["problems"][0]["path"] == path, err
        assert err["problem_count"] >= 1
    if kind is not None:
        assert err["problems"][0]["type"] == kind, err


def test_health_readiness_metrics_and_schema(server: Server) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready["status"] == "ready" and ready["objectives"] == list(OBJ)
    assert ready["engine"] == ("torch" if kernels.available() else "onnx")  # --engine auto
    server.post("/v1/rank", {"candidates": [_candidate(1)]})
    server.post("/v1/rank", {"candidates": []})
    text = server.get("/metrics").text
    for needle in ('harmonrank_requests_total{code="200",path="/v1/rank"}',
                   'harmonrank_requests_total{code="422",path="/v1/rank"}',
                   'harmonrank_request_errors_total{code="422"}',
                   'harmonrank_request_latency_seconds_bucket{le="0.005",path="/v1/rank"}',
                   "harmonrank_candidates_scored_total", f'version="{ready["model_version"]}"'):
        assert needle in text, needle
    schema = server.get("/openapi.json").json()
    scores = schema["components"]["schemas"]["Scores"]
    assert sorted(scores["required"]) == sorted(OBJ) and scores["additionalProperties"] is False
    assert server.get("/nowhere").status_code == 404
    assert server.get("/v1/rank").status_code == 405


def test_onnx_engine_scores_like_the_torch_engine(server: Server, models: dict[str, Path]) -> None:
    """The same artifact served through ONNX Runtime and through the torch engine (the default where the
    fused kernel builds): the same ranking and scores within float32 rounding."""
    g = np.random.default_rng(3)
    bodies = [{"user": {"u_device": dev}, "candidates": [
        {"id": i, "scores": {m: float(g.choice([0.0, 1.0, g.random()])) for m in OBJ}} for i in range(n)]}
        for dev, n in (("never-seen", 1), ("android", 37), ("ios", 600))]
    with serving(models["hr"], models["root"] / "onnx.log", "--engine", "onnx", "--threads", "2",
                 "--max-candidates", "1000") as onnx:
        assert onnx.get("/readyz").json()["engine"] == "onnx"
        for body in bodies[:2]:  # the module's server takes at most 100 candidates
            a, b = server.post("/v1/rank", body).json(), onnx.post("/v1/rank", body).json()
            sa = {c["id"]: c["score"] for c in a["candidates"]}
            sb = {c["id"]: c["score"] for c in b["candidates"]}
            assert a["model_version"] == b["model_version"] and sa.keys() == sb.keys()
            assert all(abs(sa[i] - sb[i]) <= max(1e-5, abs(sb[i]) * 2.0**-20) for i in sa)
        assert onnx.post("/v1/rank", bodies[2]).status_code == 200  # a request split over 2 threads


def test_schemathesis_fuzz_finds_no_server_error_or_schema_violation(server: Server) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    # duplicate ids are schema-valid but refused by design (JSON Schema cannot say "unique id within the list"),
    # so the positive-acceptance check is off; every other check (5xx, response schema, status codes,
    # negative data rejection, content types) is on
    proc = subprocess.run([str(exe), "run", f"{server.url}/openapi.json", "--checks", "all",
                           "--exclude-checks", "positive_data_acceptance", "-n", "40", "--seed", "7",
                           "--generation-database", "none", "--request-timeout", "20",
                           "-H", f"Authorization: Bearer {TOKEN}"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout
    assert server.proc.poll() is None  # the server survived


def test_reload_swaps_models_refuses_broken_ones_and_needs_the_token(models: dict[str, Path], tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.symlink_to(models["hr"], target_is_directory=True)
    with serving(current, tmp_path / "log") as srv:
        body = {"candidates": [_candidate(1, click=0.2), _candidate(2, buy=0.9)]}
        v1 = srv.post("/v1/rank", body).json()["model_version"]
        assert srv.post("/v1/admin/reload").status_code == 401
        assert srv.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        same = srv.post("/v1/admin/reload", headers=auth)
        assert same.status_code == 200 and "unchanged" in same.json()["detail"]
        # a new artifact behind the same path: swapped, responses carry the new version
        current.unlink()
        current.symlink_to(models["formula"], target_is_directory=True)
        ok = srv.post("/v1/admin/reload", headers=auth)
        assert ok.status_code == 200, ok.text
        v2 = ok.json()["model_version"]
        assert v2 != v1 and srv.post("/v1/rank", body).json()["model_version"] == v2
        # a broken artifact: refused with 409, the previous model keeps serving
        broken = tmp_path / "broken"
        shutil.copytree(models["hr"], broken)
        (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:-10])
        current.unlink()
        current.symlink_to(broken, target_is_directory=True)
        bad = srv.post("/v1/admin/reload", headers=auth)
        assert bad.status_code == 409 and "sha256" in bad.json()["detail"] and v2 in bad.json()["detail"]
        assert srv.post("/v1/rank", body).json()["model_version"] == v2
        assert srv.get("/readyz").json()["model_version"] == v2
        text = srv.get("/metrics").text
        assert 'harmonrank_model_reloads_total{result="refused"} 1.0' in text
        assert 'harmonrank_model_reloads_total{result="swapped"} 1.0' in text
        # SIGHUP reloads too: back to the HarmonRank artifact
        current.unlink()
        current.symlink_to(models["hr"], target_is_directory=True)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while srv.get("/readyz").json()["model_version"] != v1:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.2)


def test_sigterm_lets_a_request_in_flight_finish(models: dict[str, Path], tmp_path: Path) -> None:
    with serving(models["hr"], tmp_path / "log", token=None) as srv:
        assert srv.post("/v1/admin/reload", headers={"Authorization": "Bearer x"}).status_code == 403
        body = json.dumps({"candidates": [_candidate(i) for i in range(20)]}).encode()
        head = (f"POST /v1/rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(head + body[:40])  # the request is in flight: headers and part of the body sent
            time.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert srv.proc.poll() is None, "the server exited with a request in flight"
            sock.sendall(body[40:])
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["candidates"]) == 20
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown, as a process killed by it would
        assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_serve_refuses_a_broken_artifact_before_binding(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken"
    shutil.copytree(models["formula"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["onnx_sha256"] = "0" * 64
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert run(["serve", "-a", str(broken), "--port", str(free_port())]) == 2
    assert "sha256" in capsys.readouterr().err


def test_fast_parser_accepts_only_what_pydantic_accepts_and_gives_the_same_values() -> None:
    from harmonrank.serving.parse import Parsed, parse_fast, parse_with_pydantic
    from harmonrank.serving.schema import RankModels

    models = RankModels.build(OBJ, ("u_device", "u_city_tier"), ("u_tenure_days",), max_candidates=5)
    ok = _candidate
    bodies: list[Any] = [
        {"candidates": [ok(1), ok("b")]},
        {"candidates": [ok(1, click=0, buy=1)], "top_k": 1, "request_id": "r"},
        {"candidates": [ok(1)], "user": {"u_device": "ios", "u_city_tier": 3, "u_tenure_days": 5, "zzz": [1]}},
        {"candidates": [{**ok(1), "features": {"u_device": None, "u_tenure_days": 2.5}}, ok(2)],
         "user": {"u_device": True}},
        {"candidates": [{**ok(1), "features": None}]},
        {"candidates": [ok(1), ok("1")]},  # duplicate once stringified
        {"candidates": [ok(True)]}, {"candidates": [ok(1.0)]}, {"candidates": [ok(2**63)]}, {"candidates": [ok("")]},
        {"candidates": [ok(1, click=True)]}, {"candidates": [ok(1, click="0.1")]}, {"candidates": [ok(1, click=1.01)]},
        {"candidates": [ok(1, click=None)]}, {"candidates": [{"id": 1, "scores": {**dict.fromkeys(OBJ, 0.5), "x": 1}}]},
        {"candidates": [{"id": 1, "scores": dict.fromkeys(OBJ[1:], 0.5)}]},
        {"candidates": [{**ok(1), "extra": 1}]}, {"candidates": [ok(i) for i in range(6)]}, {"candidates": []},
        {"candidates": [ok(1)], "top_k": True}, {"candidates": [ok(1)], "top_k": 0}, {"candidates": [ok(1)], "x": 1},
        {"candidates": [ok(1)], "user": {"u_tenure_days": True}}, {"candidates": [ok(1)], "user": {"u_device": 1.5}},
        {"candidates": [ok(1)], "user": {"u_tenure_days": 10**30}}, {"candidates": [ok(1)], "user": []},
        {"candidates": [ok(1)], "request_id": 5}, [ok(1)], "x", None,
    ]
    raw = [json.dumps(b).encode() for b in bodies]
    raw += [b"{", b"\xff", b'{"candidates": [{"id": 1, "scores": {"click": NaN}}]}']
    accepted = 0
    for body in raw:
        fast, ref = parse_fast(body, models, 5), parse_with_pydantic(body, models)
        if fast is None:
            continue
        accepted += 1
        assert isinstance(ref, Parsed), (body, ref)
        assert (fast.request_id, fast.top_k, fast.ids, fast.user, fast.overrides) == \
            (ref.request_id, ref.top_k, ref.ids, ref.user, ref.overrides), body
        assert np.array_equal(fast.scores, ref.scores) and fast.scores.dtype == np.float32
    # the five valid bodies at the top, and 10**30 as a numeric feature (orjson reads it as a float; pydantic agrees)
    assert accepted == 6


def test_a_request_admitted_before_a_reload_finishes_on_the_old_model(models: dict[str, Path], tmp_path: Path) -> None:
    import asyncio
    import threading

    from harmonrank.serving import ServeConfig, ServiceState

    current = tmp_path / "current"
    current.symlink_to(models["hr"], target_is_directory=True)
    state = ServiceState(ServeConfig(artifact=current))
    old = state.model.version
    gate = threading.Event()
    state.pool.submit(gate.wait)  # the only scoring thread is busy: the next request waits behind it
    body = json.dumps({"candidates": [_candidate(1), _candidate(2, buy=0.9)]}).encode()

    async def scenario() -> tuple[int, bytes]:
        task = asyncio.create_task(state.rank(body))
        await asyncio.sleep(0.2)  # parsed and queued for scoring on the model it started with
        current.unlink()
        current.symlink_to(models["formula"], target_is_directory=True)
        swapped, message = await asyncio.get_running_loop().run_in_executor(None, state.reload)
        assert swapped and state.model.version != old, message
        gate.set()
        return await task

    code, out = asyncio.run(scenario())
    assert code == 200 and json.loads(out)["model_version"] == old
    code, out = asyncio.run(state.rank(body))
    assert json.loads(out)["model_version"] == state.model.version != old
    state.pool.shutdown()
