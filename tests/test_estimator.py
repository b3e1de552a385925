from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harmonrank.errors import ConfigError, HarmonRankError
from harmonrank.metrics import auc_sum
from harmonrank.models.formula import weighted_product
from harmonrank.rankers import RANKERS, FormulaRanker, load_ranker, make_ranker
from harmonrank.train import TrainConfig

FAST = TrainConfig(max_epochs=1, batch_size=4096)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_every_ranker_fits_predicts_and_round_trips(name: str, splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    opts = {"n_trials": 5} if name == "formula" else {"n_estimators": 20} if name == "lambdamart" else {}
    r = make_ranker(name, FAST, **opts).fit(train, valid=valid)
    s = r.predict(test)
    assert s.shape == (len(test),) and np.isfinite(s).all()
    assert 0.5 * len(test.objectives) < r.score(test) <= len(test.objectives)
    loaded = load_ranker(r.save(tmp_path / name))
    np.testing.assert_allclose(loaded.predict(test), s, rtol=1e-6, atol=1e-6)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))


def test_formula_search_beats_or_equals_equal_weights_on_valid(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    r = FormulaRanker(n_trials=25).fit(train, valid=valid)
    assert isinstance(r, FormulaRanker)
    equal = auc_sum(weighted_product(valid.scores, [1.0] * 6), valid.labels)
    assert r.best_value_ >= equal - 1e-12  # the first trial is the equal-weight product


def test_unseen_categories_map_to_unknown(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    r = make_ranker("harmonrank", FAST).fit(train, valid=valid)
    feats = dict(test.features)
    feats["u_device"] = np.array(["never-seen"] * len(test), dtype=object)
    s = r.predict(replace(test, features=feats))
    assert np.isfinite(s).all()
    enc = r.encoder_.transform(replace(test, features=feats))  # type: ignore[attr-defined]
    k = list(r.encoder_.vocab).index("u_device")  # type: ignore[attr-defined]
    assert (enc.categorical[:, k] == 0).all()


def test_errors(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="unknown ranker 'xgb'"):
        make_ranker("xgb")
    with pytest.raises(ConfigError, match="bad option"):
        make_ranker("formula", FAST, colour=1)
    with pytest.raises(HarmonRankError, match=r"no model\.json"):
        load_ranker(tmp_path)
    train, _, _ = splits
    with pytest.raises(HarmonRankError, match="needs labels"):
        make_ranker("formula", FAST).fit(replace(train, labels=None))


def test_predict_checks_the_data_matches_the_model(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    r = make_ranker("formula", FAST, n_trials=2).fit(train, valid=valid)
    feats = {k: v for k, v in test.features.items() if k != "u_device"}
    with pytest.raises(ConfigError, match="u_device"):
        r.predict(replace(test, features=feats))
    fewer = test.config.__class__(objectives=test.config.objectives[:2], categorical=test.config.categorical,
                                  numeric=test.config.numeric)
    with pytest.raises(ConfigError, match="trained on objectives"):
        r.predict(replace(test, config=fewer, scores=test.scores[:, :2]))


def test_lambdamart_gains_follow_the_auc_normalisation(splits) -> None:  # type: ignore[no-untyped-def]
    from harmonrank.rankers import LambdaMARTRanker

    train, _, _ = splits
    r = LambdaMARTRanker()
    eye = np.eye(len(train.objectives), dtype=int)  # one positive objective per row
    (labels,), gains = r._grades(train, [eye])
    pi = train.labels.mean(0)
    got = np.array(gains)[labels]
    want = 1 / (pi * (1 - pi))
    np.testing.assert_allclose(got / got.min(), want / want.min(), rtol=1e-9)  # a buy pair weighs 1/(pi(1-pi))
    with pytest.raises(ConfigError, match="grouping"):
        LambdaMARTRanker(grouping="user")  # type: ignore[arg-type]


def test_lambdamart_random_groups_make_the_seed_matter(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    a = make_ranker("lambdamart", replace(FAST, seed=0), n_estimators=30, group_sizes=(500,)).fit(train, valid=valid)
    b = make_ranker("lambdamart", replace(FAST, seed=1), n_estimators=30, group_sizes=(500,)).fit(train, valid=valid)
    assert not np.array_equal(a.predict(test), b.predict(test))
