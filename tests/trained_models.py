"""One tiny trained model of each task, trained once per test session (the
``trained_models`` fixture in conftest.py): the API, serving and browser tests share them."""

from pathlib import Path

from tests.cli_helpers import run_main
from tests.conftest import toy_ner_sentences, write_conll
from tests.test_charlm import VERSE
from tests.test_forecast import sines, write_series
from tests.test_sentiment import toy_reviews, write_tsv
from tests.test_translate import write_pairs

QUIET = ["trainer.progress_bar=false"]


def train(task: str, run: Path, *args: str) -> Path:
    code, _, stderr = run_main(f"task={task}", *args, *QUIET, f"hydra.run.dir={run}")
    assert code == 0, stderr[-3000:]
    return run / "checkpoints" / "best.pt"


def train_all(root: Path) -> dict:
    """One tiny trained model of each task under ``root``, and the files it was trained on."""
    files = {
        "ner_train": write_conll(root / "train.txt", toy_ner_sentences(300, seed=1)),
        "ner_dev": write_conll(root / "dev.txt", toy_ner_sentences(40, seed=2)),
        "sst_train": write_tsv(root / "train.tsv", toy_reviews(300, 1, ("neg", "pos"))),
        "sst_dev": write_tsv(root / "dev.tsv", toy_reviews(60, 2, ("neg", "pos"))),
        "verse": root / "verse.txt",
        "series": write_series(root / "load.csv", sines(400)),
    }
    files["verse"].write_text("ROMEO: KING: To be, or not to be\n" * 5 + VERSE * 40)
    write_pairs(root / "mt_train", 200, seed=1)
    write_pairs(root / "mt_dev", 20, seed=2)
    ckpt = {
        "ner": train("ner", root / "ner", f"data.train={files['ner_train']}",
                     f"data.dev={files['ner_dev']}", "data.test=null", "embeddings=random",
                     "embeddings.dim=16", "model.hidden_size=24", "model.char_dim=12",
                     "model.char_hidden=12", "trainer.batch_size=16", "trainer.lr=0.01",
                     "trainer.lr_schedule=none", "trainer.max_epochs=3"),
        "sentiment": train("sentiment", root / "sst", f"data.train={files['sst_train']}",
                           f"data.dev={files['sst_dev']}", "data.test=null", "embeddings=random",
                           "embeddings.dim=16", "model.hidden_size=16", "model.char_hidden=8",
                           "trainer.max_epochs=3", "trainer.lr=0.01"),
        "charlm": train("charlm", root / "lm", f"data.train={files['verse']}", "data.seq_len=40",
                        "model.hidden_size=32", "model.num_layers=1", "trainer.max_epochs=2",
                        "trainer.batch_size=8", "sample.length=10"),
        "translate": train("translate", root / "mt", f"data.train={root / 'mt_train'}",
                           f"data.dev={root / 'mt_dev'}", "data.tokenizer=word",
                           "model.embedding_dim=16", "model.hidden_size=32",
                           "trainer.max_epochs=2", "trainer.batch_size=16"),
        "forecast": train("forecast", root / "fc", f"data.path={files['series']}",
                          "data.look_back=24", "data.horizon=6", "model.hidden_size=16",
                          "model.segment=6", "model.members=2", "trainer.max_epochs=2"),
    }  # fmt: skip
    return {"ckpt": ckpt, "files": files, "root": root}
