"""The Python API's cost: raw text -> entities with offsets, against the bare model step.

    NLP_LSTM_DATA=../shared/data python scripts/bench_api.py --ckpt runs/ner/<run>/checkpoints/best.pt \
        --threads 1 --json scripts/results/bench_api_cpu.json

The CoNLL dev sentences are joined back into raw text, a sentence a line
(:func:`nlp_lstm.data.rawtext.detokenize`: ``Berlin .`` -> ``Berlin.``). Each case runs in a
process of its own (so its peak RSS is its own), on ``--threads`` torch threads:

- ``model``: the model step alone (embedder, BiLSTM, Viterbi) on the very batches the API
  builds (the API's tokens, its length-sorted batches of the predictor's batch size);
  batch building is not timed;
- ``api``: ``tagger(lines)``, every line in one call: tokenising, sentence splitting,
  batching, the model, entity probabilities, offsets and result objects;
- ``api_per_line``: ``tagger(line)`` one line a call (batches of one sentence);
- ``cold``: a new process: ``import nlp_lstm``, ``nlp_lstm.load``, the first result.

Each timed case is the best of ``--repeat`` passes after one warm-up pass (which also grows
the vocabulary with the pretrained vectors of unseen words). The table adds how often the
tokenizer cuts a detokenised dev sentence back into the corpus's tokens, and the entity F1
of the raw-text path (entities matched by character offsets) beside that of the gold
tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = ("model", "api", "api_per_line", "cold")


def dev_lines(path: str) -> tuple[list[str], list[list[tuple[int, int, str]]], list]:
    """Raw lines, their gold entities ``(start, end, type)`` and the gold sentences."""
    from nlp_lstm.data.conll import read_conll
    from nlp_lstm.data.rawtext import detokenize
    from nlp_lstm.train.metrics import entity_chunks

    sentences = read_conll(Path(path), what="dev file")
    lines, gold = [], []
    for sentence in sentences:
        text, spans = detokenize(sentence.tokens)
        lines.append(text)
        gold.append([(spans[a][0], spans[b][1], kind) for kind, a, b in entity_chunks(sentence.tags)])  # fmt: skip
    return lines, gold, sentences


def peak_rss_mib() -> int:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_case(case: str, ckpt: str, dev: str, repeat: int) -> dict:
    """One case, in this process; returns its figures."""
    if case == "cold":
        start = time.perf_counter()
        import nlp_lstm

        tagger = nlp_lstm.load(ckpt, "cpu")
        entities = tagger("Peter Blackburn visited Berlin.")
        return {"seconds": time.perf_counter() - start, "first_result": [e.text for e in entities],
                "peak_rss_mib": peak_rss_mib()}  # fmt: skip

    import torch

    import nlp_lstm
    from nlp_lstm.contract import length_batches
    from nlp_lstm.data.batching import move_batch

    lines, gold, sentences = dev_lines(dev)
    tagger = nlp_lstm.load(ckpt, "cpu")
    tagged = tagger.tag(lines)  # warm-up: grows the vocabulary, warms the kernels
    words = sum(len(t.tokens) for t in tagged)
    if case == "model":
        units = [[tok.text for tok in t.tokens[a:b]] for t in tagged for a, b in t.sentences]
        split = tagger.split(units)
        batches = [move_batch(split.collate(p), tagger.device)
                   for p in length_batches(split.lengths, tagger.batch_size)]  # fmt: skip

        def work() -> None:
            with torch.inference_mode():
                for batch in batches:
                    tagger.model.decode(batch)
    elif case == "api":

        def work() -> None:
            tagger(lines)
    else:

        def work() -> None:
            for line in lines:
                tagger(line)

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    result = {"seconds": min(times), "words": words, "lines": len(lines),
              "words_per_s": words / min(times), "peak_rss_mib": peak_rss_mib()}  # fmt: skip
    if case == "api":
        result |= quality(tagged, gold, sentences, tagger)
    return result


def quality(tagged, gold, sentences, tagger) -> dict:
    """Tokenizer agreement with the corpus, and entity F1 through raw text and through the
    gold tokens."""
    from nlp_lstm.data.conll import to_iob2
    from nlp_lstm.train.metrics import entity_scores

    same = sum([t.text for t in r.tokens] == s.tokens for r, s in zip(tagged, sentences, strict=True))  # fmt: skip
    found = [{(e.start, e.end, e.label) for e in r.entities} for r in tagged]
    correct = sum(len(f & set(g)) for f, g in zip(found, gold, strict=True))
    predicted, expected = sum(map(len, found)), sum(map(len, gold))
    precision, recall = correct / max(predicted, 1), correct / max(expected, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    on_tokens = tagger.tag([s.tokens for s in sentences])
    gold_tags = [to_iob2(s.tags, "iob2") for s in sentences]
    token_f1 = entity_scores(gold_tags, [list(r.tags) for r in on_tokens])["f1"]
    return {"tokens_as_corpus": same / len(sentences), "raw_text_f1": round(100 * f1, 2),
            "gold_tokens_f1": token_f1}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a NER checkpoints/best.pt")
    parser.add_argument("--dev", help="CoNLL file (default <NLP_LSTM_DATA>/conll2003/dev.txt)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, internally
    args = parser.parse_args()
    dev = args.dev or str(Path(os.environ.get("NLP_LSTM_DATA", "data")) / "conll2003" / "dev.txt")
    if args.case:
        if args.case != "cold":  # cold: torch's import is part of what is timed
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.case, args.ckpt, dev, args.repeat)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = {}
    for case in CASES:
        command = [sys.executable, __file__, "--ckpt", args.ckpt, "--dev", dev, "--threads",
                   str(args.threads), "--repeat", str(args.repeat), "--case", case]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(f"case {case} failed:\n{done.stderr[-3000:]}")
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
        results[case]["process_seconds"] = time.perf_counter() - start
    model, api = results["model"], results["api"]
    print(f"raw CoNLL dev text: {api['lines']:,} lines, {api['words']:,} words; "
          f"{args.threads} thread(s)")  # fmt: skip
    print("| case | seconds | words/s | × model | peak RSS |\n|---|---|---|---|---|")
    for case in ("model", "api", "api_per_line"):
        row = results[case]
        print(f"| {case} | {row['seconds']:.2f} | {row['words_per_s']:,.0f} | "
              f"{row['seconds'] / model['seconds']:.2f} | {row['peak_rss_mib']} MiB |")  # fmt: skip
    cold = results["cold"]
    print(f"| cold: import nlp_lstm + load + first result | {cold['seconds']:.2f} | | | "
          f"{cold['peak_rss_mib']} MiB |")  # fmt: skip
    print(f"| cold, the whole process (interpreter start included) | "
          f"{cold['process_seconds']:.2f} | | | |")  # fmt: skip
    print(f"tokens as the corpus cuts them: {api['tokens_as_corpus']:.2%} of sentences; entity F1 "
          f"through raw text {api['raw_text_f1']} (gold tokens: {api['gold_tokens_f1']})")  # fmt: skip
    summary = {"threads": args.threads, "ckpt": args.ckpt, "dev": dev, **results,
               "api_over_model": api["seconds"] / model["seconds"]}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
