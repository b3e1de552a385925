"""The `auto` ranker: HarmonRank only when its validation gain over the one-step net is above the noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score as sk_auc

from clihelp import run
from harmonrank import ConfigError, TrainConfig
from harmonrank.metrics import auc_sum
from harmonrank.rankers import AutoRanker, NeuralRanker, choose_two_step, load_ranker, make_ranker, request_keys


def _requests(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.integers(0, n // 8, n))


def test_rules_keep_harmonrank_when_it_is_better_and_the_cheap_net_otherwise() -> None:
    rng = np.random.default_rng(0)
    n = 6_000
    y = (rng.random((n, 3)) < 0.2).astype(float)
    req = _requests(n, rng)
    signal = y @ np.array([1.0, 1.0, 1.0])
    weak, strong = signal + rng.normal(0, 2.0, n), signal + rng.normal(0, 0.5, n)
    for rule in ("gain", "ci"):
        clear = choose_two_step(strong, weak, y, req, rule=rule)
        assert clear.chosen == "harmonrank" and clear.low > 0 and clear.rule == rule
        # the other way round, and a tie (identical scores: gain and interval 0 up to rounding) keep the cheap net
        assert choose_two_step(weak, strong, y, req, rule=rule).chosen == "one_step_rank"
        tie = choose_two_step(weak, weak.copy(), y, req, rule=rule)
        assert tie.chosen == "one_step_rank" and max(abs(tie.gain), abs(tie.low), abs(tie.high)) < 1e-12
    # the gain is the AUC-sum difference, checked against scikit-learn's AUC
    ref = sum(sk_auc(y[:, m], strong) - sk_auc(y[:, m], weak) for m in range(3))
    assert clear.gain == pytest.approx(ref, abs=1e-12)
    assert clear.valid_auc_sum["harmonrank"] == pytest.approx(auc_sum(strong, y), abs=1e-12)
    # one positive moved up: a real gain that lives in one request. "gain" keeps HarmonRank; "ci" does not, as
    # the resamples without that request (about 37% of them) see no difference
    lifted = weak.copy()
    i = int(np.flatnonzero(y[:, 0])[0])
    lifted[i] += 0.5
    small_gain = choose_two_step(lifted, weak, y, req)
    assert small_gain.gain > 0 and small_gain.chosen == "harmonrank"
    small_ci = choose_two_step(lifted, weak, y, req, rule="ci")
    assert small_ci.gain == small_gain.gain and abs(small_ci.low) < 1e-12 and small_ci.chosen == "one_step_rank"
    with pytest.raises(ConfigError, match="rule must be one of gain, ci"):
        choose_two_step(weak, strong, y, req, rule="best")
    # a modest gain (independent noise, sd 1.0 vs 1.15): the interval is far wider on a small validation set
    sels = {}
    for n_val in (400, 60_000):
        yv = (rng.random((n_val, 3)) < 0.2).astype(float)
        sig = yv.sum(1)
        sels[n_val] = choose_two_step(sig + rng.normal(0, 1.0, n_val), sig + rng.normal(0, 1.15, n_val), yv,
                                      _requests(n_val, rng), rule="ci")
    assert sels[400].high - sels[400].low > 5 * (sels[60_000].high - sels[60_000].low)
    assert sels[60_000].chosen == "harmonrank"


def test_auto_trains_both_keeps_one_and_saves_it_as_that_ranker(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    cfg = TrainConfig(max_epochs=2, batch_size=2048, seed=4)
    auto = make_ranker("auto", cfg)
    assert isinstance(auto, AutoRanker)
    auto.fit(train, valid=valid, run_dir=tmp_path / "run")
    # a candidate is the ranker trained alone with the same knobs (same seed -> same model)
    alone = make_ranker("one_step_rank", cfg).fit(train, valid=valid)
    np.testing.assert_array_equal(alone.predict(test), auto.candidates_["one_step_rank"].predict(test))
    sel = auto.selection_
    cands = auto.candidates_
    ref = choose_two_step(cands["harmonrank"].predict(valid), cands["one_step_rank"].predict(valid), valid.labels,
                          request_keys(valid.request), weights=valid.config.objective_weights, random_state=4)
    assert sel == ref and auto.chosen_ is auto.candidates_[sel.chosen]
    np.testing.assert_array_equal(auto.predict(test), auto.chosen_.predict(test))
    # saved as the kept ranker (predict/export/serve read it unchanged), with the decision in model.json
    auto.save(tmp_path / "run")
    loaded = load_ranker(tmp_path / "run")
    assert isinstance(loaded, NeuralRanker) and loaded.name == sel.chosen
    np.testing.assert_allclose(loaded.predict(test), auto.predict(test), rtol=0, atol=1e-6)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["selection"]["chosen"] == sel.chosen and meta["selection"]["gain"] == pytest.approx(sel.gain)
    for name in ("one_step_rank", "harmonrank"):  # both candidates kept, either deployable
        other = load_ranker(tmp_path / "run" / "candidates" / name)
        np.testing.assert_allclose(other.predict(test), auto.candidates_[name].predict(test), rtol=0, atol=1e-6)


def test_train_auto_says_what_it_kept_and_takes_a_rule(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["train", "-d", str(sim_path), "-o", str(tmp_path / "m"), "--epochs", "1", "--threads", "1", "-r",
                "auto"]) == 0
    out = capsys.readouterr()
    assert "auto: training candidate one_step_rank" in out.err and "auto: training candidate harmonrank" in out.err
    assert "auto: kept " in out.out
    sel = json.loads((tmp_path / "m" / "model.json").read_text())["selection"]
    assert load_ranker(tmp_path / "m").name == sel["chosen"] and sel["rule"] == "gain"
    assert sel["chosen"] == ("harmonrank" if sel["gain"] > 0 else "one_step_rank")
    assert run(["train", "-d", str(sim_path), "-o", str(tmp_path / "c"), "--epochs", "1", "--threads", "1",
                "-r", "auto", "--auto-rule", "ci"]) == 0
    sel_ci = json.loads((tmp_path / "c" / "model.json").read_text())["selection"]
    assert sel_ci["rule"] == "ci" and sel_ci["gain"] == sel["gain"]  # same runs, same numbers, other rule
    assert sel_ci["chosen"] == ("harmonrank" if sel_ci["low"] > 0 else "one_step_rank")
    capsys.readouterr()
    assert run(["train", "-d", str(sim_path), "-o", str(tmp_path / "x"), "-r", "harmonrank", "--auto-rule", "ci"]) == 2
    assert "--auto-rule applies to --ranker auto" in capsys.readouterr().err


def test_request_keys_name_a_request_the_same_wherever_its_rows_are() -> None:
    ids = np.array([7, 3, 7, 12, 3, 3])
    keys = request_keys(ids)
    assert keys.dtype == np.int64 and len(np.unique(keys)) == 3
    assert (keys[ids == 7] == keys[0]).all() and keys[0] != keys[1]
    # the same ids in another array, split or as text, get the same keys (so ranks and row groups agree)
    np.testing.assert_array_equal(np.concatenate([request_keys(ids[:3]), request_keys(ids[3:])]), keys)
    np.testing.assert_array_equal(request_keys(ids.astype(str)), keys)


def test_auto_refuses_to_resume_a_single_rankers_run(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["train", "-d", str(sim_path), "-o", str(tmp_path / "m"), "--epochs", "1", "--threads", "1"]
    assert run([*args, "--ranker", "one_step_bce"]) == 0
    capsys.readouterr()
    assert run([*args, "--resume", "-r", "auto"]) == 2
    assert "holds a checkpoint of 'one_step_bce', not of auto" in capsys.readouterr().err
    assert run([*args, "--resume", "--ranker", "one_step_bce"]) == 0


def test_save_extra_may_not_replace_model_keys(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = make_ranker("formula", n_trials=2).fit(splits[0], valid=splits[1])
    with pytest.raises(ConfigError, match=r"may not replace model\.json's own key"):
        r.save(tmp_path, extra={"kind": "neural"})
    assert json.loads(r.save(tmp_path, extra={"note": 1}).joinpath("model.json").read_text())["note"] == 1
