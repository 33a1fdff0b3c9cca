"""Real-data loaders: any graded CSV, the CrowdFlower file, Amazon histories, simulated clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from training.data.graded_csv import (
    Binning,
    CsvColumns,
    DataFormatError,
    load_relevance_csv,
)
from training.data.real import load_amazon_scientific, world_from_relevance

CSV_TEXT = (
    "q;name;body;score\n"
    'Café table;"Oak café table";"A table,\nfor two";0.9\n'
    "red shoes;Red shoes;;0.2\n"
    "red shoes;Blue hat;plain;0.05\n"
    "lamp;Desk lamp;bright;0.6\n"
)


def test_csv_with_mapping_latin1_multiline_fields_and_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(CSV_TEXT.encode("latin-1"))
    labels, report = load_relevance_csv(
        path,
        CsvColumns(query="q", title="name", text="body", grade="score"),
        binning=Binning.from_thresholds([0.1, 0.5, 0.8]),
        delimiter=";",
    )
    pairs, items = labels.pairs, labels.items
    assert pairs.n_rows == 4 and report.rows_read == 4 and report.rows_merged == 0
    assert pairs["query"][0] == "Café table"
    assert items["text"][pairs["item"][0]] == "A table,\nfor two"
    assert items["item_key"].tolist() == ["i0", "i1", "i2", "i3"]
    assert pairs["level"].tolist() == [3, 1, 0, 2]
    assert report.level_counts == [1, 1, 1, 1]


def test_csv_without_text_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,title,level\nsofa,Grey sofa,3\nsofa,Lamp,0\n", encoding="utf-8")
    labels, _ = load_relevance_csv(path, CsvColumns(title="title", text=None, grade="level"))
    assert labels.pairs["level"].tolist() == [3, 0]
    assert labels.items["text"].tolist() == ["", ""]


ID_CSV = (
    "search_term,product_uid,product_title,relevance,cat,brand\n"
    "oak table,100,Oak table,3,furniture,Acme\n"
    "oak table,101,Oak table,2.33,furniture,Other\n"  # the same title, another product
    "oak table,100,Oak table,2.67,furniture,Acme\n"  # a duplicate pair, another grade
    "Oak  Table,100,Oak table,2.67,furniture,Acme\n"  # the same query, written otherwise
    "lamp,200,Desk lamp,1,lighting,\n"
    "lamp,200,Desk lamp,1,lighting,\n"  # a duplicate that agrees
    "lamp,101,Oak table (v2),2,furniture,Other\n"  # an id seen before with another title
)


def test_an_id_column_keeps_the_catalogue_ids_and_duplicates_are_merged_and_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(ID_CSV, encoding="utf-8")
    columns = CsvColumns(
        query="search_term",
        title="product_title",
        text=None,
        grade="relevance",
        item_id="product_uid",
        category="cat",
        brand="brand",
    )
    binning = Binning.parse("[1,1.5],(1.5,2],(2,2.5],(2.5,3]")
    labels, report = load_relevance_csv(path, columns, binning=binning)
    items, pairs = labels.items, labels.pairs
    assert items["item_key"].tolist() == ["100", "101", "200"]  # products sharing a title apart
    assert items["title"].tolist() == ["Oak table", "Oak table", "Desk lamp"]
    assert (report.rows_read, report.rows_kept, report.rows_merged) == (7, 4, 3)
    assert report.conflicts == 1  # (oak table, 100): 3, 2.67, 2.67; the lamp rows agree
    assert report.ids_with_several_titles == 1 and report.titles_shared_by_ids == 1
    keys = [(q, items["item_key"][i]) for q, i in zip(pairs["query"], pairs["item"], strict=True)]
    grade = dict(zip(keys, pairs["grade"].tolist(), strict=True))
    assert grade[("oak table", "100")] == pytest.approx((3 + 2.67 + 2.67) / 3, abs=1e-5)
    level = dict(zip(keys, pairs["level"].tolist(), strict=True))
    assert level == {
        ("oak table", "100"): 3,
        ("oak table", "101"): 2,
        ("lamp", "200"): 0,
        ("lamp", "101"): 1,  # 2 lies in (1.5, 2]
    }
    assert report.level_counts == [1, 1, 1, 1]
    assert items["category"].tolist() == [0, 0, 1] and items["brand"].tolist()[2] == -1
    text = "\n".join(report.lines())
    for figure in ("rows read     7", "3 duplicate rows merged", "1 pairs with conflicting"):
        assert figure in text, text
    assert "(2, 2.5]" in text and "level counts  0: 1, 1: 1, 2: 1, 3: 1" in text
    world = world_from_relevance(labels, n_users=20, n_impressions=200)
    assert world.items["item_key"].tolist() == ["100", "101", "200"]


def test_thresholds_say_which_side_a_grade_on_a_cut_point_goes() -> None:
    grades = [1.0, 1.5, 2.0, 2.33, 2.5, 3.0]
    assert Binning.from_thresholds([1.5, 2, 2.5]).levels(grades).tolist() == [0, 1, 2, 2, 3, 3]
    right = Binning.from_thresholds([1.5, 2, 2.5], closed="right")
    assert right.levels(grades).tolist() == [0, 0, 1, 2, 2, 3]
    assert str(right) == "0: (-inf, 1.5]; 1: (1.5, 2]; 2: (2, 2.5]; 3: (2.5, inf)"


def test_csv_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,title,grade\nsofa,Grey sofa,7\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no column"):
        load_relevance_csv(path)
    columns = CsvColumns(title="title", text=None, grade="grade")
    with pytest.raises(DataFormatError, match="pass thresholds"):
        load_relevance_csv(path, columns)
    with pytest.raises(DataFormatError, match="lie in no interval"):
        load_relevance_csv(path, columns, binning=Binning.parse("[0,1),[1,2),[2,3),[3,4]"))
    with pytest.raises(DataFormatError, match="no column"):
        load_relevance_csv(path, CsvColumns(title="title", text=None, grade="grade", item_id="id"))
    with pytest.raises(DataFormatError, match="increasing"):
        Binning.from_thresholds([3, 2, 4])
    with pytest.raises(DataFormatError, match="exactly one side"):
        Binning.parse("[1,2],[2,3),[3,4),[4,5]")
    with pytest.raises(DataFormatError, match="4 intervals"):
        Binning.parse("[1,2),[2,3)")


@pytest.mark.shared_data
def test_crowdflower_counts() -> None:
    labels, report = load_relevance_csv(
        shared_data("crowdflower/search_relevance.csv"), binning=Binning.from_thresholds([2, 3, 4])
    )
    assert report.rows_read == 10_158
    assert (report.rows_kept, report.rows_merged, report.conflicts) == (10_013, 145, 44)
    assert len(set(labels.pairs["query"].tolist())) == 261
    assert sum(report.level_counts) == labels.pairs.n_rows == report.rows_kept


def test_simulated_clicks_on_real_labels_split_by_query(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        f"query {q},item {q}-{i},text,{rng.integers(0, 4)}" for q in range(40) for i in range(12)
    ]
    path = tmp_path / "labels.csv"
    path.write_text(
        "query,product_title,product_description,median_relevance\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    world = world_from_relevance(load_relevance_csv(path)[0], n_users=200, n_impressions=20_000)
    imp = world.impressions
    for query in np.unique(imp["query_id"]):
        assert len(np.unique(imp["split"][imp["query_id"] == query])) == 1
    assert set(np.unique(imp["split"]).tolist()) == {0, 1, 2}
    ctr = [imp["click"][imp["relevance"] == lvl].mean() for lvl in range(4)]
    assert ctr == sorted(ctr)
    assert world.pairs.n_rows == 480


@pytest.mark.shared_data
def test_amazon_histories_become_clicked_lists() -> None:
    world = load_amazon_scientific(shared_data("amazon_scientific"))
    imp = world.impressions
    assert world.users.n_rows == 2_928 and world.items.n_rows == 1_585
    assert int(imp["click"].sum()) == 19_712  # one click per real interaction
    assert np.all(imp["relevance"][imp["click"] == 1] == 3)
    assert np.sum(imp["split"] == 2) == 2_928 * 10  # each user's last interaction, 10 shown
    assert imp["hist_len"].max() <= 50
