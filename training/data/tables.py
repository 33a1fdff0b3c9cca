"""The table format every data source writes and every later command reads.

A world is a folder: ``world.json`` (meta: source, seed, sizes, split, planted parameters) and one
folder per table with one ``.npy`` file per column (strings as fixed-width unicode, so nothing is
pickled and every column can be memory-mapped).

Tables and their columns (ids are dense row numbers):
- items: item_key, title, text, category (-1 unknown), brand (-1 unknown), price_bucket,
  quality (latent; NaN where unknown)
- queries: text (normalized; row 0 is the empty query of recommendation requests), category
- users: user_key, age, gender, city_tier, sensitivity (latent, float, users x departments)
- pairs: query_id, item_id, relevance: every (query, item) pair with a known label, the pairs
  whose texts are encoded offline
- impressions: request_id, time, user_id, query_id, item_id, position, hour, relevance (-1 for a
  recommendation request), click, conversion, split (0 train, 1 valid, 2 test), p_click (the
  planted probability, NaN where unknown), hist_end, hist_len
- clicks: user_id, time, query_id, item_id: the search clicks sorted by (user, time); an
  impression's history is ``clicks[hist_end - hist_len : hist_end]``, all strictly before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.contract import EMPTY_QUERY_ID

Column = npt.NDArray[Any]
TABLE_NAMES: tuple[str, ...] = ("items", "queries", "users", "pairs", "impressions", "clicks")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class Table(Mapping[str, Column]):
    """Named columns of equal length."""

    def __init__(self, columns: Mapping[str, Column]) -> None:
        lengths = {name: len(col) for name, col in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self._columns = dict(columns)

    def __getitem__(self, name: str) -> Column:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    @property
    def n_rows(self) -> int:
        return len(next(iter(self._columns.values()))) if self._columns else 0

    def take(self, rows: npt.NDArray[np.integer[Any]] | npt.NDArray[np.bool_]) -> Table:
        """The table restricted to some rows (an index array or a boolean mask)."""
        return Table({name: col[rows] for name, col in self._columns.items()})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, col in self._columns.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(col), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> Table:
        mode: Literal["r"] | None = "r" if mmap else None
        return cls(
            {
                path.stem: np.load(path, mmap_mode=mode, allow_pickle=False)
                for path in sorted(folder.glob("*.npy"))
            }
        )


@dataclass
class World:
    """All tables of one data set plus its meta record."""

    items: Table
    queries: Table
    users: Table
    pairs: Table
    impressions: Table
    clicks: Table
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, Table]:
        return {name: getattr(self, name) for name in TABLE_NAMES}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables().items():
            table.save(folder / name)
        (folder / "world.json").write_text(
            json.dumps(self.meta, indent=2, sort_keys=True, default=_json_default) + "\n",
            encoding="utf-8",
        )

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> World:
        meta_path = folder / "world.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder} holds no world.json: not a data set folder")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tables = {name: Table.load(folder / name, mmap=mmap) for name in TABLE_NAMES}
        return cls(**tables, meta=meta)

    def history(self, impression: int) -> Table:
        """The (query, clicked item) pairs before one impression, oldest first."""
        end = int(self.impressions["hist_end"][impression])
        start = end - int(self.impressions["hist_len"][impression])
        return self.clicks.take(np.arange(start, end))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def click_log(impressions: Mapping[str, Column]) -> dict[str, Column]:
    """The search clicks, sorted by (user, time): what later impressions see as history."""
    is_click = (impressions["click"] == 1) & (impressions["query_id"] != EMPTY_QUERY_ID)
    order = np.lexsort((impressions["time"][is_click], impressions["user_id"][is_click]))
    return {k: impressions[k][is_click][order] for k in ("user_id", "time", "query_id", "item_id")}


def attach_histories(
    impressions: dict[str, Column], clicks: dict[str, Column], max_length: int
) -> None:
    """Fill ``hist_end``/``hist_len`` of impressions from a click log, in place.

    ``clicks`` must be sorted by (user_id, time). An impression sees only clicks with a time
    strictly before its own, so clicks of its own request never leak into its history.
    """
    # One sortable key per event: user in the high bits, time in the low 40 bits.
    click_key = clicks["user_id"].astype(np.int64) << 40 | clicks["time"].astype(np.int64)
    if np.any(np.diff(click_key) < 0):
        raise ValueError("clicks must be sorted by (user_id, time)")
    user = impressions["user_id"].astype(np.int64)
    end = np.searchsorted(click_key, user << 40 | impressions["time"].astype(np.int64), "left")
    first = np.searchsorted(click_key, user << 40, "left")
    impressions["hist_end"] = end.astype(np.int64)
    impressions["hist_len"] = np.minimum(end - first, max_length).astype(np.int16)


def time_split(times: Column, fractions: tuple[float, float] = (0.8, 0.9)) -> Column:
    """0/1/2 (train/valid/test) by time quantiles: the future is never trained on."""
    cut_valid, cut_test = np.quantile(times, fractions)
    return np.where(times < cut_valid, 0, np.where(times < cut_test, 1, 2)).astype(np.int8)
