"""Tag text with an exported NER graph using numpy and onnxruntime only (no torch, no
nlp_lstm): what a service that ships ``mode=export`` output runs.

    python -m nlp_lstm task=ner mode=export ckpt=.../best.pt export.format=onnx export.path=ner.onnx
    echo "Peter Blackburn visited Berlin ." | python scripts/tag_onnx.py ner.onnx

Reads a sentence a line (whitespace tokens) from stdin and writes ``token<TAB>tag`` lines,
a blank line after each sentence, tags in the checkpoint's scheme (BIOES by default).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    path = sys.argv[1]
    with open(path + ".json", encoding="utf-8") as file:
        meta = json.load(file)
    words = {w: i for i, w in enumerate(meta["words"])}
    chars = {c: i for i, c in enumerate(meta["chars"])}
    unk, limit = meta["unk_id"], meta["max_word_chars"]
    session = ort.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    for line in sys.stdin:
        tokens = line.split()
        if not tokens:
            continue
        char_ids = np.zeros((1, len(tokens), min(limit, max(map(len, tokens)))), dtype=np.int64)
        for i, token in enumerate(tokens):
            ids = [chars.get(c, unk) for c in token[:limit]]
            char_ids[0, i, : len(ids)] = ids
        feed = {
            "words": np.array([[words.get(t, unk) for t in tokens]], dtype=np.int64),
            "chars": char_ids,
            "lengths": np.array([len(tokens)], dtype=np.int64),
        }
        (tags,) = session.run(None, {name: feed[name] for name in names})
        for token, tag in zip(tokens, tags[0], strict=True):
            print(f"{token}\t{meta['tags'][int(tag)]}")
        print(flush=True)


if __name__ == "__main__":
    main()
