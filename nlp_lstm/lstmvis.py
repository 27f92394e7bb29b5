"""Cell and hidden states in the format LSTMVis reads (Strobelt, Gehrmann, Pfister and Rush,
2018: "LSTMVis: A Tool for Visual Analysis of Hidden State Dynamics in Recurrent Neural
Networks"), one folder per recurrent module, to brush and match cell patterns there.

A folder holds ``states.h5`` (datasets ``states{layer}``, the cell states ``c``, and
``output{layer}``, the hidden states ``h``, layers counted from 1, each ``(positions,
hidden x directions)`` with the backward direction's units after the forward ones),
``words.h5`` (``word_ids``: the id of each position's token), ``words.dict`` (``token id``
a line, whitespace in tokens shown as ⏎ ⇥ ␣) and ``lstm.yml`` naming them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlp_lstm.cells import shown
from nlp_lstm.inside import parse_key


def dict_token(label: str) -> str:
    """A token as one whitespace-free word of a ``.dict`` file."""
    return shown(label).replace(" ", "␣")


def layer_states(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"states1": c, "output1": h, ...}`` from one module's ``l{k}[.reverse].{q}``
    arrays, the directions side by side (GRU: outputs only)."""
    found: dict[tuple[int, str], list[tuple[bool, np.ndarray]]] = {}
    for key, value in arrays.items():
        parsed = parse_key(f"m.{key}")
        if parsed is None or parsed[3] not in ("c", "h"):
            continue
        _, layer, reverse, q = parsed
        found.setdefault((layer, q), []).append((reverse, value))
    out = {}
    for (layer, q), parts in sorted(found.items()):
        joined = np.concatenate([v for _, v in sorted(parts, key=lambda p: p[0])], axis=1)
        out[f"{'states' if q == 'c' else 'output'}{layer + 1}"] = joined.astype(np.float32)
    return out


def write_lstmvis(folder: Path, name: str, description: str, labels: list[str],
                  arrays: dict[str, np.ndarray]) -> Path:  # fmt: skip
    """One module's states (``arrays``: ``l{k}[.reverse].{q}`` -> ``(positions, hidden)``,
    ``labels`` a token per position) as an LSTMVis project in ``folder``."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    vocabulary: dict[str, int] = {}
    ids = np.array([vocabulary.setdefault(dict_token(t), len(vocabulary) + 1) for t in labels])
    states = layer_states(arrays)
    with h5py.File(folder / "states.h5", "w") as file:
        for dataset, value in states.items():
            file.create_dataset(dataset, data=value[: len(labels)])
    with h5py.File(folder / "words.h5", "w") as file:
        file.create_dataset("word_ids", data=ids.astype(np.int32))
    (folder / "words.dict").write_text(
        "".join(f"{token} {i}\n" for token, i in vocabulary.items()), encoding="utf-8"
    )
    types = ",\n".join(
        f"    {{type: {'state' if d.startswith('states') else 'output'}, "
        f"layer: {d.removeprefix('states').removeprefix('output')}, path: {d}}}"
        for d in states
    )
    (folder / "lstm.yml").write_text(
        f"name: {name}\ndescription: {description}\n\n"
        "files:\n  states: states.h5\n  train: words.h5\n  words: words.dict\n\n"
        "word_sequence:\n  file: train\n  path: word_ids\n  dict_file: words\n\n"
        f"states:\n  file: states\n  types: [\n{types}\n  ]\n",
        encoding="utf-8",
    )
    return folder
