"""Graded-relevance CSVs: any file of (query, item, grade) rows, read with nothing lost silently.

A row names a query, an item (by the catalogue's own id when the file has an id column, else by
its title and text), and a numeric grade. What the import does to the rows is counted and
reported (`ImportReport`): duplicate (query, item) rows are merged into one pair whose grade is
the mean of theirs (the natural rule for grades that are themselves means of raters), and a
merge whose grades differ is counted as a conflict. Grades become the relevance levels 0..3 by
a `Binning` whose intervals are explicit, so a threshold that falls on a grade value cannot
bin it silently the other way from what the user meant.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.contract import RELEVANCE_LEVELS, normalize_text
from training.data.tables import Table

#: item_category is an unhashed field of this many values (service.contract): the most frequent
#: categories get their own id, the rest are unknown (-1), and the report says how many.
CATEGORY_SLOTS = 1_023


class DataFormatError(ValueError):
    """A data file does not have the shape the loader was told to expect."""


@dataclass(frozen=True)
class CsvColumns:
    """Which CSV columns hold what. ``text``, ``item_id``, ``category`` and ``brand`` may be
    None when the file has no such column; without ``item_id`` items are keyed by title and
    text, and get ids ``i0, i1, ...``."""

    query: str = "query"
    title: str = "product_title"
    text: str | None = "product_description"
    grade: str = "median_relevance"
    item_id: str | None = None
    category: str | None = None
    brand: str | None = None


@dataclass(frozen=True)
class Interval:
    """Grades from ``low`` to ``high``; each end is in or out of it as ``closed_*`` says."""

    low: float
    high: float
    closed_low: bool
    closed_high: bool

    def contains(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        above = values >= self.low if self.closed_low else values > self.low
        below = values <= self.high if self.closed_high else values < self.high
        return above & below

    def __str__(self) -> str:
        def end(x: float) -> str:
            return "inf" if x == np.inf else "-inf" if x == -np.inf else f"{x:g}"

        left, right = "[" if self.closed_low else "(", "]" if self.closed_high else ")"
        return f"{left}{end(self.low)}, {end(self.high)}{right}"


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\]\)\s]+)\s*([\])])")


@dataclass(frozen=True)
class Binning:
    """Relevance levels 0..3 from grades: level k is the grades in ``intervals[k]``.

    ``intervals`` is None when the grades must already be the integers 0..3."""

    intervals: tuple[Interval, ...] | None = None

    @classmethod
    def from_thresholds(
        cls, thresholds: Sequence[float], closed: Literal["left", "right"] = "left"
    ) -> Binning:
        """Three increasing cut points t1 < t2 < t3. ``closed="left"``: a grade equal to a cut
        point goes to the level above it (level = the number of cut points <= grade);
        ``"right"``: it stays in the level below (level = the number of cut points < grade).

        >>> str(Binning.from_thresholds([1.5, 2, 2.5], "right"))
        '0: (-inf, 1.5]; 1: (1.5, 2]; 2: (2, 2.5]; 3: (2.5, inf)'
        """
        edges = [float(t) for t in thresholds]
        if len(edges) != RELEVANCE_LEVELS - 1 or np.any(np.diff(edges) <= 0):
            raise DataFormatError(
                f"need {RELEVANCE_LEVELS - 1} increasing thresholds, got {list(thresholds)}"
            )
        bounds = [-np.inf, *edges, np.inf]
        left = closed == "left"
        return cls(
            tuple(
                Interval(lo, hi, closed_low=left and k > 0, closed_high=not left and k < 3)
                for k, (lo, hi) in enumerate(itertools.pairwise(bounds))
            )
        )

    @classmethod
    def parse(cls, text: str) -> Binning:
        """Four explicit intervals for levels 0..3, e.g. ``[1,1.5],(1.5,2],(2,2.5],(2.5,3]``:
        contiguous, each shared end closed on exactly one side."""
        found = _INTERVAL.findall(text)
        if len(found) != RELEVANCE_LEVELS or _INTERVAL.sub("", text).strip(" ,;"):
            raise DataFormatError(
                f"need {RELEVANCE_LEVELS} intervals like [1,1.5],(1.5,2],(2,2.5],(2.5,3]: {text}"
            )
        try:
            intervals = tuple(
                Interval(float(lo), float(hi), left == "[", right == "]")
                for left, lo, hi, right in found
            )
        except ValueError as err:
            raise DataFormatError(f"interval ends must be numbers: {text}") from err
        for a, b in itertools.pairwise(intervals):
            if a.low > a.high or a.high != b.low or a.closed_high == b.closed_low:
                raise DataFormatError(
                    f"intervals {a} and {b} must meet at one end, closed on exactly one side"
                )
        return cls(intervals)

    def levels(self, grades: Sequence[float]) -> np.ndarray[Any, Any]:
        """The level of each grade, int8; a grade in no interval is an error."""
        values = np.asarray(grades, dtype=np.float64)
        if self.intervals is None:
            if not np.all(np.isin(values, np.arange(RELEVANCE_LEVELS))):
                raise DataFormatError(
                    "grades are not the levels 0..3: pass thresholds or intervals to bin them, "
                    "e.g. --thresholds 2,3,4 for 1..4"
                )
            return values.astype(np.int8)
        out = np.full(len(values), -1, dtype=np.int8)
        for level, interval in enumerate(self.intervals):
            out[interval.contains(values) & (out < 0)] = level
        outside = values[out < 0]
        if len(outside):
            raise DataFormatError(
                f"{len(outside)} grades lie in no interval of {self} (e.g. {outside[0]:g})"
            )
        return out

    def __str__(self) -> str:
        if self.intervals is None:
            return "levels as given (0..3)"
        return "; ".join(f"{k}: {interval}" for k, interval in enumerate(self.intervals))


@dataclass
class ImportReport:
    """What the import did to the file's rows."""

    rows_read: int
    rows_kept: int  # (query, item) pairs after merging duplicates
    rows_merged: int  # rows folded into another row of the same pair
    conflicts: int  # merged pairs whose rows disagreed on the grade
    rule: str
    binning: str
    level_counts: list[int]
    items: int
    keyed_by: str
    ids_with_several_titles: int = 0
    titles_shared_by_ids: int = 0
    categories_unknown: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"rows read     {self.rows_read:,}",
            f"rows kept     {self.rows_kept:,} (query, item) pairs; {self.rows_merged:,} "
            f"duplicate rows merged, {self.conflicts:,} pairs with conflicting grades "
            f"settled by {self.rule}",
            f"items         {self.items:,}, keyed by {self.keyed_by}",
            f"levels        {self.binning}",
            "level counts  " + ", ".join(f"{k}: {n:,}" for k, n in enumerate(self.level_counts)),
        ]
        if self.ids_with_several_titles or self.titles_shared_by_ids:
            out.append(
                f"ids           {self.ids_with_several_titles:,} ids with several titles "
                f"(the first kept), {self.titles_shared_by_ids:,} titles shared by several ids "
                "(kept apart)"
            )
        if self.categories_unknown:
            out.append(
                f"categories    {self.categories_unknown:,} items in categories past the "
                f"{CATEGORY_SLOTS:,} most frequent: unknown (-1)"
            )
        return out + self.notes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelledCatalogue:
    """Graded pairs and the items they grade.

    ``pairs``: query (text as written), item (row of ``items``), grade, level.
    ``items``: item_key, title, text, category (-1 unknown), brand (-1 unknown)."""

    pairs: Table
    items: Table


def _read_text(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if encoding != "auto":
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _codes(values: list[str], slots: int | None) -> tuple[np.ndarray[Any, Any], int]:
    """An integer per value (-1 for empty), most frequent first; past ``slots`` values, -1.
    Returns the codes and how many non-empty values got -1."""
    counts: dict[str, int] = {}
    for v in values:
        if v:
            counts[v] = counts.get(v, 0) + 1
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    code = {v: k for k, v in enumerate(ranked) if slots is None or k < slots}
    out = np.array([code.get(v, -1) for v in values], dtype=np.int32)
    return out, sum(1 for v in values if v and v not in code)


def load_relevance_csv(
    path: Path,
    columns: CsvColumns = CsvColumns(),
    *,
    encoding: str = "auto",
    binning: Binning = Binning(),
    delimiter: str = ",",
) -> tuple[LabelledCatalogue, ImportReport]:
    """One row per (query, item) pair: query, item_key, title, text, category, brand, grade
    (the mean of the pair's rows), level; and the report of what was merged.

    Blank queries, titles or ids are an error: a row that cannot be placed is not dropped."""
    reader = csv.DictReader(
        io.StringIO(_read_text(path, encoding), newline=""), delimiter=delimiter
    )
    wanted = [c for c in asdict(columns).values() if c is not None]
    missing = [c for c in wanted if c not in (reader.fieldnames or [])]
    if missing:
        raise DataFormatError(f"{path}: no column {missing}; columns are {reader.fieldnames}")

    def cell(row: dict[str, str], column: str | None) -> str:
        return (row[column] or "").strip() if column else ""

    item_of: dict[str, int] = {}  # item identity (id, else title and text) -> item
    items: list[dict[str, str]] = []  # each item's first row
    titles: list[set[str]] = []  # every title each item was listed with
    pair_of: dict[tuple[str, int], int] = {}  # (normalized query, item) -> pair
    pair_query: list[str] = []
    pair_item: list[int] = []
    grades: list[list[float]] = []
    rows_read = 0
    for line, row in enumerate(reader, start=2):
        rows_read += 1
        query, title, text = (cell(row, c) for c in (columns.query, columns.title, columns.text))
        item_id = cell(row, columns.item_id)
        if not query or not title:
            raise DataFormatError(f"{path}: record {line} has an empty query or title")
        if columns.item_id and not item_id:
            raise DataFormatError(f"{path}: record {line} has an empty item id")
        try:
            grade = float(row[columns.grade])
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"{path}: record {line}: grade {row[columns.grade]!r}") from err
        item = item_of.setdefault(item_id or f"{title}\x1f{text}", len(items))
        if item == len(items):
            category, brand = cell(row, columns.category), cell(row, columns.brand)
            items.append(
                {"id": item_id, "title": title, "text": text, "category": category, "brand": brand}
            )
            titles.append(set())
        titles[item].add(title)
        pair = pair_of.setdefault((normalize_text(query), item), len(pair_query))
        if pair == len(pair_query):
            pair_query.append(query)
            pair_item.append(item)
            grades.append([])
        grades[pair].append(grade)

    mean_grades = [float(np.mean(g)) for g in grades]
    levels = binning.levels(mean_grades)
    keyed = columns.item_id is not None
    item_titles = [item["title"] for item in items]
    category_codes, unknown_categories = _codes([i["category"] for i in items], CATEGORY_SLOTS)
    brand_codes, _ = _codes([i["brand"] for i in items], None)
    report = ImportReport(
        rows_read=rows_read,
        rows_kept=len(pair_query),
        rows_merged=rows_read - len(pair_query),
        conflicts=sum(1 for g in grades if max(g) != min(g)),
        rule="the mean of their grades",
        binning=str(binning),
        level_counts=np.bincount(levels, minlength=RELEVANCE_LEVELS).tolist(),
        items=len(items),
        keyed_by=f"the {columns.item_id!r} column" if keyed else "title and text (ids i0..)",
        ids_with_several_titles=sum(len(t) > 1 for t in titles) if keyed else 0,
        titles_shared_by_ids=len(item_titles) - len(set(item_titles)) if keyed else 0,
        categories_unknown=unknown_categories,
    )
    table = Table(
        {
            "query": np.array(pair_query),
            "item": np.array(pair_item, dtype=np.int64),
            "grade": np.array(mean_grades, dtype=np.float32),
            "level": levels,
        }
    )
    catalogue = Table(
        {
            "item_key": np.array([i["id"] if keyed else f"i{k}" for k, i in enumerate(items)]),
            "title": np.array(item_titles),
            "text": np.array([i["text"] for i in items]),
            "category": category_codes.astype(np.int16),
            "brand": brand_codes.astype(np.int32),
        }
    )
    return LabelledCatalogue(table, catalogue), report
