"""Inference speed of exported models on the CPU: eager PyTorch, TorchScript, ONNX Runtime
and int8 dynamic quantisation (TorchScript and ONNX), for the NER tagger and the sentiment
classifier, each with its dev score, so a speed-up never hides a worse model.

Each variant runs in a fresh process (its own peak RSS) over the whole dev set, sorted by
length in batches of ``--batch-size``; the time includes turning tokens into tensors. The
eager baseline is the package's own predict path (packed sequences, the fast CRF); "same %"
is the share of sentences whose output (tag sequence, class) equals the eager one.

    NLP_LSTM_DATA=../shared/data python scripts/bench_export.py \
        --ner-ckpt runs/ner/.../best.pt --sentiment-ckpt runs/sentiment/.../best.pt \
        [--threads 2] [--batch-size 32] [--json scripts/results/bench_export_cpu.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("eager", "torchscript", "onnx", "torchscript-int8", "onnx-int8")


# ---------------------------------------------------------------------------- one variant


def batches_of(items: list, size: int):
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def runner(variant: str, graph_path: Path | None, threads: int):
    """``run(tensors) -> list of numpy/tensor outputs`` for an exported variant."""
    import torch

    if variant.startswith("onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(graph_path), options)
        names = [i.name for i in session.get_inputs()]
        return lambda *tensors: session.run(
            None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)}
        )
    module = torch.jit.load(str(graph_path))
    return lambda *tensors: [torch.as_tensor(o) for o in _as_tuple(module(*tensors))]


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def run_ner(ckpt: str, dev: str, variant: str, graph: Path | None, threads: int, size: int):
    import torch

    from nlp_lstm.checkpoint import load_checkpoint
    from nlp_lstm.data.conll import read_conll, to_iob2
    from nlp_lstm.export import graph_inputs
    from nlp_lstm.tasks import ner
    from nlp_lstm.train.metrics import entity_scores

    tagger = ner.load(load_checkpoint(ckpt, "ner"), "cpu")
    tagger.model.eval()
    sentences = ner._with_iob2_tags(read_conll(Path(dev), what="dev file"))
    tokens = [s.tokens for s in sentences]
    paths: list[list[int]] = [[] for _ in sentences]
    start = time.perf_counter()
    if variant == "eager":
        split = tagger.split(tokens)
        with torch.inference_mode():
            for indices in batches_of(tokens, size):
                batch = split.collate(indices)
                for i, path in zip(
                    batch.indices.tolist(), ner.predict(tagger.model, batch), strict=True
                ):
                    paths[i] = path
    else:
        run = runner(variant, graph, threads)
        with torch.inference_mode():
            for indices in batches_of(tokens, size):
                inputs = graph_inputs([tokens[i] for i in indices], tagger.words, tagger.chars)
                (tags,) = run(*inputs)
                for row, i in enumerate(indices):
                    paths[i] = [int(t) for t in tags[row][: len(tokens[i])]]
    seconds = time.perf_counter() - start
    predicted = [to_iob2(tagger.tags.decode(p), tagger.scheme) for p in paths]
    scores = entity_scores([s.tags for s in sentences], predicted)
    return {"sentences": len(tokens), "seconds": seconds, "metric": "f1", "score": scores["f1"],
            "outputs": paths}  # fmt: skip


def run_sentiment(ckpt: str, dev: str, variant: str, graph: Path | None, threads: int, size: int):
    import torch

    from nlp_lstm.checkpoint import load_checkpoint
    from nlp_lstm.data.batching import pad
    from nlp_lstm.tasks import sentiment

    classifier = sentiment.load(load_checkpoint(ckpt, "sentiment"), "cpu")
    classifier.model.eval()
    data = dataclasses.replace(classifier.data, dev=dev)
    texts = sentiment.read_split(data, "dev")
    labels = sentiment.label_ids(texts, classifier.labels)
    tokens = texts.tokens
    predicted = [0] * len(tokens)
    start = time.perf_counter()
    if variant == "eager":
        split = classifier.split(tokens, labels)
        with torch.inference_mode():
            for indices in batches_of(tokens, size):
                batch = split.collate(indices)
                outputs = sentiment.predict(classifier.model, batch)
                for i, out in zip(batch.indices.tolist(), outputs, strict=True):
                    predicted[i] = out.label
    else:
        run = runner(variant, graph, threads)
        with torch.inference_mode():
            for indices in batches_of(tokens, size):
                words = pad([classifier.words.encode(tokens[i]) for i in indices])
                lengths = torch.tensor([len(tokens[i]) for i in indices])
                probabilities = run(words, lengths)[0]
                for row, i in enumerate(indices):
                    predicted[i] = int(probabilities[row].argmax())
    seconds = time.perf_counter() - start
    accuracy = 100.0 * sum(p == g for p, g in zip(predicted, labels, strict=True)) / len(labels)
    return {"sentences": len(tokens), "seconds": seconds, "metric": "accuracy", "score": accuracy,
            "outputs": predicted}  # fmt: skip


def one(args) -> None:
    import torch

    from nlp_lstm.train.runlog import peak_rss_mib

    torch.set_num_threads(args.threads)
    task, variant = args.one.split(":")
    graph = Path(args.graph) if args.graph else None
    run = run_ner if task == "ner" else run_sentiment
    ckpt, dev = (
        (args.ner_ckpt, args.ner_dev)
        if task == "ner"
        else (args.sentiment_ckpt, args.sentiment_dev)
    )
    result = run(ckpt, dev, variant, graph, args.threads, args.batch_size)
    print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))


# ---------------------------------------------------------------------------- driver


def export(task: str, ckpt: str, variant: str, folder: Path) -> Path:
    fmt = "onnx" if variant.startswith("onnx") else "torchscript"
    path = folder / f"{task}-{variant}.{'onnx' if fmt == 'onnx' else 'pt'}"
    quantize = "dynamic" if variant.endswith("int8") else "none"
    result = subprocess.run(
        [sys.executable, "-m", "nlp_lstm", f"task={task}", "mode=export", f"ckpt={ckpt}",
         f"export.format={fmt}", f"export.path={path}", f"export.quantize={quantize}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"export of {task} {variant} failed:\n{result.stderr[-2000:]}")
    return path


def main() -> None:
    root = Path(os.environ.get("NLP_LSTM_DATA", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ner-ckpt")
    parser.add_argument("--sentiment-ckpt")
    parser.add_argument("--ner-dev", default=str(root / "conll2003" / "dev.txt"))
    parser.add_argument("--sentiment-dev", default=str(root / "sst2" / "dev.tsv"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: task:variant
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    tasks = [(t, c) for t, c in (("ner", args.ner_ckpt), ("sentiment", args.sentiment_ckpt)) if c]
    if not tasks:
        parser.error("name --ner-ckpt and/or --sentiment-ckpt")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for task, ckpt in tasks:
            for variant in args.variants.split(","):
                graph = export(task, ckpt, variant, Path(folder)) if variant != "eager" else None
                command = [sys.executable, __file__, f"--one={task}:{variant}",
                           f"--threads={args.threads}", f"--batch-size={args.batch_size}",
                           f"--{task}-ckpt={ckpt}", f"--ner-dev={args.ner_dev}",
                           f"--sentiment-dev={args.sentiment_dev}"]  # fmt: skip
                if graph:
                    command.append(f"--graph={graph}")
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"{task} {variant} failed:\n{result.stderr[-3000:]}")
                row = {
                    "task": task,
                    "variant": variant,
                    **json.loads(result.stdout.splitlines()[-1]),
                }
                row["sentences_per_s"] = row["sentences"] / row["seconds"]
                row["file_mib"] = graph.stat().st_size / 2**20 if graph else None
                rows.append(row)
                print(f"{task:9} {variant:17} {row['sentences_per_s']:8.0f} sents/s  "
                      f"{row['metric']} {row['score']:.2f}  peak {row['peak_rss_mib']} MiB", flush=True)  # fmt: skip
    for task, _ in tasks:
        base = next(r for r in rows if r["task"] == task and r["variant"] == "eager")
        for row in rows:
            if row["task"] == task:
                row["speedup_vs_eager"] = row["sentences_per_s"] / base["sentences_per_s"]
                same = sum(a == b for a, b in zip(row["outputs"], base["outputs"], strict=True))
                row["same_as_eager"] = same / len(base["outputs"])
    for row in rows:
        del row["outputs"]
    print(f"\n{'task':9} {'variant':17} {'sents/s':>8} {'x eager':>7} {'score':>7} "
          f"{'same %':>7} {'peak MiB':>8} {'file MiB':>8}")  # fmt: skip
    for r in rows:
        size = f"{r['file_mib']:.1f}" if r["file_mib"] else "-"
        print(f"{r['task']:9} {r['variant']:17} {r['sentences_per_s']:8.0f} {r['speedup_vs_eager']:7.2f} "
              f"{r['score']:7.2f} {100 * r['same_as_eager']:7.2f} {r['peak_rss_mib']:8} {size:>8}")  # fmt: skip
    if args.json:
        import platform

        import torch

        meta = {"torch": torch.__version__, "threads": args.threads, "batch_size": args.batch_size,
                "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}  # fmt: skip
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
