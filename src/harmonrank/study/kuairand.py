"""KuaiRand loader: the official CSV layout -> the data contract (labels and features, no scores yet).

KuaiRand (Gao et al., CIKM 2022; CC BY-SA 4.0) ships, for each of Pure / 1K / 27K, a log
(``log_random_*.csv`` for the random exposures, ``log_standard_*.csv`` for the recommender's), user
features (``user_features_*.csv``) and video features (``video_features_basic_*.csv``), with the same column
names. This module joins them and derives what the log lacks:

* **requests**: KuaiRand has no request id. A request is one user's impressions with at most
  ``gap_minutes`` (default 360, six hours) between consecutive impressions: a new request starts at the
  user's first impression and whenever the user was away longer than the gap. Random exposures are sparse
  (a short gap leaves most requests with one impression) and a ranking group needs several candidates.
* **labels** ``y_<name>``: click (is_click), long_view, like (is_like), profile_enter (is_profile_enter),
  follow (is_follow), comment (is_comment), forward (is_forward), hate (is_hate).
* **features**: user ``u_*`` (activity degree, flags, count ranges, the 18 one-hot codes as categories;
  follow / fans / friend counts and register days as log1p numerics), video ``v_*`` (type, upload type,
  music type, first tag, visibility; log1p duration, width, height), context ``c_*`` (tab, hour) and the
  user / video / author ids as categories ``id_*`` (upstream model only; never an ensemble feature).

The log has labels but no predicted scores: :mod:`harmonrank.study.upstream` produces them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..config import DatasetConfig, Objective, write_config
from ..errors import DataError
from ..io import write_parquet

__all__ = ["LABELS", "MAIN_OBJECTIVES", "dataset_config", "feature_columns", "load_kuairand", "request_ids",
           "write_config", "write_kuairand"]

log = logging.getLogger(__name__)

#: contract name -> KuaiRand column
LABELS = {"click": "is_click", "long_view": "long_view", "like": "is_like", "profile_enter": "is_profile_enter",
          "follow": "is_follow", "comment": "is_comment", "forward": "is_forward", "hate": "is_hate"}
#: objectives with enough positives in KuaiRand-1K's random log to be measured (SOURCE.md)
MAIN_OBJECTIVES = ("click", "long_view", "like", "profile_enter")

_USER_CAT = ["user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
             "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range",
             *[f"onehot_feat{i}" for i in range(18)]]
_USER_NUM = ["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]
_VIDEO_CAT = ["video_type", "upload_type", "music_type", "visible_status"]
_VIDEO_NUM = ["video_duration", "server_width", "server_height"]


def _one(src: Path, pattern: str, what: str) -> Path:
    hits = sorted(src.glob(pattern))
    if not hits:
        raise DataError(f"{src}: no {what} file matching {pattern!r}")
    if len(hits) > 1:
        log.warning("%s: several %s files, using %s", src, what, hits[0].name)
    return hits[0]


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    try:
        head = pacsv.open_csv(path).schema.names
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {path} as CSV: {err}") from err
    missing = [c for c in columns if c not in head]
    if missing:
        raise DataError(f"{path.name}: {len(missing)} expected column(s) missing: {', '.join(missing)}")
    opts = pacsv.ConvertOptions(include_columns=list(columns), strings_can_be_null=True)
    return pacsv.read_csv(path, convert_options=opts)


def _as_str(col: Any) -> np.ndarray:
    arr = pa.array(col) if not isinstance(col, pa.Array | pa.ChunkedArray) else col
    return np.asarray(arr.cast(pa.string()).fill_null("__missing__").to_numpy(zero_copy_only=False), dtype=object)


def _log1p(col: Any) -> np.ndarray:
    v = np.asarray(pa.array(col).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64) \
        if not isinstance(col, np.ndarray) else col.astype(np.float64)
    return np.log1p(np.clip(v, 0, None))


def request_ids(user: np.ndarray, time_ms: np.ndarray, gap_minutes: float = 360.0) -> np.ndarray:
    """Request id per row: a user's impressions split wherever two consecutive ones are > gap apart."""
    order = np.lexsort((time_ms, user))
    u, t = user[order], time_ms[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_minutes * 60_000)
    rid = np.empty(len(order), dtype=np.int64)
    rid[order] = np.cumsum(new) - 1
    return rid


GROUPINGS = ("session", "user", "user-day")


def group_requests(user: np.ndarray, time_ms: np.ndarray, date: np.ndarray | None, grouping: str,
                   gap_minutes: float = 360.0) -> np.ndarray:
    """Request id per row. ``session``: a user's impressions split where two consecutive ones are more than
    ``gap_minutes`` apart; ``user``: all of a user's impressions; ``user-day``: a user's impressions of one
    calendar day (the log's ``date``)."""
    if grouping == "session":
        return request_ids(user, time_ms, gap_minutes)
    if grouping == "user":
        return np.unique(user, return_inverse=True)[1].astype(np.int64)
    if grouping == "user-day":
        if date is None:
            raise DataError("grouping 'user-day' needs the log's date column")
        key = np.stack([user.astype(np.int64), date.astype(np.int64)], axis=1)
        return np.unique(key, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    raise DataError(f"grouping must be one of {', '.join(GROUPINGS)}. Got {grouping!r} instead.")


def load_kuairand(src: str | Path, *, log_kind: str = "random", gap_minutes: float = 360.0,
                  grouping: str = "session") -> pa.Table:
    """Read and join a KuaiRand folder into one Arrow table in the data contract (without ``p_*``).

    ``grouping`` decides what a request is (:func:`group_requests`): sessions suit the 1K random log (many
    impressions per user); on KuaiRand-Pure's standard log a user has a median of 3 impressions over six days,
    and ``user-day`` keeps whole days together, so a split by time cuts between days."""
    src = Path(src)
    if grouping not in GROUPINGS:
        raise DataError(f"grouping must be one of {', '.join(GROUPINGS)}. Got {grouping!r} instead.")
    if not src.is_dir():
        raise DataError(f"KuaiRand folder {str(src)!r} does not exist")
    if log_kind not in ("random", "standard"):
        raise DataError(f"log_kind must be 'random' or 'standard'. Got {log_kind!r} instead.")
    log_cols = ["user_id", "video_id", "date", "time_ms", "hourmin", "tab", *LABELS.values()]
    logs = _read(_one(src, f"log_{log_kind}*.csv", f"{log_kind} log"), log_cols)
    users = _read(_one(src, "user_features*.csv", "user features"), ["user_id", *_USER_CAT, *_USER_NUM])
    videos = _read(_one(src, "video_features_basic*.csv", "video features"),
                   ["video_id", "author_id", *_VIDEO_CAT, *_VIDEO_NUM, "tag"])
    if logs.num_rows == 0:
        raise DataError(f"{src}: the log has 0 rows")
    user_id = logs["user_id"].to_numpy()
    video_id = logs["video_id"].to_numpy()
    time_ms = logs["time_ms"].to_numpy()
    # joins by position: index each feature table by id
    u_pos = _positions(users["user_id"].to_numpy(), user_id, "user_id", "user_features")
    v_pos = _positions(videos["video_id"].to_numpy(), video_id, "video_id", "video_features_basic")
    cols: dict[str, Any] = {
        "request_id": group_requests(user_id, time_ms, logs["date"].to_numpy(), grouping, gap_minutes),
        "user_id": user_id,
        "video_id": video_id,
        "time": time_ms,
    }
    for name, raw in LABELS.items():
        y = logs[raw].to_numpy(zero_copy_only=False)
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise DataError(f"log column {raw!r} has {int(bad.sum())} values not in {{0, 1}}")
        cols[f"y_{name}"] = y.astype(np.int8)
    for c in _USER_CAT:
        cols[f"u_{c}"] = _take_str(users[c], u_pos)
    for c in _USER_NUM:
        cols[f"u_log_{c}"] = _log1p(_take_num(users[c], u_pos))
    for c in _VIDEO_CAT:
        cols[f"v_{c}"] = _take_str(videos[c], v_pos)
    first_tag = pc.utf8_split_whitespace(pc.replace_substring(videos["tag"].cast(pa.string()), ",", " "),
                                         max_splits=1)
    cols["v_first_tag"] = _take_str(pc.list_element(pc.fill_null(first_tag, pa.scalar([""], pa.list_(pa.string()))),
                                                    0), v_pos)
    for c in _VIDEO_NUM:
        vals = _take_num(videos[c], v_pos)
        cols[f"v_log_{c}" if c == "video_duration" else f"v_{c}"] = _log1p(vals) if c == "video_duration" else vals
    cols["id_user"] = _as_str(logs["user_id"])  # ids as categories, for the upstream model only
    cols["id_video"] = _as_str(logs["video_id"])
    cols["id_author"] = _take_str(videos["author_id"], v_pos)
    cols["c_tab"] = _as_str(logs["tab"])
    cols["c_hour"] = _as_str(pc.divide(logs["hourmin"], 100))
    table = pa.table(cols)
    order = np.lexsort((np.arange(table.num_rows), time_ms))  # time order, for time splits
    return table.take(pa.array(order))


def _positions(ids: np.ndarray, wanted: np.ndarray, key: str, what: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], wanted)
    pos = np.clip(pos, 0, len(ids) - 1)
    found = ids[order][pos] == wanted
    if not found.all():
        missing = np.unique(wanted[~found])
        log.warning("%d %s values of the log (%d rows) are not in %s; their features are missing",
                    len(missing), key, int((~found).sum()), what)
    return np.where(found, order[pos], -1)


def _take_str(col: Any, pos: np.ndarray) -> np.ndarray:
    vals = _as_str(col)
    out = np.where(pos >= 0, vals[np.clip(pos, 0, None)], "__missing__")
    return np.asarray([s.removesuffix(".0") if isinstance(s, str) else s for s in out], dtype=object)


def _take_num(col: Any, pos: np.ndarray) -> np.ndarray:
    vals = np.asarray(pa.array(col).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64) \
        if not isinstance(col, pa.ChunkedArray) else np.asarray(col.cast(pa.float64()).to_numpy(), dtype=np.float64)
    return np.where(pos >= 0, vals[np.clip(pos, 0, None)], np.nan)


def feature_columns(table: pa.Table) -> tuple[list[str], list[str]]:
    """(categorical, numeric) feature columns of a loaded table: u_*, v_*, c_*, id_* by dtype."""
    cat: list[str] = []
    num: list[str] = []
    for name in table.column_names:
        if name.startswith(("u_", "v_", "c_", "id_")):
            (cat if pa.types.is_string(table.schema.field(name).type) else num).append(name)
    return cat, num


def dataset_config(table: pa.Table, objectives: Sequence[str] = MAIN_OBJECTIVES) -> DatasetConfig:
    """The ensemble's config: the measurable objectives, personalised features = the user features."""
    cat, num = feature_columns(table)
    return DatasetConfig(
        objectives=tuple(Objective(name) for name in objectives),
        request_column="request_id", user_column="user_id", time_column="time", item_column="video_id",
        categorical=tuple(c for c in cat if c.startswith("u_")),
        numeric=tuple(c for c in num if c.startswith("u_")),
    )


def write_kuairand(src: str | Path, out: str | Path, *, log_kind: str = "random",
                   gap_minutes: float = 360.0, grouping: str = "session") -> dict[str, Any]:
    """Load a KuaiRand folder and write ``out/kuairand.parquet`` and ``out/kuairand.toml``."""
    out = Path(out)
    table = load_kuairand(src, log_kind=log_kind, gap_minutes=gap_minutes, grouping=grouping)
    write_parquet(table, out / "kuairand.parquet")
    write_config(dataset_config(table), out / "kuairand.toml")
    rids = table["request_id"].to_numpy()
    return {
        "rows": table.num_rows,
        "users": int(np.unique(table["user_id"].to_numpy()).size),
        "requests": int(np.unique(rids).size),
        "median_request_size": float(np.median(np.bincount(rids))),
        "positives": {k: int(pc.sum(table[f"y_{k}"]).as_py()) for k in LABELS},
    }
