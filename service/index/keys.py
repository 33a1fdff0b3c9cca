"""The Redis key schema of the static index (DESIGN 6).

    <ns>:live                      the live version (a string); switching it is one SET
    <ns>:version_seq               INCR numbers each load; its version is "<n>-<8 random hex>",
                                   unique across Redis restarts (the number restarts at 1)
    <ns>:versions                  hash: version -> JSON state (loading | live | retired)
    <ns>:load_lock                 one loader at a time (SET NX with a TTL it keeps renewing)
    <ns>:<v>:meta                  JSON: the snapshot meta, counts, when loaded
    <ns>:<v>:lexical:index         the faiss index of the known queries' lexical vectors
    <ns>:<v>:lexical:texts         their normalized texts, newline-separated, in index order
    <ns>:<v>:query:<qh>            category, reduced vector and the query's (query, item) pair
                                   vectors by item id hash; qh = 16 hex of the text's hash
    <ns>:<v>:item:<item id>        features, reduced vector, title and text
    <ns>:<v>:user:<user id>        features and the last <= 50 (query, pair) vectors

Keys carry no hash tag: on Redis Cluster a version spreads over every shard, and the store reads
a request's keys with one pipelined MGET per shard. Pairs live in their query's record, not a key
each: a request reads one query record, not one key per candidate of which most are missing
(service/index/records.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.index.snapshot import key_hash

DEFAULT_NAMESPACE = "rank"


def query_hash(normalized_text: str) -> str:
    """The key fragment of a query: 16 hex digits of its 64-bit hash."""
    return f"{key_hash('query', normalized_text):016x}"


@dataclass(frozen=True)
class KeySchema:
    namespace: str = DEFAULT_NAMESPACE

    @property
    def live(self) -> str:
        return f"{self.namespace}:live"

    @property
    def sequence(self) -> str:
        return f"{self.namespace}:version_seq"

    @property
    def versions(self) -> str:
        return f"{self.namespace}:versions"

    @property
    def lock(self) -> str:
        return f"{self.namespace}:load_lock"

    def prefix(self, version: str) -> str:
        return f"{self.namespace}:{version}:"

    def meta(self, version: str) -> str:
        return f"{self.prefix(version)}meta"

    def lexical_index(self, version: str) -> str:
        return f"{self.prefix(version)}lexical:index"

    def lexical_texts(self, version: str) -> str:
        return f"{self.prefix(version)}lexical:texts"

    def query(self, version: str, normalized_text: str) -> str:
        return f"{self.prefix(version)}query:{query_hash(normalized_text)}"

    def item(self, version: str, item_id: str) -> str:
        return f"{self.prefix(version)}item:{item_id}"

    def user(self, version: str, user_id: str) -> str:
        return f"{self.prefix(version)}user:{user_id}"
