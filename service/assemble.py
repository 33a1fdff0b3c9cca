"""Feature assembly: one request's features from the index -> the named arrays a graph takes.

The arrays are built by the contract's own encoders (`FeatureField.encode`, `relevance_features`,
`tokenize`), the functions training used, so train and serve cannot skew. Which text feeds what:

- the query's vector, category and id bucket come from the known query the store resolved
  (exact text, or the nearest by lexical similarity), because those are what the model learned;
- the lexical features (query length, the five relevance features) are computed from the
  request's own text, which is exact for any text;
- an unresolved query has zero vectors, category "missing" and its own (untrained) id bucket;
- an empty query is a recommendation request: is_search 0, zero pair vectors marked known (the
  model trained on zeros there, not on the approximator's guess).

Items the index lacks take values from the request's ``features`` where given (category, brand,
price bucket, title, text), else defaults; their id is the missing bucket and their item and
pair vectors zeros, as training shows such items (`ImpressionFeatures.hide_items`). The display
position is no input: training learns its bias apart from the model, so the served function is
the one evaluated offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service._kernels import hash_buckets, int_buckets
from service.contract import (
    HISTORY_LENGTH,
    MISSING_BUCKET,
    FeatureSpec,
    ItemTerms,
    relevance_features_of_terms,
    tokenize,
)
from service.index.snapshot import VECTOR_DTYPE
from service.schemas import SuppliedFeatures
from service.store import RequestFeatures

Arrays = dict[str, npt.NDArray[Any]]
#: Item values a request may supply per candidate (used where the index has no value).
SUPPLIED_INT_FEATURES = ("item_category", "item_brand", "item_price_bucket")
#: The categorical fields with one value per request, and those with one per candidate.
REQUEST_FIELDS = (
    "user_id",
    "user_age",
    "user_gender",
    "user_city_tier",
    "query_id",
    "query_category",
    "is_search",
    "hour",
)
ITEM_FIELDS = ("item_id", "item_brand", "item_category", "item_price_bucket")
#: The item fields whose hashes the index stores (contract.item_hashes).
HASHED_ITEM_FIELDS = ("item_id", "item_brand")


def _int_or_none(value: int) -> int | None:
    return None if value < 0 else value


class Assembler:
    """Builds graph inputs for one feature contract (shared by every model of that contract)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.categorical = tuple(f.name for f in spec.select(kind="categorical"))
        self.dense = tuple(f.name for f in spec.select(kind="dense"))
        self.relevance = spec.relevance_features
        self.fields = {f.name: f for f in spec.fields}  # by name, without a scan per lookup
        without_source = (set(self.categorical) - set(REQUEST_FIELDS) - set(ITEM_FIELDS)) | (
            set(self.dense) - {"history_length", "query_length", *self.relevance}
        )
        if without_source:
            raise ValueError(f"no online source for the features {sorted(without_source)}")
        # Column positions, so a request fills each matrix with a few whole-column writes.
        self._item_columns = {name: self.categorical.index(name) for name in ITEM_FIELDS}
        for name in HASHED_ITEM_FIELDS:
            if not self.fields[name].hashed:
                raise ValueError(f"{name}: the index stores its hashes; the field must be hashed")
        self._history_length_column = self.dense.index("history_length")
        self._query_length_column = self.dense.index("query_length")
        self._relevance_columns = [self.dense.index(name) for name in self.relevance]

    def _int_column(
        self, out: npt.NDArray[np.int64], name: str, values: npt.NDArray[np.int32]
    ) -> None:
        """``out``'s column of a per-item integer field: in one C pass (`_kernels.int_buckets`,
        the contract's rule for small integers) unless the contract hashes the field."""
        field, column = self.fields[name], self._item_columns[name]
        if field.hashed or field.buckets is None:
            out[:, column] = field.encode(values)
        else:
            int_buckets(out, column, values, field.buckets)

    def assemble(
        self,
        user_id: str,
        query: str,
        item_ids: Sequence[str],
        features: RequestFeatures,
        hour: int,
        supplied: Sequence[SuppliedFeatures | None] | None = None,
    ) -> Arrays:
        """All inputs of every family: each graph takes the subset it names."""
        fields, n = self.fields, len(item_ids)
        c, q, u = features.candidates, features.query, features.user
        category, brand, price = c.category, c.brand, c.price_bucket
        titles: Sequence[str] = c.titles
        texts: Sequence[str] = c.texts
        # Supplied values stand in only for items the index lacks.
        filled = [
            (i, extra)
            for i, extra in enumerate(supplied or ())
            if extra is not None and not c.item_known[i]
        ]
        if filled:
            category, brand, price = category.copy(), brand.copy(), price.copy()
            title_list, text_list = list(titles), list(texts)
            for i, extra in filled:
                for name, column in zip(
                    SUPPLIED_INT_FEATURES, (category, brand, price), strict=True
                ):
                    value = getattr(extra, name)
                    if value is not None:
                        column[i] = value
                title_list[i] = extra.title if extra.title is not None else title_list[i]
                text_list[i] = extra.text if extra.text is not None else text_list[i]
            titles, texts = title_list, text_list

        is_search = q.match.kind != "empty"
        resolved = q.match.row >= 0
        id_text = q.match.matched_text if resolved else q.match.text
        # Request-level fields are one bucket for every row; per-item fields are columns.
        per_request = {
            "user_id": fields["user_id"].encode_one(user_id),
            "user_age": fields["user_age"].encode_one(_int_or_none(u.age)),
            "user_gender": fields["user_gender"].encode_one(_int_or_none(u.gender)),
            "user_city_tier": fields["user_city_tier"].encode_one(_int_or_none(u.city_tier)),
            "query_id": fields["query_id"].encode_one(id_text),
            "query_category": fields["query_category"].encode_one(_int_or_none(q.category)),
            "is_search": fields["is_search"].encode_one(int(is_search)),
            "hour": fields["hour"].encode_one(hour),
        }
        categorical = np.empty((n, len(self.categorical)), dtype=np.int64)
        categorical[:] = [per_request.get(name, MISSING_BUCKET) for name in self.categorical]
        # Item ids and brands are bucketed from the hashes the index stores (one C pass each).
        # An item the index lacks gets the missing id bucket: models trained with hidden items
        # (train.unknown_item_share) learnt it as "unknown"; its own id's bucket would be one no
        # training row updated.
        item_id, item_brand = fields["item_id"], fields["item_brand"]
        assert item_id.buckets is not None and item_brand.buckets is not None
        columns = self._item_columns
        hash_buckets(categorical, columns["item_id"], c.id_hash, item_id.buckets, c.item_known)
        brand_from_index = c.item_known & (brand >= 0)
        hash_buckets(
            categorical, columns["item_brand"], c.brand_hash, item_brand.buckets, brand_from_index
        )
        if filled:  # a brand the request supplies for an item the index lacks: hashed here
            for i in np.flatnonzero(~brand_from_index & (brand >= 0)).tolist():
                categorical[i, columns["item_brand"]] = item_brand.encode_one(int(brand[i]))
        self._int_column(categorical, "item_category", category)
        self._int_column(categorical, "item_price_bucket", price)
        dense = np.empty((n, len(self.dense)), dtype=np.float32)
        dense[:, self._history_length_column] = len(u.history_query_vec) / HISTORY_LENGTH
        dense[:, self._query_length_column] = len(tokenize(query)) / 4.0
        # (N, 5) from the index's term hashes; an item without any (unknown, nothing supplied)
        # gets zeros. Supplied titles and texts are hashed here, for every candidate at once.
        terms = ItemTerms.of_texts(titles, texts) if filled else c.terms
        lexical = relevance_features_of_terms(query, q.category, terms, titles, category)
        dense[:, self._relevance_columns] = lexical

        # Vectors stay float16, as the index stores them: the graph widens them (export.onnx).
        dim = len(q.vec)
        history_query = np.zeros((1, HISTORY_LENGTH, dim), dtype=VECTOR_DTYPE)
        history_pair = np.zeros((1, HISTORY_LENGTH, dim), dtype=VECTOR_DTYPE)
        length = min(len(u.history_query_vec), HISTORY_LENGTH)
        history_query[0, :length] = u.history_query_vec[-length:] if length else 0.0
        history_pair[0, :length] = u.history_pair_vec[-length:] if length else 0.0
        mask = np.zeros((1, HISTORY_LENGTH), dtype=bool)
        mask[0, :length] = True
        # Recommendation: zeros are the truth. An unknown item: zeros, as training hid items;
        # the approximator guesses a pair from the item's vector, which an unknown item lacks.
        pair_known = c.pair_known | (not is_search) | ~c.item_known
        inputs: Arrays = {
            "categorical": categorical,
            "dense": dense,
            "item_vec": c.item_vec,
            "pair_vec": c.pair_vec,
            "pair_known": pair_known,
            "query_vec": q.vec.reshape(1, dim),
            "history_query_vec": history_query,
            "history_pair_vec": history_pair,
            "history_mask": mask,
        }
        return inputs
