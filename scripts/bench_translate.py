"""Translation speed: training pairs/s and seconds per epoch (fp32 vs bf16), and decoding
time of the dev set, greedy against beam search, with peak memory beside every time.

Runs on Multi30k from the data root (NLP_LSTM_DATA or --data-root) or, when that is absent,
on a synthetic corpus of the same shape (29,000 training pairs, 1,014 dev). Decoding uses a
trained model with ``--ckpt`` (its BLEU is reported too), else the model after the timed
training batches. Prints a table; ``--json FILE`` writes the results.

    python scripts/bench_translate.py [--ckpt runs/.../best.pt] [--device cpu|cuda]
        [--limit-batches N] [--json scripts/results/bench_translate_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from nlp_lstm.checkpoint import load_checkpoint
from nlp_lstm.config import conf_dir, register_schemas, to_dataclass
from nlp_lstm.contract import Split
from nlp_lstm.data.parallel import encode
from nlp_lstm.tasks import translate
from nlp_lstm.train.process import configure_process
from nlp_lstm.train.runlog import peak_rss_mib
from nlp_lstm.train.settings import TrainerConfig


def synthetic_pairs(prefix: Path, pairs: int, seed: int) -> None:
    """Random sentence pairs with Multi30k's length profile (~12 words a side)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(6000)]
    for lang in ("de", "en"):
        lines = [
            " ".join(rng.choice(words) for _ in range(max(3, int(rng.gauss(12, 4))))) + " ."
            for _ in range(pairs)
        ]
        Path(f"{prefix}.{lang}").write_text("\n".join(lines) + "\n")


def corpus(data_root: str | None, workdir: Path) -> tuple[str, str, str]:
    root = Path(data_root or os.environ.get("NLP_LSTM_DATA", "data")) / "multi30k"
    if (root / "train.de").is_file() and (root / "val.de").is_file():
        return str(root / "train"), str(root / "val"), "Multi30k"
    synthetic_pairs(workdir / "train", 29000, 1)
    synthetic_pairs(workdir / "val", 1014, 2)
    return str(workdir / "train"), str(workdir / "val"), "synthetic (Multi30k shape)"


def timed(trainer, model, split, predict) -> tuple[float, list[str]]:
    start = time.perf_counter()
    scored, outputs = trainer.predict(model, split, predict)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    if len(scored) != len(split):
        raise RuntimeError("decoding was cut short (trainer.limit_eval_batches)")
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--ckpt", default=None, help="a trained translate checkpoint")
    parser.add_argument("--precisions", nargs="+", default=["32", "bf16"])
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--limit-batches", type=int, default=60, help="timed training batches")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_translate_"))
    train, dev, source = corpus(args.data_root, work)
    base = [
        "task=translate",
        f"data.train={train}",
        f"data.dev={dev}",
        f"trainer.device={args.device}",
        "trainer.progress_bar=false",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.limit_batches}",
        "trainer.limit_eval_batches=1",
        *args.overrides,
    ]
    results: dict = {"corpus": source, "torch": torch.__version__, "training": [], "decoding": []}
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for precision in args.precisions:
            cfg = compose("config", overrides=[*base, f"trainer.precision={precision}"])
            configure_process(to_dataclass(TrainerConfig, cfg.trainer, "trainer"))
            job, trainer, (_, target_tok, dev_pairs, decode_cfg) = translate.setup(cfg, None)
            trainer.run_dir = work / f"run-{precision}"
            trainer.fit(job)
            row = trainer.state.history[-1]
            batches = len(trainer.loader(job.train, train=True))
            results["device"] = str(trainer.device)
            results["training"].append(
                {
                    "precision": precision,
                    "train_pairs_per_s": round(row["train_examples_per_s"], 1),
                    "epoch_seconds": round(
                        row["epoch_seconds"] * batches / min(batches, args.limit_batches), 1
                    ),
                    "peak_rss_mib": peak_rss_mib(),
                }
            )

        # decoding: a trained checkpoint when given, else the last model timed above
        if args.ckpt:
            loaded = translate.load(load_checkpoint(args.ckpt, "translate"), "cpu")
            model, source_tok, target_tok = (
                loaded.model,
                loaded.source_tokenizer,
                loaded.target_tokenizer,
            )
        else:
            model = job.model
            source_tok = translate.load_tokenizer(job.bundle.extras["source_tokenizer"])
        split = translate.pair_split(encode(source_tok, dev_pairs.source), None, dev_pairs.target)
        for precision in args.precisions:
            overrides = [*base, f"trainer.precision={precision}", "trainer.limit_eval_batches=null"]
            trainer = translate.make_trainer(compose("config", overrides=overrides), None)
            for beam in sorted({1, args.beam_size}):
                predict = translate.make_predict(target_tok, decode_cfg, beam)
                warm_up = Split(split.examples[:64], split.lengths[:64], split.collate)
                timed(trainer, model, warm_up, predict)
                seconds, outputs = timed(trainer, model, split, predict)
                scores = translate.bleu_scores(outputs, dev_pairs.target) if args.ckpt else {}
                results["decoding"].append(
                    {
                        "precision": precision,
                        "beam_size": beam,
                        "seconds": round(seconds, 2),
                        "sents_per_s": round(len(split) / seconds, 1),
                        "bleu": scores.get("bleu"),
                        "peak_rss_mib": peak_rss_mib(),
                    }
                )
    greedy = {r["precision"]: r["seconds"] for r in results["decoding"] if r["beam_size"] == 1}
    for row in results["decoding"]:
        row["vs_greedy"] = round(row["seconds"] / greedy[row["precision"]], 2)

    print(f"corpus: {source}   device: {results['device']}   torch {torch.__version__}   "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'precision':>9} {'pairs/s':>9} {'s/epoch':>9} {'peak MiB':>9}")
    for r in results["training"]:
        print(f"{r['precision']:>9} {r['train_pairs_per_s']:>9} {r['epoch_seconds']:>9} "
              f"{r['peak_rss_mib']:>9}")  # fmt: skip
    print(f"{'precision':>9} {'beam':>5} {'seconds':>8} {'sents/s':>8} {'x greedy':>8} "
          f"{'BLEU':>6} {'peak MiB':>9}")  # fmt: skip
    for r in results["decoding"]:
        print(f"{r['precision']:>9} {r['beam_size']:>5} {r['seconds']:>8} {r['sents_per_s']:>8} "
              f"{r['vs_greedy']:>8} {r['bleu'] if r['bleu'] is not None else '-':>6} "
              f"{r['peak_rss_mib']:>9}")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
