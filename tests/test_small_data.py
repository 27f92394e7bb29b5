"""Each task's default recipe, on a 2,000-example slice of its real corpus for 2 epochs,
must be clearly better than chance or the trivial baseline on held-out examples: a default
that cannot learn from small data fails here, not for a user. Needs the corpora
(``NLP_LSTM_DATA``, as CI sets it); skipped without them."""

import math
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, last_json, run_main

DATA = Path(os.environ.get("NLP_LSTM_DATA", REPO.parent / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "conll2003" / "train.txt").is_file(), reason="needs the corpora: NLP_LSTM_DATA"
)
EXAMPLES, EPOCHS = 2000, 2


def train_and_test(
    task: str, run: Path, *args: str, test: tuple[str, ...] = ()
) -> tuple[dict, dict]:
    """The default recipe trained for EPOCHS, then ``mode=test`` on held-out data."""
    code, stdout, stderr = run_main(f"task={task}", *args, f"trainer.max_epochs={EPOCHS}",
                                    "trainer.progress_bar=false", f"hydra.run.dir={run}")  # fmt: skip
    assert code == 0, stderr[-3000:]
    trained = last_json(stdout)
    code, stdout, stderr = run_main(f"task={task}", "mode=test",
                                    f"ckpt={run}/checkpoints/best.pt", *test)  # fmt: skip
    assert code == 0, stderr[-3000:]
    return trained, last_json(stdout)


def conll_sentences(path: Path) -> list[str]:
    blocks = path.read_text().split("\n\n")
    return [b.strip("\n") for b in blocks if b.strip() and not b.startswith("-DOCSTART-")]


def test_ner(tmp_path):
    train = conll_sentences(DATA / "conll2003" / "train.txt")[:EXAMPLES]
    dev = conll_sentences(DATA / "conll2003" / "dev.txt")
    for name, rows in (("train", train), ("dev", dev[:500]), ("held", dev[500:1500])):
        (tmp_path / f"{name}.txt").write_text("\n\n".join(rows) + "\n")
    _, held = train_and_test(
        "ner", tmp_path / "run", f"data.train={tmp_path / 'train.txt'}",
        f"data.dev={tmp_path / 'dev.txt'}", "data.test=null",
        test=(f"data.test={tmp_path / 'held.txt'}",),
    )  # fmt: skip
    assert held["f1"] > 50  # tagging everything O scores 0


def test_sentiment(tmp_path):
    header, *rows = (DATA / "sst2" / "train.tsv").read_text().splitlines()
    _, *dev = (DATA / "sst2" / "dev.tsv").read_text().splitlines()
    for name, part in (("train", rows[:EXAMPLES]), ("dev", dev[:300]), ("held", dev[300:])):
        (tmp_path / f"{name}.tsv").write_text("\n".join([header, *part]) + "\n")
    _, held = train_and_test(
        "sentiment", tmp_path / "run", f"data.train={tmp_path / 'train.tsv'}",
        f"data.dev={tmp_path / 'dev.tsv'}", "data.test=null",
        test=(f"data.test={tmp_path / 'held.tsv'}",),
    )  # fmt: skip
    majority = max(Counter(line.split("\t")[0] for line in dev[300:]).values()) / len(dev[300:])
    assert held["accuracy"] > 100 * majority + 10  # two classes: chance is ~50%


def test_charlm(tmp_path):
    # an example of a char LM is a window of data.seq_len (128) next-char predictions
    text = (DATA / "tinyshakespeare" / "input.txt").read_text()
    train, held = text[: EXAMPLES * 128], text[EXAMPLES * 128 : EXAMPLES * 128 + 50_000]
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "held.txt").write_text(held)
    _, scores = train_and_test(
        "charlm", tmp_path / "run", f"data.train={tmp_path / 'train.txt'}",
        test=(f"data.test={tmp_path / 'held.txt'}",),
    )  # fmt: skip
    counts = Counter(train)  # the trivial model: each char at its training frequency
    unigram = -sum(math.log2(counts[c] / len(train)) for c in held if c in counts) / len(held)
    assert scores["bpc"] < unigram - 0.5


def test_translate(tmp_path):
    for side in ("de", "en"):
        lines = (DATA / "multi30k" / f"train.{side}").read_text().splitlines()
        (tmp_path / f"train.{side}").write_text("\n".join(lines[:EXAMPLES]) + "\n")
        val = (DATA / "multi30k" / f"val.{side}").read_text().splitlines()
        (tmp_path / f"dev.{side}").write_text("\n".join(val[:300]) + "\n")
        (tmp_path / f"held.{side}").write_text("\n".join(val[300:600]) + "\n")
    _, held = train_and_test(
        "translate", tmp_path / "run", f"data.train={tmp_path / 'train'}",
        f"data.dev={tmp_path / 'dev'}", test=(f"data.test={tmp_path / 'held'}",),
    )  # fmt: skip
    from sacrebleu.metrics import CHRF

    sources = (tmp_path / "held.de").read_text().splitlines()
    references = (tmp_path / "held.en").read_text().splitlines()
    copied = CHRF().corpus_score(sources, [references]).score  # the source as its translation
    assert held["chrf"] > copied + 5


def test_forecast(tmp_path):
    rows = (DATA / "ett" / "ETTh1.csv").read_text().splitlines()
    # 70/10/20 by time: ~2,000 training windows of the default look-back and horizon
    (tmp_path / "slice.csv").write_text("\n".join(rows[: 1 + 3100]) + "\n")
    trained, _ = train_and_test("forecast", tmp_path / "run", f"data.path={tmp_path / 'slice.csv'}",
                                test=(f"data.path={tmp_path / 'slice.csv'}",))  # fmt: skip
    assert trained["test_mse"] < trained["test_mse_repeat"]  # beats repeating the last value
