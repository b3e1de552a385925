"""A live-streaming e-commerce simulator: users, streamers, requests, labels, upstream predictions.

The generative story (docs/simulator.md tells it in full):

1. **World.** Users with demographics, activity, purchase power, tenure and interests over streamer
   categories; streamers with a category, price level, popularity, content quality and a selling-vs-chatting
   style. Hidden user traits (buying, social and engagement propensity) depend partly on the observable
   features, so personalised features carry signal.
2. **Requests.** Users arrive over ``days`` days in time order; each request holds 20-100 candidate live
   rooms drawn from the user's interests and streamer popularity.
3. **Truth.** Three shared latent factors per impression (engagement, social, commerce) drive a funnel:
   ``click`` (entering the room) and, conditional on entering, ``long_view, like, comment, follow, buy``.
   ``true_<m>`` = P(click) * P(m | click), exactly the marginal probability of the label. Base rates are hit
   by calibrating intercepts on a pilot sample. ``correlation`` mixes shared vs. objective-own factors.
4. **Labels.** Drawn in the funnel: a non-click row has every label 0; within a click, the conditional labels
   are drawn with a Gaussian copula (commerce pair: comment/buy, social trio: long_view/like/follow), which
   leaves every marginal exact and adds the within-click dependence seen in real logs.
5. **Upstream predictions.** ``p_<m>`` is a miscalibrated, noisy estimate of ``true_<m>``: noise that is
   partly shared across objectives (one upstream model's error), and reliability and calibration that
   differ by user segment (new / low-activity users' purchase predictions are worse, iOS is over-calibrated
   on buy ...). That heterogeneity is what personalised fusion can learn.

Everything is vectorised numpy, seeded by one integer, and streamed to Parquet in row groups.
"""

from __future__ import annotations

import logging
import math
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import check_keys
from ..errors import ConfigError
from ..features import logit
from ..io import AtomicTableWriter

__all__ = ["EXTRA_OBJECTIVES", "OBJECTIVES", "SimulatorConfig", "simulate", "simulate_table"]

log = logging.getLogger(__name__)

OBJECTIVES = ("click", "long_view", "like", "comment", "follow", "buy")
# further objectives, off by default (``extra_objectives``): the number-of-objectives knob (6 -> up to 10)
EXTRA_OBJECTIVES = ("share", "gift", "add_cart", "coupon")
_COMMERCE = ("comment", "buy", "gift", "add_cart", "coupon")  # within a click, these share one copula normal

AGE_GROUPS = ("18-24", "25-30", "31-40", "41-50", "50+")
GENDERS = ("female", "male")
CITY_TIERS = ("tier1", "tier2", "tier3", "tier4")
ACTIVITY = ("low", "mid", "high")
DEVICES = ("android_low", "android_high", "ios")
CATEGORIES = ("fashion", "beauty", "food", "electronics", "home", "games", "music", "chat", "outdoor",
              "kids", "jewelry", "books")
# how much a category is about selling (1) vs chatting/entertainment (0)
_SELLING = np.array([0.9, 0.9, 0.8, 0.85, 0.8, 0.2, 0.15, 0.05, 0.5, 0.75, 0.9, 0.6])

DEFAULT_RATES = {"click": 0.08, "long_view": 0.035, "like": 0.012, "comment": 0.006, "follow": 0.004,
                 "buy": 0.003, "share": 0.005, "gift": 0.001, "add_cart": 0.004, "coupon": 0.002}
# loadings of each objective's conditional logit on the shared (engage, social, commerce) factors
_LOADINGS = {
    "click": (1.0, 0.15, 0.25),
    "long_view": (0.7, 0.6, 0.1),
    "like": (0.6, 0.6, 0.0),
    "comment": (0.2, 0.7, 0.6),
    "follow": (0.3, 1.0, 0.1),
    "buy": (0.3, 0.1, 1.3),
    "share": (0.5, 0.8, 0.0),
    "gift": (0.2, 0.8, 0.8),
    "add_cart": (0.4, 0.0, 1.1),
    "coupon": (0.6, 0.0, 0.8),
}
# upstream prediction noise (std on the logit scale) per objective at noise = 1
_NOISE = {"click": 0.75, "long_view": 0.7, "like": 0.8, "comment": 0.9, "follow": 0.9, "buy": 0.8, "share": 0.85,
          "gift": 0.9, "add_cart": 0.75, "coupon": 0.8}


@dataclass(frozen=True)
class SimulatorConfig:
    """Every knob of the simulator (see docs/simulator.md).

    Parameters
    ----------
    rows : total impressions written.
    users, streamers : population sizes (``users=0``: rows // 150, at least 500).
    min_candidates, max_candidates : candidates per request, uniform in [min, max].
    days : time span of the log; requests are in time order.
    rates : per-impression base rate of each objective (the label skew knob).
    correlation : 0..1, weight of shared latent factors (label correlation strength).
    segment_dependence : 0..1, how much that weight differs between user segments: high-activity users'
        objectives share more (correlation + s (1 - correlation)), low-activity users' less
        (correlation (1 - s)), mid-activity users keep ``correlation``. 0: the same for everyone.
    extra_objectives : 0..4, objectives beyond the six (share, gift, add_cart, coupon, in that order).
    noise : multiplier of the upstream prediction noise (1 = realistic, 0 = p equals truth up to bias).
    shared_noise : 0..1, share of the prediction noise common to all objectives.
    heterogeneity : 0..1+, how much prediction reliability/calibration differ across user segments.
    seed : fixes everything.
    chunk_rows : rows generated and written per Parquet row group (bounds memory).
    """

    rows: int = 200_000
    users: int = 0
    streamers: int = 2_000
    min_candidates: int = 20
    max_candidates: int = 100
    days: int = 14
    rates: dict[str, float] = field(default_factory=lambda: {m: DEFAULT_RATES[m] for m in OBJECTIVES})
    correlation: float = 0.7
    noise: float = 1.0
    shared_noise: float = 0.4
    heterogeneity: float = 1.0
    segment_dependence: float = 0.0
    extra_objectives: int = 0
    seed: int = 0
    chunk_rows: int = 500_000

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"simulator: {name} must be {want}. Got {getattr(self, name)!r} instead.")

        if self.rows < 1:
            raise bad("rows", "at least 1")
        if self.streamers < 10:
            raise bad("streamers", "at least 10")
        if self.users < 0:
            raise bad("users", ">= 0 (0 picks a size from rows)")
        if not 1 <= self.min_candidates <= self.max_candidates:
            raise ConfigError(
                f"simulator: need 1 <= min_candidates <= max_candidates. "
                f"Got {self.min_candidates} and {self.max_candidates} instead."
            )
        if self.days < 1:
            raise bad("days", "at least 1")
        check_keys(self.rates, OBJECTIVES + EXTRA_OBJECTIVES, "simulator: rates", what="objective")
        if not isinstance(self.extra_objectives, int) or not 0 <= self.extra_objectives <= len(EXTRA_OBJECTIVES):
            raise bad("extra_objectives", f"an integer in 0..{len(EXTRA_OBJECTIVES)}")
        # a rate for an objective that is not simulated is a mistake unless it is just the default
        unused = sorted(m for m in set(self.rates) - set(self.objectives) if self.rates[m] != DEFAULT_RATES[m])
        if unused:
            raise ConfigError(f"simulator: rates given for {', '.join(unused)}, which extra_objectives = "
                              f"{self.extra_objectives} does not simulate")
        rates = {m: r for m, r in {**DEFAULT_RATES, **self.rates}.items() if m in self.objectives}
        object.__setattr__(self, "rates", rates)
        for name, r in rates.items():
            if not 0 < r < 1:
                raise ConfigError(f"simulator: rate of {name!r} must be in (0, 1). Got {r!r} instead.")
            if name != "click" and r >= rates["click"]:
                raise ConfigError(
                    f"simulator: rate of {name!r} ({r}) must be below the click rate ({rates['click']}): "
                    "every interaction needs a room entry"
                )
        if not 0 <= self.correlation <= 1:
            raise bad("correlation", "in [0, 1]")
        if not 0 <= self.shared_noise <= 1:
            raise bad("shared_noise", "in [0, 1]")
        if self.noise < 0:
            raise bad("noise", ">= 0")
        if self.heterogeneity < 0:
            raise bad("heterogeneity", ">= 0")
        if not 0 <= self.segment_dependence <= 1:
            raise bad("segment_dependence", "in [0, 1]")
        if self.chunk_rows < 1000:
            raise bad("chunk_rows", "at least 1000")

    @property
    def objectives(self) -> tuple[str, ...]:
        """The simulated objectives: the six, then ``extra_objectives`` of EXTRA_OBJECTIVES."""
        return OBJECTIVES + EXTRA_OBJECTIVES[: self.extra_objectives]

    def shared_weight(self, activity: np.ndarray) -> float | np.ndarray:
        """Per impression, the weight of the shared latent factors (``correlation``, moved by segment)."""
        c, s = self.correlation, self.segment_dependence
        if s == 0:
            return c
        return np.select([activity == 2, activity == 0], [c + s * (1 - c), c * (1 - s)], default=c)

    @property
    def n_users(self) -> int:
        return self.users or max(500, self.rows // 150)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (vectorised erf via math.erf would be slow; use the erfc identity)."""
    return np.asarray(0.5 * _erfc(-x / math.sqrt(2.0)))


def _erfc(x: np.ndarray) -> np.ndarray:
    # Numerical Recipes' erfc approximation (fractional error < 1.2e-7), vectorised.
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    r = t * np.exp(poly)
    return np.asarray(np.where(x >= 0, r, 2.0 - r))


class _World:
    """Users and streamers, drawn once from the seed."""

    def __init__(self, cfg: SimulatorConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 1])
        nu, ns, nc = cfg.n_users, cfg.streamers, len(CATEGORIES)
        self.age = rng.choice(len(AGE_GROUPS), nu, p=[0.2, 0.27, 0.26, 0.17, 0.10])
        self.gender = rng.integers(0, 2, nu)
        self.city = rng.choice(len(CITY_TIERS), nu, p=[0.15, 0.3, 0.3, 0.25])
        self.activity = rng.choice(len(ACTIVITY), nu, p=[0.4, 0.4, 0.2])
        dev_logits = np.stack([0.5 + 0.3 * self.city, np.full(nu, 0.4), 0.6 - 0.5 * self.city], 1)
        dev_p = np.exp(dev_logits) / np.exp(dev_logits).sum(1, keepdims=True)
        self.device = (dev_p.cumsum(1) < rng.random(nu)[:, None]).sum(1)
        # purchase power: richer in big cities and on iOS, peaks mid-age
        mid_age = -np.abs(self.age - 2.0) * 0.2
        self.purchase_power = np.exp(
            rng.normal(0, 0.6, nu) - 0.25 * self.city + 0.4 * (self.device == 2) + mid_age
        )
        self.tenure = np.ceil(rng.exponential(400.0, nu) * (1 + 0.5 * self.activity))
        # interests over categories, tilted by gender and age
        tilt = np.zeros((nu, nc))
        tilt[:, [0, 1, 10]] += 0.8 * (self.gender == 0)[:, None]
        tilt[:, [3, 5, 8]] += 0.8 * (self.gender == 1)[:, None]
        tilt[:, [6, 7]] += 0.5 * (self.age <= 1)[:, None]
        tilt[:, [2, 4, 9]] += 0.5 * (self.age >= 2)[:, None]
        self.interest = rng.dirichlet(np.full(nc, 0.6), nu) * np.exp(tilt)
        self.interest /= self.interest.sum(1, keepdims=True)
        # hidden traits, partly explained by the observable features
        self.buy_trait = 0.8 * np.log(self.purchase_power) + 0.3 * (self.device == 2) + rng.normal(0, 0.6, nu)
        self.social_trait = 0.4 * (self.age <= 1) + 0.2 * (self.gender == 0) + rng.normal(0, 0.6, nu)
        self.engage_trait = 0.35 * self.activity + rng.normal(0, 0.5, nu)
        self.arrival = np.array([0.5, 1.0, 2.5])[self.activity] * rng.lognormal(0, 0.5, nu)

        self.category = rng.choice(nc, ns, p=np.full(nc, 1.0 / nc))
        self.price = rng.integers(1, 6, ns)  # 1 (cheap) .. 5 (luxury)
        self.popularity = rng.lognormal(0, 1.0, ns)
        self.quality = rng.normal(0, 0.5, ns)
        self.style = np.clip(rng.beta(4 * _SELLING[self.category] + 0.5, 4 * (1 - _SELLING[self.category]) + 0.5),
                             0.01, 0.99)
        # streamer sampling: within a category, by popularity ** 0.7
        order = np.argsort(self.category, kind="stable")
        self.by_cat = order
        w = self.popularity[order] ** 0.7
        cat_sorted = self.category[order]
        cum = np.zeros(ns)
        for c in range(nc):
            idx = np.flatnonzero(cat_sorted == c)
            if idx.size:
                cum[idx] = np.cumsum(w[idx]) / w[idx].sum()
        self.cat_cdf = cat_sorted + cum  # in (c, c+1] for category c; sorted
        self.cat_present = np.bincount(self.category, minlength=nc) > 0

    def sample_streamers(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = users.size
        nc = len(CATEGORIES)
        from_interest = rng.random(n) < 0.6
        cum = self.interest[users].cumsum(1)
        cat_i = (cum < rng.random(n)[:, None]).sum(1)
        glob = self.cat_present / self.cat_present.sum()
        cat_g = rng.choice(nc, n, p=glob)
        cat = np.where(from_interest, np.minimum(cat_i, nc - 1), cat_g)
        # categories with no streamer fall back to a global draw
        missing = ~self.cat_present[cat]
        cat[missing] = cat_g[missing]
        pos = np.searchsorted(self.cat_cdf, cat + rng.random(n) * (1 - 1e-12), side="left")
        return np.asarray(self.by_cat[np.clip(pos, 0, len(self.by_cat) - 1)])


def _factors(
    w: _World, u: np.ndarray, s: np.ndarray, hour: np.ndarray, rng: np.random.Generator, cfg: SimulatorConfig,
    extra_rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Conditional logits (before intercepts) of each objective for impressions (u, s).

    The extra objectives draw from ``extra_rng``, so turning them on leaves the six objectives' data as is.
    """
    n = u.size
    affinity = np.log(len(CATEGORIES) * w.interest[u, w.category[s]] + 0.05)
    evening = np.exp(-0.5 * ((hour - 21.0) / 2.5) ** 2)  # live rooms peak at night
    engage = (0.6 * affinity + 0.35 * np.log(w.popularity[s]) + w.engage_trait[u] + 0.3 * evening
              + rng.normal(0, 0.5, n))
    social = (w.social_trait[u] + 1.2 * (1 - w.style[s]) + w.quality[s] + 0.3 * affinity
              + rng.normal(0, 0.5, n))
    price_fit = -0.5 * np.abs(np.log(w.purchase_power[u]) * 1.5 + 3 - w.price[s])
    commerce = (w.buy_trait[u] + 2.0 * w.style[s] + price_fit + 0.4 * affinity + 0.3 * evening
                + rng.normal(0, 0.5, n))
    shared = np.stack([engage, social, commerce], 1)
    shared = (shared - shared.mean(0)) / (shared.std(0) + 1e-9) if n > 1 else shared
    out = {}
    correlation = cfg.shared_weight(w.activity[u])
    a, b = np.sqrt(correlation), np.sqrt(1 - correlation)
    for name in cfg.objectives:
        load = np.asarray(_LOADINGS[name])
        norm = np.sqrt((load**2).sum())
        common = shared @ load / norm
        own = (extra_rng if name in EXTRA_OBJECTIVES else rng).normal(0, 1.0, n)
        out[name] = 1.3 * (a * common + b * own)
    return out


class _Calibration:
    """Intercepts that hit the configured base rates (found once on a pilot sample)."""

    def __init__(self, w: _World, cfg: SimulatorConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 2])
        n = 200_000
        u = rng.choice(cfg.n_users, n, p=w.arrival / w.arrival.sum())
        s = w.sample_streamers(u, rng)
        hour = rng.uniform(0, 24, n)
        logits = _factors(w, u, s, hour, rng, cfg, np.random.default_rng([cfg.seed, 2, 1]))
        self.bias: dict[str, float] = {}
        self.bias["click"] = self._solve(logits["click"], cfg.rates["click"], None)
        click_p = _sigmoid(logits["click"] + self.bias["click"])
        for name in cfg.objectives[1:]:
            self.bias[name] = self._solve(logits[name], cfg.rates[name], click_p)

    @staticmethod
    def _solve(z: np.ndarray, target: float, weight: np.ndarray | None) -> float:
        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            p = _sigmoid(z + mid)
            rate = p.mean() if weight is None else (weight * p).mean()
            lo, hi = (mid, hi) if rate < target else (lo, mid)
        return 0.5 * (lo + hi)


def _upstream(
    w: _World, u: np.ndarray, true: dict[str, np.ndarray], cfg: SimulatorConfig, rng: np.random.Generator,
    extra_rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Noisy, miscalibrated, segment-dependent upstream predictions of the true probabilities."""
    n = u.size
    h = cfg.heterogeneity
    new_user = w.tenure[u] < 60
    low_act = w.activity[u] == 0
    ios = w.device[u] == 2
    rich = w.purchase_power[u] > 1.5
    young = w.age[u] <= 1
    shared_err = rng.normal(0, 1, n)
    out = {}
    for name in cfg.objectives:
        sigma = np.full(n, _NOISE[name] * cfg.noise)
        slope = np.full(n, 1.0)
        bias = np.full(n, 0.0)
        if name in _COMMERCE:
            sigma *= 1 + h * (0.9 * new_user + 0.6 * low_act)  # little purchase history
            bias += h * (0.6 * ios - 0.4 * rich)
            slope *= 1 + h * 0.25 * rich
        elif name != "click":  # follow, like, long_view, share
            sigma *= 1 + h * 0.6 * (~young)
            bias += h * 0.5 * young
        else:  # click
            sigma *= 1 - h * 0.3 * (w.activity[u] == 2)
            bias += h * 0.3 * low_act
        sigma = np.maximum(sigma, 0)
        own = (extra_rng if name in EXTRA_OBJECTIVES else rng).normal(0, 1, n)
        err = math.sqrt(cfg.shared_noise) * shared_err + math.sqrt(1 - cfg.shared_noise) * own
        z = slope * (logit(true[name], eps=1e-7) + sigma * err) + bias - 0.3 * slope  # overall mild miscalibration
        out[name] = _sigmoid(z)
    return out


def _requests(cfg: SimulatorConfig, w: _World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: user, unix time, number of candidates; exactly cfg.rows impressions in all."""
    rng = np.random.default_rng([cfg.seed, 3])
    mean_c = 0.5 * (cfg.min_candidates + cfg.max_candidates)
    n_req = int(cfg.rows / mean_c * 1.05) + 2
    sizes = rng.integers(cfg.min_candidates, cfg.max_candidates + 1, n_req)
    while sizes.sum() < cfg.rows:
        sizes = np.concatenate([sizes, rng.integers(cfg.min_candidates, cfg.max_candidates + 1, n_req)])
    cum = np.cumsum(sizes)
    last = int(np.searchsorted(cum, cfg.rows))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= int(cum[last] - cfg.rows)
    users = rng.choice(cfg.n_users, sizes.size, p=w.arrival / w.arrival.sum())
    start = 1_650_000_000  # 2022-04-15
    # arrivals more frequent in the evening: draw day uniformly, hour from a mixture
    day = rng.integers(0, cfg.days, sizes.size)
    hour = np.where(rng.random(sizes.size) < 0.5, rng.normal(21, 2.5, sizes.size) % 24,
                    rng.uniform(0, 24, sizes.size))
    t = np.sort(start + day * 86_400 + (hour * 3600).astype(np.int64))
    return users, t, sizes


def _dict_array(codes: np.ndarray, values: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values))


def _chunks(cfg: SimulatorConfig) -> Iterator[pa.Table]:
    w = _World(cfg)
    cal = _Calibration(w, cfg)
    users, t, sizes = _requests(cfg, w)
    req_start = np.concatenate([[0], np.cumsum(sizes)])
    first = 0
    k = 0
    while first < sizes.size:
        last = int(np.searchsorted(req_start, req_start[first] + cfg.chunk_rows, side="right")) - 1
        last = max(last, first + 1)
        last = min(last, sizes.size)
        rng = np.random.default_rng([cfg.seed, 4, k])
        extra_rng = np.random.default_rng([cfg.seed, 5, k])  # the extra objectives' own stream
        req_ids = np.repeat(np.arange(first, last), sizes[first:last])
        u = users[req_ids]
        tt = t[req_ids]
        s = w.sample_streamers(u, rng)
        hour = (tt % 86_400) / 3600.0
        logits = _factors(w, u, s, hour, rng, cfg, extra_rng)
        conditional = cfg.objectives[1:]
        click_p = _sigmoid(logits["click"] + cal.bias["click"])
        cond = {m: _sigmoid(logits[m] + cal.bias[m]) for m in conditional}
        true = {"click": click_p, **{m: click_p * cond[m] for m in conditional}}
        clicked = rng.random(u.size) < click_p
        # within a click: Gaussian copula, commerce pair and social trio share a normal
        z_com, z_soc = rng.normal(0, 1, u.size), rng.normal(0, 1, u.size)
        rho = 0.6 * cfg.shared_weight(w.activity[u])
        labels = {"click": clicked}
        for m in conditional:
            zs = z_com if m in _COMMERCE else z_soc
            own = (extra_rng if m in EXTRA_OBJECTIVES else rng).normal(0, 1, u.size)
            v = np.sqrt(rho) * zs + np.sqrt(1 - rho) * own
            labels[m] = clicked & (_ndtr(v) < cond[m])
        preds = _upstream(w, u, true, cfg, rng, extra_rng)
        cols: dict[str, Any] = {
            "request_id": pa.array(req_ids.astype(np.int64)),
            "user_id": pa.array(u.astype(np.int64)),
            "streamer_id": pa.array(s.astype(np.int64)),
            "time": pa.array(tt.astype(np.int64)),
            "u_age_group": _dict_array(w.age[u], AGE_GROUPS),
            "u_gender": _dict_array(w.gender[u], GENDERS),
            "u_city_tier": _dict_array(w.city[u], CITY_TIERS),
            "u_activity": _dict_array(w.activity[u], ACTIVITY),
            "u_device": _dict_array(w.device[u], DEVICES),
            "u_purchase_power": pa.array(np.round(w.purchase_power[u], 4)),
            "u_tenure_days": pa.array(w.tenure[u].astype(np.int32)),
            "s_category": _dict_array(w.category[s], CATEGORIES),
            "s_price_level": pa.array(w.price[s].astype(np.int8)),
            "s_popularity": pa.array(np.round(w.popularity[s], 4)),
            "s_style": pa.array(np.round(w.style[s], 4)),
        }
        for m in cfg.objectives:
            cols[f"p_{m}"] = pa.array(preds[m].astype(np.float32))
        for m in cfg.objectives:
            cols[f"y_{m}"] = pa.array(labels[m].astype(np.int8))
        for m in cfg.objectives:
            cols[f"true_{m}"] = pa.array(true[m].astype(np.float32))
        yield pa.table(cols)
        first = last
        k += 1


def simulate_table(config: SimulatorConfig | None = None) -> pa.Table:
    """Generate a whole simulated dataset in memory (for tests and small experiments).

    Examples
    --------
    >>> t = simulate_table(SimulatorConfig(rows=5000, seed=1))
    >>> t.num_rows
    5000
    """
    cfg = config or SimulatorConfig()
    return pa.concat_tables(list(_chunks(cfg)))


def simulate(
    path: str | Path,
    config: SimulatorConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Stream a simulated dataset to a Parquet file, one row group per chunk; returns run info.

    The file is written to a temporary path and renamed at the end, so a killed run leaves nothing
    half-written. ``progress(rows_done, rows_total)`` is called after every chunk.
    """
    cfg = config or SimulatorConfig()
    t0 = _time.perf_counter()
    done = 0
    with AtomicTableWriter(path, compression="zstd") as writer:
        for chunk in _chunks(cfg):
            writer.write(chunk, row_group_size=chunk.num_rows)
            done += chunk.num_rows
            if progress is not None:
                progress(done, cfg.rows)
    final = writer.final
    secs = _time.perf_counter() - t0
    log.info("simulated %d rows to %s in %.1fs", done, final, secs)
    return {"path": str(final), "rows": done, "seconds": secs, "config": cfg.to_dict()}
