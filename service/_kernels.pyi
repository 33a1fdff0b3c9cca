"""Types of the compiled request-path loops (service/_kernels.c; its docstrings say more)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def split_items(
    records: list[bytes],
    fixed: int,
    n_title_at: int,
    n_text_at: int,
    n_title_terms_at: int,
    n_text_terms_at: int,
) -> tuple[bytes, bytes, bytes, bytes, bytes]: ...
def term_relevance(
    hashes: npt.NDArray[np.uint64],
    offsets: npt.NDArray[np.int64],
    title_counts: npt.NDArray[np.int64],
    query_terms: npt.NDArray[np.uint64],
    out: npt.NDArray[np.float32],
) -> list[int]: ...
def ranked_items(
    item_ids: list[str],
    scores: npt.NDArray[np.float32],
    top_k: int,
    item_known: npt.NDArray[np.bool_],
    pair_known: npt.NDArray[np.bool_],
    resolved: bool,
    described: npt.NDArray[np.bool_] | None,
    flags: tuple[list[str], ...],
) -> tuple[list[dict[str, Any]], bytes]: ...
def pack_keys(command: str, segments: list[str | tuple[str, list[str]]]) -> bytes: ...
def hash_buckets(
    out: npt.NDArray[np.int64],
    column: int,
    hashes: npt.NDArray[np.uint64],
    buckets: int,
    keep: npt.NDArray[np.bool_],
) -> None: ...
def int_buckets(
    out: npt.NDArray[np.int64], column: int, values: npt.NDArray[np.int32], buckets: int
) -> None: ...
def plain_item_ids(candidates: list[dict[str, str]]) -> list[str] | None: ...
