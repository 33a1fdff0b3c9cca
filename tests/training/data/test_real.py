"""Real-data loaders: any graded CSV, the CrowdFlower file, Amazon histories, simulated clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from training.data.real import (
    CsvColumns,
    DataFormatError,
    bin_grades,
    load_amazon_scientific,
    load_relevance_csv,
    world_from_relevance,
)

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
    table = load_relevance_csv(
        path,
        CsvColumns(query="q", title="name", text="body", grade="score"),
        thresholds=[0.1, 0.5, 0.8],
        delimiter=";",
    )
    assert table.n_rows == 4
    assert table["query"][0] == "Café table"
    assert table["text"][0] == "A table,\nfor two"
    assert table["level"].tolist() == [3, 1, 0, 2]


def test_csv_without_text_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,title,level\nsofa,Grey sofa,3\nsofa,Lamp,0\n", encoding="utf-8")
    table = load_relevance_csv(path, CsvColumns(title="title", text=None, grade="level"))
    assert table["level"].tolist() == [3, 0]
    assert table["text"].tolist() == ["", ""]


def test_csv_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,title,grade\nsofa,Grey sofa,7\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no column"):
        load_relevance_csv(path)
    with pytest.raises(DataFormatError, match="pass thresholds"):
        load_relevance_csv(path, CsvColumns(title="title", text=None, grade="grade"))
    with pytest.raises(DataFormatError, match="increasing"):
        bin_grades([1.0], [3, 2, 4])


@pytest.mark.shared_data
def test_crowdflower_counts() -> None:
    table = load_relevance_csv(
        shared_data("crowdflower/search_relevance.csv"), thresholds=[2, 3, 4]
    )
    assert table.n_rows == 10_158
    assert len(set(table["query"].tolist())) == 261
    assert np.bincount(table["level"]).tolist() == [774, 1_476, 1_737, 6_171]


def test_simulated_clicks_on_real_labels_split_by_query(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        f"query {q},item {q}-{i},text,{rng.integers(0, 4)}" for q in range(40) for i in range(12)
    ]
    path = tmp_path / "labels.csv"
    path.write_text("query,product_title,product_description,median_relevance\n"
                    + "\n".join(rows) + "\n", encoding="utf-8")
    world = world_from_relevance(load_relevance_csv(path), n_users=200, n_impressions=20_000)
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
