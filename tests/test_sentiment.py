import json
import random

import pytest
import torch

from nlp_lstm.data.tables import read_labelled, tokenize
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import DataError
from tests.cli_helpers import last_json, run_cli
from tests.conftest import step_results

GOOD = ["great", "wonderful", "fun", "moving", "superb", "charming"]
BAD = ["dull", "awful", "boring", "tedious", "bland", "messy"]
FILL = ["the", "film", "is", "a", "story", "with", "and", "cast", "plot", "it"]


def toy_reviews(count, seed, labels=("0", "1")):
    """Label 1 sentences contain a positive word, label 0 a negative one, among filler."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 12))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if label else BAD))
        rows.append((labels[label], " ".join(words)))
    return rows


def toy_vocabularies(rows, char="none"):
    """Tokenised sentences, integer labels, word vocabulary and (with char features) char
    vocabulary of labelled rows."""
    sentences = [text.split() for _, text in rows]
    labels = [int(label) for label, _ in rows]
    words = Vocab(sorted({w for s in sentences for w in s}))
    chars = Vocab(sorted({c for s in sentences for w in s for c in w})) if char != "none" else None
    return sentences, labels, words, chars


def write_tsv(path, rows):
    path.write_text("label\tsentence\n" + "".join(f"{label}\t{text}\n" for label, text in rows))
    return path


def test_reads_tsv_csv_jsonl_alike(tmp_path):
    rows = [("1", "a fine film"), ("0", "so dull , really")]
    tsv = write_tsv(tmp_path / "a.tsv", rows)
    csv_path = tmp_path / "a.csv"
    csv_path.write_text('text,stars\n"a fine film",1\n"so dull , really",0\n')
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"review": t, "y": int(label)}) + "\n" for label, t in rows)
    )
    for texts in (
        read_labelled(tsv, "sentence", "label"),
        read_labelled(csv_path, "text", "stars"),
        read_labelled(jsonl, "review", "y"),
    ):
        assert texts.tokens == [["a", "fine", "film"], ["so", "dull", ",", "really"]]
        assert texts.labels == ["1", "0"]
    # rows are numbered by their line in the file: after the header in a table, from 1 in JSONL
    assert read_labelled(tsv, "sentence", "label").lines == [2, 3]
    assert read_labelled(csv_path, "text", "stars").lines == [2, 3]
    assert read_labelled(jsonl, "review", "y").lines == [1, 2]
    assert tokenize("It's great, isn't it?", "words", True) == [
        "it's",
        "great",
        ",",
        "isn't",
        "it",
        "?",
    ]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("label\tsentence\n1\tgood\n0\tbad\textra\n", 3, "expected 2 columns"),
        ("label\tsentence\n1\tgood\n\tno label here\n", 3, "missing label"),
        ("label\tsentence\n1\tgood\n0\t   \n", 3, "empty text"),
        ("label\tsentence\n1\tgood\n0\n", 3, "expected 2 columns"),
        ("stars\ttext\n1\tgood\n", 1, "no column 'sentence'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_labelled(path, "sentence", "label")
    assert (
        info.value.line == line and message in info.value.message and info.value.path == str(path)
    )


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence": "ok", "label": 1}\n{"sentence": "oops", \n')
    with pytest.raises(DataError) as info:
        read_labelled(path, "sentence", "label")
    assert info.value.line == 2 and "JSON" in info.value.message


def test_tiny_model_learns_a_separable_task(tmp_path):
    from nlp_lstm.checkpoint import Bundle
    from nlp_lstm.contract import Job, Monitor
    from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
    from nlp_lstm.tasks.sentiment import (
        AttentionClassifier,
        SentimentModelConfig,
        make_score,
        predict,
    )
    from nlp_lstm.tasks.words import WordCollator, word_split
    from nlp_lstm.train.trainer import Trainer, TrainerConfig, seed_everything

    sentences, labels, words, _ = toy_vocabularies(toy_reviews(400, seed=0))
    seed_everything(0)
    model = AttentionClassifier(
        SentimentModelConfig(hidden_size=16, dropout=0.1),
        random_rows(len(words), 16),
        EmbeddingsConfig(),
        2,
    )
    split = word_split(sentences, labels, words)
    config = TrainerConfig(
        max_epochs=6, lr=0.01, progress_bar=False, device="cpu", lr_schedule="none"
    )
    job = Job(
        model, split, split, predict, make_score(2), Monitor("accuracy"), Bundle("sentiment", {})
    )
    best = Trainer(config, tmp_path).fit(job)
    collator = WordCollator(sentences, labels, words)
    assert best["accuracy"] >= 95.0
    # attention weights are a distribution over each sentence's real tokens
    model.eval()
    batch = collator([0, 1, 2, 3])
    with torch.no_grad():
        _, weights = model.scores(batch)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert torch.all(weights[~batch.mask] == 0)


def suffix_reviews(count, seed, stems, labels=("0", "1")):
    """Polarity lies in a made-up word's suffix ("-ful" positive, "-less" negative): with
    ``stems`` unseen in training, every such word is unknown and only its spelling tells."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
        word = rng.choice(stems) + ("ful" if label else "less")
        words.insert(rng.randrange(len(words) + 1), word)
        rows.append((labels[label], " ".join(words)))
    return rows


def made_up_stems(count, seed):
    rng = random.Random(seed)
    return [
        "".join(rng.choice("bcdgkmprtvz") + rng.choice("aiou") for _ in range(2))
        for _ in range(count)
    ]


@pytest.mark.parametrize("char", ["none", "cnn"])
def test_char_features_read_words_never_seen_in_training(tmp_path, char):
    from nlp_lstm.checkpoint import Bundle
    from nlp_lstm.contract import Job, Monitor
    from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
    from nlp_lstm.tasks.sentiment import (
        AttentionClassifier,
        SentimentModelConfig,
        make_score,
        predict,
    )
    from nlp_lstm.tasks.words import word_split
    from nlp_lstm.train.trainer import Trainer, TrainerConfig, seed_everything

    stems = sorted(set(made_up_stems(120, seed=0)))
    train_rows = suffix_reviews(600, 1, stems[:60])
    dev_rows = suffix_reviews(200, 2, stems[60:])
    sentences, labels, words, chars = toy_vocabularies(train_rows, char)
    dev_sentences, dev_labels, _, _ = toy_vocabularies(dev_rows)
    seed_everything(0)
    model = AttentionClassifier(
        SentimentModelConfig(hidden_size=16, dropout=0.1, char=char, char_hidden=16),
        random_rows(len(words), 16),
        EmbeddingsConfig(),
        2,
        len(chars) if chars else 0,
    )
    train = word_split(sentences, labels, words, chars=chars)
    dev = word_split(dev_sentences, dev_labels, words, chars=chars)
    batch = dev.collate(list(range(8)))
    if chars is None:
        assert batch.chars is None and batch.char_index is None
    else:  # each token's char row spells it
        for b, i in enumerate(batch.indices.tolist()):
            for t, token in enumerate(dev_sentences[i]):
                row = batch.chars[batch.char_index[b, t]]
                assert chars.decode(
                    row[: batch.char_lengths[batch.char_index[b, t]]].tolist()
                ) == list(token)
    config = TrainerConfig(
        max_epochs=8, lr=0.01, progress_bar=False, device="cpu", lr_schedule="none"
    )
    job = Job(
        model, train, dev, predict, make_score(2), Monitor("accuracy"), Bundle("sentiment", {})
    )
    best = Trainer(config, tmp_path).fit(job)
    # the dev words are all unknown: without chars the model can only guess
    assert best["accuracy"] >= 90.0 if char == "cnn" else best["accuracy"] <= 70.0


def test_cli_train_test_predict_round_trip(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_reviews(400, 1, ("neg", "pos")))
    dev = write_tsv(tmp_path / "dev.tsv", toy_reviews(100, 2, ("neg", "pos")))
    test = write_tsv(tmp_path / "test.tsv", toy_reviews(100, 3, ("neg", "pos")))
    run = tmp_path / "run"
    result = run_cli(
        "task=sentiment", f"data.train={train}", f"data.dev={dev}", "data.test=null", "embeddings=random",
        "embeddings.dim=16", "model.hidden_size=16", "trainer.max_epochs=6", "trainer.lr=0.01",
        "trainer.ema_decay=null",  # 78 steps: too few for the default average over ~1,000
        "trainer.progress_bar=false", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        set(metrics) == {"accuracy", "macro_f1", "n"}
        and metrics["n"] == 100
        and metrics["accuracy"] >= 90.0
    )
    assert last_json(result.stdout) == metrics
    for name in ("confusion.png", "curves.png", "metrics.csv", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    ckpt = run / "checkpoints" / "best.pt"
    result = run_cli(
        "task=sentiment",
        "mode=test",
        f"ckpt={ckpt}",
        f"data.test={test}",
        f"hydra.run.dir={tmp_path / 't'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = last_json(result.stdout)
    assert set(scores) == {"accuracy", "macro_f1", "n"} and scores["accuracy"] >= 90.0
    result = run_cli(
        "task=sentiment", "mode=predict", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'p'}",
        stdin="the film is wonderful\nit is dull and the plot is messy\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert first[0] == "pos" and second[0] == "neg"
    assert 0.5 < float(first[1]) <= 1.0
    top = [pair.split(":") for pair in first[2].split()]
    assert len(top) == 3 and all(word in first[3].split() for word, _ in top)
    weights = [float(w) for _, w in top]
    assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1.0001
    assert first[3] == "the film is wonderful"
    # a label the model never saw is a clear error at its line
    odd = write_tsv(tmp_path / "odd.tsv", [("pos", "fine"), ("meh", "so so")])
    result = run_cli(
        "task=sentiment",
        "mode=test",
        f"ckpt={ckpt}",
        f"data.test={odd}",
        f"hydra.run.dir={tmp_path / 'o'}",
    )
    assert result.returncode == 2 and f"{odd}:3: unknown label 'meh'" in result.stderr


def test_ptb_brackets_read_as_brackets_everywhere():
    assert tokenize("a -LRB- fine -rrb- film -lsb- x -RSB- -- - -lcb-", "whitespace", False) == [
        "a", "(", "fine", ")", "film", "[", "x", "]", "--", "-", "{"
    ]  # fmt: skip
    assert tokenize("A (fine) film", "words", True) == ["a", "(", "fine", ")", "film"]


def test_sst2_trains_on_the_phrase_file_when_it_is_there(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("label\tsentence\n1\tgood\n")

    def composed_train() -> str:
        done = run_cli("task=sentiment", f"data.root={tmp_path}", "--cfg", "job", "--resolve")
        assert done.returncode == 0, done.stderr[-2000:]
        return next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if "train:" in line)

    assert composed_train() == f"{tmp_path}/sst2/train.tsv"
    (tmp_path / "sst2" / "train_phrases.tsv").write_text("label\tsentence\n1\tgood\n")
    assert composed_train() == f"{tmp_path}/sst2/train_phrases.tsv"


def test_cli_char_features_round_trip(tmp_path):
    stems = sorted(set(made_up_stems(120, seed=0)))
    train = write_tsv(tmp_path / "train.tsv", suffix_reviews(600, 1, stems[:60]))
    dev = write_tsv(tmp_path / "dev.tsv", suffix_reviews(100, 2, stems[60:90]))
    test = write_tsv(tmp_path / "test.tsv", suffix_reviews(100, 3, stems[90:]))
    run = tmp_path / "run"
    result = run_cli(
        "task=sentiment", f"data.train={train}", f"data.dev={dev}", "data.test=null", "embeddings=random",
        "embeddings.dim=16", "model.hidden_size=16", "model.char=cnn", "model.char_hidden=16",
        "model.dropout=0.1", "trainer.max_epochs=8", "trainer.lr=0.01", "trainer.ema_decay=null",
        "trainer.progress_bar=false", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 90.0
    ckpt = run / "checkpoints" / "best.pt"
    # the checkpoint brings its char vocabulary: words unseen anywhere are still read
    result = run_cli(
        "task=sentiment", "mode=test", f"ckpt={ckpt}", f"data.test={test}",
        f"hydra.run.dir={tmp_path / 't'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json(result.stdout)["accuracy"] >= 90.0
    result = run_cli(
        "task=sentiment", "mode=predict", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'p'}",
        stdin="the film is zapofful\nthe film is zapofless\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split("\t")[0] for line in result.stdout.strip().splitlines()] == ["1", "0"]
    out = tmp_path / "model.onnx"
    result = run_cli(
        "task=sentiment", "mode=export", f"ckpt={ckpt}", "export.format=onnx", f"export.path={out}",
        f"hydra.run.dir={tmp_path / 'e'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["inputs"] == ["words", "lengths", "chars"] and "z" in meta["chars"]


@pytest.mark.parametrize(
    ("char", "pooling"), [("cnn", "attention"), ("none", "max"), ("lstm", "last")]
)
def test_batches_padded_to_multiples_give_the_same_loss_gradients_and_classes(char, pooling):
    # data.pad_multiple rounds batch shapes up (as for NER); padding changes nothing computed
    from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
    from nlp_lstm.tasks.sentiment import (
        AttentionClassifier,
        SentimentModelConfig,
        predict,
    )
    from nlp_lstm.tasks.words import word_split

    sentences, labels, words, chars = toy_vocabularies(toy_reviews(12, seed=4), char)
    torch.manual_seed(0)
    config = SentimentModelConfig(
        hidden_size=8, dropout=0.0, pooling=pooling, char=char, char_dim=4, char_hidden=4
    )
    model = AttentionClassifier(
        config, random_rows(len(words), 6), EmbeddingsConfig(), 2, len(chars) if chars else 0
    )
    results = []
    for multiple in (1, 8):
        batch = word_split(sentences, labels, words, chars, multiple).collate(list(range(12)))
        width = max(len(s) for s in sentences)
        assert batch.words.shape[1] == (width if multiple == 1 else -(-width // 8) * 8)
        results.append(step_results(model, batch, predict))
    (loss1, n1, grads1, out1), (loss8, n8, grads8, out8) = results
    assert n1 == n8 == 12 and [o.label for o in out1] == [o.label for o in out8]
    torch.testing.assert_close(loss1, loss8)
    for g1, g8 in zip(grads1, grads8, strict=True):
        torch.testing.assert_close(g1, g8)
    for o1, o8 in zip(out1, out8, strict=True):  # attention weights only over real tokens
        torch.testing.assert_close(torch.tensor(o1.probabilities), torch.tensor(o8.probabilities))
        if o1.attention is not None:
            torch.testing.assert_close(torch.tensor(o1.attention), torch.tensor(o8.attention))
