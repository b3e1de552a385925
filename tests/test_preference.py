"""Preference-conditioned rankers: objective weights as an input, chosen at prediction time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonrank import ConfigError, TrainConfig, make_ranker
from harmonrank.export import export_ranker
from harmonrank.metrics import auc

FAST = TrainConfig(max_epochs=3, device="cpu", seed=0)


@pytest.fixture(scope="module")
def conditioned(splits):  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    return make_ranker("harmonrank_pref", FAST).fit(train, valid=valid)


def test_the_weights_move_the_ranking_towards_the_objective_they_favour(conditioned, splits) -> None:  # type: ignore[no-untyped-def]
    _, _, test = splits
    names = test.objectives
    buy, click = names.index("buy"), names.index("click")
    heavy_buy = conditioned.predict(test, weights={m: (1.0 if m == "buy" else 0.0) for m in names})
    heavy_click = conditioned.predict(test, weights={m: (1.0 if m == "click" else 0.0) for m in names})
    assert auc(heavy_buy, test.labels[:, buy]) > auc(heavy_click, test.labels[:, buy])
    assert auc(heavy_click, test.labels[:, click]) > auc(heavy_buy, test.labels[:, click])


def test_default_weights_are_the_training_ones_and_missing_names_keep_them(conditioned, splits) -> None:  # type: ignore[no-untyped-def]
    _, _, test = splits
    base = conditioned.predict(test)
    np.testing.assert_allclose(conditioned.predict(test, weights={}), base, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conditioned.predict(test, weights={"buy": 1.0}), base, rtol=1e-6, atol=1e-6)
    doubled = conditioned.predict(test, weights=dict.fromkeys(test.objectives, 2.0))  # scale-free: normalised
    np.testing.assert_allclose(doubled, base, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("weights", "match"), [
    ({"bye": 1.0}, "unknown objective"),
    ({"buy": -1.0}, "finite and >= 0"),
    ({"buy": float("nan")}, "finite and >= 0"),
    ({m: 0.0 for m in ("click", "long_view", "like", "comment", "follow", "buy")}, "at least one"),
])
def test_bad_weights_are_refused(conditioned, splits, weights, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        conditioned.predict(splits[2], weights=weights)


def test_training_draws_reproducible_weights_and_fixed_rankers_refuse_weights(splits) -> None:  # type: ignore[no-untyped-def]
    from harmonrank.train import Trainer

    train, valid, test = splits
    fixed = make_ranker("one_step_rank", TrainConfig(max_epochs=1, device="cpu")).fit(train, valid=valid)
    with pytest.raises(ConfigError, match="not preference-conditioned"):
        fixed.predict(test, weights={"buy": 1.0})
    cfg = TrainConfig(preference_alpha=0.5, preference_vertex_prob=0.3, seed=3)
    t = Trainer(torch.nn.Linear(1, 1), torch.nn.Identity(), cfg, (1.0,) * 6)
    draws = np.stack([t.preference(e, k).numpy() for e in range(3) for k in range(200)])
    again = np.stack([t.preference(e, k).numpy() for e in range(3) for k in range(200)])
    np.testing.assert_array_equal(draws, again)  # seeded by (seed, epoch, step): the same on resume and every rank
    np.testing.assert_allclose(draws.sum(1), 1.0, rtol=1e-6)
    vertices = (draws.max(1) > 1 - 1e-6).mean()
    assert 0.15 < vertices < 0.35  # ~ vertex_prob * 6/7 (the equal point is the 7th choice)
    with pytest.raises(ConfigError, match="preference_alpha"):
        TrainConfig(preference_alpha=0.0)


def test_one_step_baseline_is_conditioned_too(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    base = make_ranker("one_step_rank_pref", TrainConfig(max_epochs=1, device="cpu")).fit(train, valid=valid)
    a = base.predict(test, weights={"buy": 5.0})
    b = base.predict(test, weights={"click": 5.0})
    assert not np.allclose(a, b)


def test_exported_conditioned_model_takes_the_weights_and_serves_them(conditioned, splits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from harmonrank.export import load_artifact
    from test_serving import _candidate, serving

    test = splits[2]
    art = load_artifact(export_ranker(conditioned, tmp_path / "art"))
    assert art.conditioned and [i["name"] for i in art.manifest["inputs"]][-1] == "weights"
    feeds = art.encode(test)
    for weights in ({}, {"buy": 3.0}, {"click": 1.0, "buy": 0.0, "follow": 2.0}):
        want = conditioned.predict(test, weights=weights)
        got = art.run(feeds["scores"], feeds["categorical"], feeds["numeric"],
                      conditioned.preference_vector(weights).numpy()).astype(np.float64)
        assert np.all(np.abs(got - want) <= np.maximum(1e-5, np.abs(want) * 2.0**-20)), np.abs(got - want).max()
    objectives = test.objectives
    with serving(tmp_path / "art", tmp_path / "log") as srv:
        cands = [_candidate(i, click=0.05 + 0.09 * i, buy=0.9 - 0.09 * i) for i in range(10)]
        by_buy = srv.post("/v1/rank", {"candidates": cands, "weights": {m: float(m == "buy") for m in objectives}})
        by_click = srv.post("/v1/rank", {"candidates": cands, "weights": {"click": 1.0, "buy": 0.0}})
        assert by_buy.status_code == by_click.status_code == 200, by_buy.text
        top_buy, top_click = by_buy.json()["candidates"][0]["id"], by_click.json()["candidates"][0]["id"]
        assert top_buy < top_click  # buy-heavy favours the high-p_buy candidates (small ids), click-heavy the others
        zero = srv.post("/v1/rank", {"candidates": cands, "weights": dict.fromkeys(objectives, 0.0)})
        assert zero.status_code == 422 and zero.json()["problems"][0]["path"] == "$.weights"
        bad = srv.post("/v1/rank", {"candidates": cands, "weights": {"bye": 1.0}})
        assert bad.status_code == 422 and bad.json()["problems"][0]["path"] == "$.weights.bye"
        neg = srv.post("/v1/rank", {"candidates": cands, "weights": {"buy": -1}})
        assert neg.status_code == 422 and neg.json()["problems"][0]["path"] == "$.weights.buy"


def test_saved_conditioned_ranker_scores_a_file_for_chosen_weights(conditioned, sim_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from clihelp import run
    from harmonrank import load_ranker, read_table
    from harmonrank import simulator_config as sim_cfg

    conditioned.save(tmp_path / "run")
    again = load_ranker(tmp_path / "run")
    table = read_table(sim_path, sim_cfg())
    np.testing.assert_array_equal(again.predict(table, weights={"buy": 3.0}),
                                  conditioned.predict(table, weights={"buy": 3.0}))
    out = tmp_path / "scores.parquet"
    assert run(["predict", "-m", str(tmp_path / "run"), "-d", str(sim_path), "-o", str(out), "--weights",
                "buy=3"]) == 0
    got = pq.read_table(out).column("score").to_numpy()
    np.testing.assert_allclose(got, again.predict(table, weights={"buy": 3.0}), rtol=1e-6, atol=1e-6)


def test_evaluate_ranks_for_and_judges_by_the_given_weights(conditioned, sim_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from clihelp import run
    from harmonrank import read_table
    from harmonrank import simulator_config as sim_cfg
    from harmonrank.metrics import auc_sum

    conditioned.save(tmp_path / "run")
    out = tmp_path / "eval.json"
    assert run(["evaluate", "-m", str(tmp_path / "run"), "-d", str(sim_path), "--weights", "buy=3",
                "--json", str(out)]) == 0
    table = read_table(sim_path, sim_cfg())
    want = auc_sum(conditioned.predict(table, weights={"buy": 3.0}), table.labels, (1, 1, 1, 1, 1, 3))
    assert json.loads(out.read_text())["auc_sum"] == pytest.approx(want, abs=1e-9)
