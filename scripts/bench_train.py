"""End-to-end NER speed: training and decoding sentences/s for the default model, fp32 vs
bf16, and the time to get the vocabulary's vectors cold (read GloVe) vs cached.

Runs on CoNLL-2003 from the data root (NLP_LSTM_DATA or --data-root) or, when that is
absent, on a synthetic corpus of the same shape (14,041 training sentences, 3,250 dev).
Prints a table; ``--json FILE`` writes the results.

    python scripts/bench_train.py [--device cpu|cuda] [--limit-batches N] [--json bench_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from nlp_lstm.config import conf_dir, register_schemas, to_dataclass
from nlp_lstm.data.conll import read_conll
from nlp_lstm.data.vectors import EmbeddingsConfig, build_vocab_and_vectors
from nlp_lstm.tasks.ner import predict, setup
from nlp_lstm.train.process import configure_process
from nlp_lstm.train.runlog import peak_rss_mib
from nlp_lstm.train.settings import TrainerConfig


def synthetic_conll(path: Path, sentences: int, seed: int) -> None:
    """Random sentences with CoNLL-2003's length profile (mean ~14.5 tokens)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(20000)] + [
        "Germany",
        "EU",
        "Peter",
        "London",
        "said",
        "the",
        ".",
    ]
    tags = ["O"] * 8 + ["B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG", "B-MISC"]
    lines = []
    for _ in range(sentences):
        for _ in range(max(1, min(124, int(rng.lognormvariate(2.45, 0.7))))):
            lines.append(f"{rng.choice(words)} NN O {rng.choice(tags)}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def corpus(data_root: str | None, workdir: Path) -> tuple[str, str, str]:
    root = Path(data_root or os.environ.get("NLP_LSTM_DATA", "data")) / "conll2003"
    if (root / "train.txt").is_file() and (root / "dev.txt").is_file():
        return str(root / "train.txt"), str(root / "dev.txt"), "CoNLL-2003"
    synthetic_conll(workdir / "train.txt", 14041, 1)
    synthetic_conll(workdir / "dev.txt", 3250, 2)
    return str(workdir / "train.txt"), str(workdir / "dev.txt"), "synthetic (CoNLL-2003 shape)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--precisions", nargs="+", default=["32", "bf16"])
    parser.add_argument(
        "--limit-batches",
        type=int,
        default=None,
        help="train batches per measurement (default: a full epoch)",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. model.char=lstm")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    train, dev, source = corpus(args.data_root, work)
    base = [
        f"data.train={train}",
        f"data.dev={dev}",
        "data.test=null",
        f"trainer.device={args.device}",
        "trainer.progress_bar=false",
    ]
    results: dict = {"corpus": source, "torch": torch.__version__, "runs": []}
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        # vectors: cold (read all 400k GloVe vectors, filter, write the cache) vs cached
        cfg = compose("config", overrides=[*base, f"embeddings.cache_dir={work / 'cache'}"])
        configure_process(to_dataclass(TrainerConfig, cfg.trainer, "trainer"))
        emb = to_dataclass(EmbeddingsConfig, cfg.embeddings, "embeddings")
        sentences = read_conll(train)
        counts = Counter(t for s in sentences for t in s.tokens)
        extra = [t for s in read_conll(dev) for t in s.tokens]
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            build_vocab_and_vectors(counts, extra, emb)
            timings.append(time.perf_counter() - start)
        results["vectors_cold_s"], results["vectors_cached_s"] = timings
        results["vectors_peak_rss_mib"] = peak_rss_mib()

        for precision in args.precisions:
            overrides = [
                *base,
                f"trainer.precision={precision}",
                "trainer.max_epochs=1",
                *args.overrides,
            ]
            if args.limit_batches:
                overrides.append(f"trainer.limit_train_batches={args.limit_batches}")
            job, trainer = setup(compose("config", overrides=overrides), None)
            trainer.run_dir = work / f"run-{precision}"
            job.score = lambda outputs, split: {"f1": 0.0}  # time training, not scoring
            trainer.fit(job)
            row = trainer.state.history[-1]
            batches = len(trainer.loader(job.train, train=True))

            def decode(trainer=trainer, job=job):
                start = time.perf_counter()
                trainer.predict(job.model, job.dev, predict)
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                return time.perf_counter() - start

            decode()  # warm-up
            seconds = decode()
            results["device"] = str(trainer.device)
            results["runs"].append(
                {
                    "precision": precision,
                    "train_sents_per_s": row["train_examples_per_s"],
                    "epoch_seconds": row["epoch_seconds"]
                    * batches
                    / min(batches, args.limit_batches or 10**9),
                    "decode_sents_per_s": len(job.dev) / seconds,
                    "peak_rss_mib": peak_rss_mib(),
                }
            )

    print(
        f"corpus: {source}   device: {results['device']}   torch {torch.__version__}   threads {torch.get_num_threads()}"
    )
    print(
        f"vectors for the vocabulary: cold {results['vectors_cold_s']:.2f} s, cached {results['vectors_cached_s']:.3f} s"
    )
    print(
        f"{'precision':>9} | {'train sent/s':>12} {'s/epoch':>8} | {'decode sent/s':>13} | {'peak RSS MiB':>12}"
    )
    for r in results["runs"]:
        print(
            f"{r['precision']:>9} | {r['train_sents_per_s']:12.0f} {r['epoch_seconds']:8.1f} | {r['decode_sents_per_s']:13.0f} | {r['peak_rss_mib']:12.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
