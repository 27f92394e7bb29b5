"""Inside a trained model: every gate of its recurrent modules over a text
(:func:`inspect`), and ``mode=inspect``, which writes them with a page and a plot.

:func:`inspect` runs the exact input each recurrent module of the model sees (eval mode:
no dropout) through :func:`nlp_lstm.modules.gates.rnn_gates`, and returns one dict per
input text:

* ``"{module}.l{layer}.{q}"`` and ``"{module}.l{layer}.reverse.{q}"`` (the backward
  direction): float32 arrays ``(positions, hidden)``, positions in the text's order; ``q``
  in ``i, f, g, o, c, h`` (LSTM) or ``r, z, n, h`` (GRU);
* ``"{module}.positions"``: a str array ``(positions,)`` naming each position.

The modules and their positions, by task:

* ner: ``encoder`` over the tokens (raw text is cut into sentences as the tagger cuts it;
  each sentence runs from a zero state, and their positions follow one another);
* sentiment: ``encoder`` over the tokens;
* charlm: ``rnn`` over the characters (those never seen in training read as unknown);
* translate: ``encoder`` over the source tokens (BPE pieces or words), and ``decoder``
  teacher-forced over the predictor's own translation, starting from the encoder's final
  state; its positions are the tokens it reads (``<s>``, then the translation's tokens);
* forecast: ``encoder`` of the first member of an ensemble over the window's segments
  (labelled by their last time stamp, or row number); with independent channels each
  target column is its own sequence, their positions following one another.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields
from nlp_lstm.contract import Predictor
from nlp_lstm.errors import ConfigError, DataError, UserError
from nlp_lstm.modules.gates import rnn_gates

log = logging.getLogger(__name__)

SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}
LOW, HIGH = 0.1, 0.9  # left- and right-saturated gate values (Karpathy et al., 2015)
BATCH = 32  # inputs (sentences, texts, windows) recomputed together
KEY = re.compile(r"^(?P<module>.+)\.l(?P<layer>\d+)\.(?:(?P<reverse>reverse)\.)?(?P<q>\w+)$")


def inspect(predictor: Any, texts: Any) -> list[dict[str, np.ndarray]]:
    """Every gate of the predictor's recurrent modules over each input (see the module's
    docstring for names, shapes and positions). ``texts``: a list of inputs of the
    predictor's kind (a single one is taken as a list of one). A model without a recurrent
    module, or an input without positions (an empty text), raises a UserError."""
    task = check_inspectable(predictor)
    if isinstance(texts, (str, Path, dict)) or hasattr(texts, "columns"):
        texts = [texts]
    texts = list(texts)
    for position, text in enumerate(texts):
        if isinstance(text, str) and not text.strip():
            raise _empty(position)
        if task == "charlm":  # unseen chars are read as unknown, as Generator.score does
            Predictor.check_input(predictor, text, position)
        else:
            predictor.check_input(text, position)
    return [as_arrays(modules) for modules in run_modules(predictor, texts)]


def check_inspectable(predictor: Any) -> str:
    """The predictor's task, if its model has recurrent modules to inspect."""
    task = getattr(predictor, "task", None)
    if task not in _RUNNERS or not isinstance(getattr(predictor, "model", None), nn.Module):
        raise UserError(
            f"inspect needs the predictor of a model with an LSTM or GRU "
            f"({', '.join(_RUNNERS)}), got {type(predictor).__name__}"
        )
    return task


Modules = dict[str, tuple[dict[str, Tensor], list[str]]]  # module -> (gates, position labels)


def run_modules(predictor: Any, items: list[Any]) -> list[Modules]:
    """Per input, each recurrent module's gates ``(positions, hidden)`` and position labels,
    the inputs run in batches (no checks: :func:`inspect` checks users' inputs)."""
    with predictor.lock, torch.no_grad():
        return _RUNNERS[predictor.task](predictor, items)


def as_arrays(modules: Modules) -> dict[str, np.ndarray]:
    """One input's gates as float32 arrays named ``{module}.{key}``, with ``{module}.positions``."""
    result: dict[str, np.ndarray] = {}
    for name, (gates, labels) in modules.items():
        result[f"{name}.positions"] = np.asarray(labels, dtype=str)
        for key, value in gates.items():
            result[f"{name}.{key}"] = value.float().cpu().numpy()
    return result


def _recurrent(module: Any, where: str) -> nn.LSTM | nn.GRU:
    if not isinstance(module, (nn.LSTM, nn.GRU)):
        raise UserError(f"{where} is not an nn.LSTM or nn.GRU: nothing to inspect")
    return module


def _empty(position: int) -> UserError:
    return UserError(f"input {position}: an empty text has no positions to inspect")


def _first(gates: dict[str, Tensor], length: int, row: int = 0) -> dict[str, Tensor]:
    return {k: v[row, :length] for k, v in gates.items()}


def _joined(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _batches(lengths: list[int], size: int = BATCH) -> list[list[int]]:
    """Positions in batches of similar lengths, each batch longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + size] for start in range(0, len(order), size)]


# ---------------------------------------------------------------------------- per task


def _word_task(predictor: Any, items: list[Any]) -> list[Modules]:
    """ner and sentiment: the encoder over each sentence's embedded tokens (an input is raw
    text, or a token list read as one sentence)."""
    from nlp_lstm.data.batching import move_batch
    from nlp_lstm.tasks.ner import cut_input

    sentences, owners, labels = [], [], []
    for position, item in enumerate(items):
        if predictor.task == "ner" or not isinstance(item, str):
            _, tokens, ranges = cut_input(item)
            cut = [[t.text for t in tokens[a:b]] for a, b in ranges]
            names = [t.text for t in tokens]
        else:
            spans = predictor.tokenize(item)
            cut = [[token for token, _, _ in spans]] if spans else []
            names = [item[a:b] for _, a, b in spans]
        if not names:
            raise _empty(position)
        sentences += cut
        owners += [position] * len(cut)
        labels.append(names)
    model = predictor.model
    rnn = _recurrent(model.encoder.rnn, "the encoder")
    split = predictor.split(sentences)
    parts: dict[int, dict[str, Tensor]] = {}
    for indices in _batches([len(s) for s in sentences]):
        batch = move_batch(split.collate(indices), predictor.device)
        embedded = model.embedder(batch.words, batch.chars, batch.char_index, batch.char_lengths)
        gates = rnn_gates(rnn, embedded, batch.lengths)
        for row, index in enumerate(batch.indices.tolist()):
            parts[index] = _first(gates, len(sentences[index]), row)
    joined: list[list[dict[str, Tensor]]] = [[] for _ in items]
    for index, owner in enumerate(owners):
        joined[owner].append(parts[index])
    return [{"encoder": (_joined(p), names)} for p, names in zip(joined, labels, strict=True)]


def _charlm(predictor: Any, items: list[str]) -> list[Modules]:
    from nlp_lstm.data.batching import pad

    for position, text in enumerate(items):
        if not text:
            raise _empty(position)
    model = predictor.model
    rnn = _recurrent(model.rnn, "the char LM's rnn")
    results: list[Modules] = [{} for _ in items]
    for indices in _batches([len(t) for t in items]):
        ids = pad([predictor.chars.encode(items[i]) for i in indices]).to(predictor.device)
        lengths = torch.tensor([len(items[i]) for i in indices])
        gates = rnn_gates(rnn, model.embedding(ids), lengths)
        for row, index in enumerate(indices):
            text = items[index]
            results[index] = {"rnn": (_first(gates, len(text), row), list(text))}
    return results


def decoder_steps(predictor: Any, batch: Any) -> dict[str, Any]:
    """What the translator's decoder reads for a source ``batch``: its embedded ``source``,
    the ``translations`` (the predictor's own decoding, one id list a row), the decoder's
    ``target_in`` ids ``(B, T)`` (``<s>``, then the translation; padded) and
    ``target_lengths``, its LSTM inputs ``decoder_inputs`` ``(B, T, D)`` (target embedding
    and fed attentional vector), its ``initial`` ``(h, c)`` and its own last-layer states
    ``decoder_states`` ``(B, T, H)`` from stepping it (teacher-forced)."""
    from nlp_lstm.data.batching import pad
    from nlp_lstm.tasks.translate import IDS

    model = predictor.model
    translations, _ = model.translate(batch, predictor.decoding, predictor.decoding.beam_size)
    target_in = pad([[IDS.bos, *t] for t in translations]).to(predictor.device)
    memory, state = model.encode(batch)
    steps: list[tuple[Tensor, Tensor]] = []  # each step's LSTM input and output, as it ran
    recur = model.decoder.recur

    def seen_by_rnn(inputs: Tensor, hidden):
        output, hidden = recur(inputs, hidden)
        steps.append((inputs, output))
        return output, hidden

    model.decoder.recur = seen_by_rnn  # for this call only: the instance's own attribute
    try:
        model.decoder(target_in, state, memory)  # teacher forcing: the decoder's own steps
    finally:
        del model.decoder.recur
    return {
        "source": model.embedding_dropout(model.source_embedding(batch.source)),
        "translations": translations,
        "target_in": target_in,
        "target_lengths": [len(t) + 1 for t in translations],
        "decoder_inputs": torch.stack([inputs for inputs, _ in steps], 1),
        "initial": state.hidden,
        "decoder_states": torch.stack([outputs for _, outputs in steps], 1),
    }


def translate_inputs(predictor: Any, text: str) -> dict[str, Any]:
    """:func:`decoder_steps` for one source text, with its ``batch`` and source ``ids``
    ({} when the text has no tokens)."""
    from nlp_lstm.data.batching import move_batch
    from nlp_lstm.data.parallel import encode
    from nlp_lstm.tasks.translate import PairCollator

    ids = encode(predictor.source_tokenizer, [text])
    if not ids[0]:
        return {}
    batch = move_batch(PairCollator(ids, None)([0]), predictor.device)
    return {"batch": batch, "ids": ids[0], **decoder_steps(predictor, batch)}


def _translate(predictor: Any, items: list[str]) -> list[Modules]:
    from nlp_lstm.data.batching import move_batch
    from nlp_lstm.data.parallel import encode
    from nlp_lstm.tasks.translate import PairCollator

    ids = encode(predictor.source_tokenizer, items)
    for position, row in enumerate(ids):
        if not row:
            raise _empty(position)
    model = predictor.model
    encoder_rnn = _recurrent(model.encoder.rnn, "the encoder")
    decoder_rnn = _recurrent(model.decoder.rnn, "the decoder")
    source = predictor.source_tokenizer.id_to_token
    target = predictor.target_tokenizer.id_to_token
    collate = PairCollator(ids, None)
    results: list[Modules] = [{} for _ in items]
    for indices in _batches([len(row) for row in ids]):
        batch = move_batch(collate(indices), predictor.device)
        seen = decoder_steps(predictor, batch)
        encoder = rnn_gates(encoder_rnn, seen["source"], batch.source_lengths)
        decoder = rnn_gates(decoder_rnn, seen["decoder_inputs"], state=seen["initial"])
        for row, index in enumerate(batch.indices.tolist()):
            steps = seen["target_lengths"][row]
            read = seen["target_in"][row, :steps].tolist()
            results[index] = {
                "encoder": (_first(encoder, len(ids[index]), row), [source(i) for i in ids[index]]),
                "decoder": (_first(decoder, steps, row), [target(i) for i in read]),
            }
    return results


def forecast_member(predictor: Any) -> nn.Module:
    """The forecaster's network that is inspected (the first member of an ensemble)."""
    model = predictor.model
    return model.members[0] if hasattr(model, "members") else model


def forecast_segments(predictor: Any, windows: Tensor) -> Tensor:
    """The segments ``(B * rows, S, D)`` the forecaster's encoder reads for scaled windows
    ``(B, L, columns)``: ``rows`` is the number of target columns with independent
    channels (each its own sequence, window-major), else 1."""
    member = forecast_member(predictor)
    x = windows.to(predictor.device)
    if member.revin is not None:
        x = member.revin.normalize(x)[0]
    if member.independent:
        x = x.transpose(1, 2).reshape(x.shape[0] * member.targets, x.shape[1], 1)
    return member.project(x)


def forecast_table(predictor: Any, table: Any) -> tuple[Tensor, list[str]]:
    """A table's last ``data.look_back`` rows as the forecaster reads them, scaled ``(1, L,
    columns)``, and their labels (time stamps, or row numbers)."""
    series = predictor.series(table)
    look_back = predictor.data.look_back
    columns = series.index([*predictor.targets, *predictor.features])
    window = predictor.scaler.transform(series.values[-look_back:, columns])
    first_row = len(series) - look_back
    if series.times is not None:
        labels = [t.isoformat(" ") for t in series.times[first_row:]]
    else:
        labels = [str(first_row + i) for i in range(look_back)]
    return torch.as_tensor(window[None], dtype=torch.float32), labels


def forecast_inputs(predictor: Any, table: Any) -> dict[str, Any]:
    """What the forecaster's encoder reads for ``table``: the ``member`` (the first of an
    ensemble), the ``segments`` ``(rows, S, D)`` (one row per target column with
    independent channels, else one) and the window's row ``labels``."""
    window, labels = forecast_table(predictor, table)
    segments = forecast_segments(predictor, window)
    return {"member": forecast_member(predictor), "segments": segments, "labels": labels}


def forecast_windows(predictor: Any, windows: Tensor, row_labels: list[list[str]]) -> list[Modules]:
    """The encoder's gates over scaled windows ``(B, L, columns)``, one result a window, its
    positions the segments labelled by their last row's label (``column label`` with
    independent channels)."""
    rnn = _recurrent(forecast_member(predictor).encoder.rnn, "the forecaster's encoder")
    segments = forecast_segments(predictor, windows)
    gates = rnn_gates(rnn, segments)
    count, steps = windows.shape[0], segments.shape[1]
    rows = segments.shape[0] // count
    names = predictor.targets if rows > 1 else [""]
    size = windows.shape[1] // steps
    results = []
    for window, labels in enumerate(row_labels):
        ends = labels[size - 1 :: size]
        parts = [_first(gates, steps, window * rows + row) for row in range(rows)]
        positions = [f"{name} {end}".strip() for name in names for end in ends]
        results.append({"encoder": (_joined(parts), positions)})
    return results


def _forecast(predictor: Any, items: list[Any]) -> list[Modules]:
    results = []
    for table in items:
        window, labels = forecast_table(predictor, table)
        results += forecast_windows(predictor, window, [labels])
    return results


_RUNNERS = {
    "ner": _word_task,
    "sentiment": _word_task,
    "charlm": _charlm,
    "translate": _translate,
    "forecast": _forecast,
}


# ---------------------------------------------------------------------------- names


def parse_key(key: str) -> tuple[str, int, bool, str] | None:
    """``"encoder.l1.reverse.f"`` -> ``("encoder", 1, True, "f")``; None for other keys."""
    match = KEY.match(key)
    if match is None or key.endswith(".positions"):
        return None
    return match["module"], int(match["layer"]), bool(match["reverse"]), match["q"]


def cell_kind(arrays: dict[str, np.ndarray]) -> str:
    return "lstm" if any(k.endswith(".f") for k in arrays) else "gru"


def modules_of(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per module of one input's arrays: its ``layers``, ``directions``, ``hidden`` size
    and ``quantities``."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in arrays.items():
        parsed = parse_key(key)
        if parsed is None:
            continue
        module, layer, reverse, q = parsed
        entry = found.setdefault(module, {"layers": 0, "directions": ["forward"],
                                          "hidden": int(value.shape[1]), "quantities": []})  # fmt: skip
        entry["layers"] = max(entry["layers"], layer + 1)
        if reverse and "backward" not in entry["directions"]:
            entry["directions"].append("backward")
        if q not in entry["quantities"]:
            entry["quantities"].append(q)
    return found


def cell_view(arrays: dict[str, np.ndarray], module: str | None = None, layer: int | None = None,
              direction: str = "forward", cell: int = 0) -> dict[str, Any]:  # fmt: skip
    """One unit of one input's arrays: every quantity's values at each position for
    ``cell`` of ``module`` (default: the first), ``layer`` (default: the last) and
    ``direction``, with the positions and what the modules hold (for the demo page)."""
    modules = modules_of(arrays)
    module = module or next(iter(modules))
    if module not in modules:
        raise ValueError(f"no module {module!r} (modules: {', '.join(modules)})")
    shape = modules[module]
    layer = shape["layers"] - 1 if layer is None else layer
    if not 0 <= layer < shape["layers"]:
        raise ValueError(f"{module} has layers 0 to {shape['layers'] - 1}, not {layer}")
    if direction not in shape["directions"]:
        raise ValueError(f"{module} has directions {', '.join(shape['directions'])}, not {direction!r}")  # fmt: skip
    if not 0 <= cell < shape["hidden"]:
        raise ValueError(f"{module} has cells 0 to {shape['hidden'] - 1}, not {cell}")
    prefix = f"{module}.l{layer}." + ("reverse." if direction == "backward" else "")
    values = {q: np.round(arrays[prefix + q][:, cell].astype(np.float64), 5).tolist()
              for q in shape["quantities"]}  # fmt: skip
    return {"modules": modules, "module": module, "layer": layer, "direction": direction,
            "cell": cell, "positions": [str(p) for p in arrays[f"{module}.positions"]],
            "values": values}  # fmt: skip


# ---------------------------------------------------------------------------- mode=inspect


@dataclass
class InspectConfig:
    """The ``inspect`` section: which split ``mode=inspect`` scans for the saturation plot,
    the property cells (cells.md) and the LSTMVis export, and how much of it."""

    split: Literal["train", "dev", "test"] | None = "dev"  # null: the input texts only
    max_positions: int = 200_000  # the split's first positions (about) that are scanned
    export_positions: int = 20_000  # its first positions written for LSTMVis
    top: int = 3  # units listed per property
    excerpt: int = 0  # positions shown per property (0: 240 characters, or 40 tokens)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("max_positions", "top"))
        if self.export_positions < 0 or self.excerpt < 0:
            raise ConfigError("export_positions and excerpt must be 0 or more")


def inspect_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=inspect ckpt=PATH input=FILE``: gates.npz, inside.html, saturation.png, and
    over the ``inspect.split`` cells.md, cells.png and lstmvis/, in the run folder, and one
    JSON line (see docs/inside.md)."""
    from nlp_lstm.cli import checkpoint_task
    from nlp_lstm.config import to_dataclass
    from nlp_lstm.files import read_lines, read_text
    from nlp_lstm.tasks.common import input_lines_path, predictor_for_run, report

    if not cfg.get("ckpt"):
        raise UserError("mode=inspect needs ckpt=PATH (a checkpoints/best.pt of any task)")
    settings = to_dataclass(InspectConfig, cfg.get("inspect") or {}, "inspect")
    task = checkpoint_task(cfg)
    if task not in _RUNNERS:
        raise UserError(f"{cfg.ckpt}: a {task} model has no LSTM or GRU to inspect")
    predictor = predictor_for_run(cfg, task)
    path = input_lines_path(cfg, run_dir)
    if task == "forecast":  # the input is one table: the CSV file itself
        if not path.stat().st_size:
            raise DataError(path, None, "the input file is empty (a CSV table)")
        inputs: list[Any] = [str(path)]
    elif task == "charlm":  # one passage, newlines and all, as the model reads text
        inputs = [read_text(path, "input file")]
        if not inputs[0].strip():
            raise DataError(path, None, "the input file is empty (a passage of text)")
    else:
        inputs = [line for line in read_lines(path, "input file") if line.strip()]
        if not inputs:
            raise DataError(path, None, "input holds no lines")
    started = time.perf_counter()
    try:
        results = inspect(predictor, inputs)
    except (TypeError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise DataError(path, None, str(err)) from None
    files = {"gates": run_dir / "gates.npz", "page": run_dir / "inside.html",
             "saturation": run_dir / "saturation.png"}  # fmt: skip
    np.savez_compressed(files["gates"], **results[0])
    summary: dict[str, Any] = {"task": task, "inputs": len(results), "positions": sum(
        len(r[k]) for r in results for k in r if k.endswith(".positions"))}  # fmt: skip
    best: dict = {}
    if settings.split:
        best, fractions, scanned = scan_split(cfg, predictor, settings, run_dir, files)
        summary["split"] = scanned
    else:
        fractions = saturation(results)
    files["page"].write_text(inside_page(results[0], task, cfg.ckpt, best), encoding="utf-8")
    plot_saturation(fractions, files["saturation"])
    summary["files"] = {name: str(p) for name, p in files.items()}
    summary["forget_saturated"] = forget_saturated(fractions, cell_kind(results[0]))
    summary["cells"] = {name: {"unit": units[0].name, "r": round(units[0].r, 4)}
                        for name, units in best.items()}  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - started, 2)
    report(summary, run_dir / "inside.json")


def scan_split(cfg: DictConfig, predictor: Any, settings: InspectConfig, run_dir: Path,
               files: dict[str, Path]) -> tuple[dict, dict, dict]:  # fmt: skip
    """Scan ``inspect.split`` of the checkpoint's data (``data.*`` given on the command
    line replace its values): cells.md, cells.png and lstmvis/ into ``files``; the best
    units per property, the saturation fractions and a summary of the split."""
    from nlp_lstm.cells import cells_markdown, excerpts, plot_cells, read_sample, scan
    from nlp_lstm.lstmvis import write_lstmvis

    task, split = predictor.task, str(settings.split)
    data = inspected_data(cfg, predictor)
    sample = read_sample(predictor, data, split, settings.max_positions)
    result = scan(predictor, sample, settings.export_positions)
    best = result.best(settings.top)
    length = settings.excerpt or (240 if task == "charlm" else 40)
    shown = excerpts(predictor, sample, [units[0] for units in best.values()], length)
    files["cells"] = run_dir / "cells.md"
    files["cells_plot"] = run_dir / "cells.png"
    files["cells"].write_text(
        cells_markdown(task, cfg.ckpt, split, sample, result, best, shown), encoding="utf-8"
    )
    plot_cells(shown, files["cells_plot"], chars=task == "charlm")
    for module, arrays in result.kept.items():
        joined = {key: np.concatenate(parts) for key, parts in arrays.items()}
        files["lstmvis"] = run_dir / "lstmvis"
        write_lstmvis(
            files["lstmvis"] / module, f"{task} {module}",
            f"{Path(str(cfg.ckpt)).name} over {sample.source}",
            result.kept_labels[module], joined,
        )  # fmt: skip
    scanned = {"name": split, "source": sample.source, "inputs": result.inputs,
               "positions": sum(result.positions.values())}  # fmt: skip
    return best, result.saturation(), scanned


def inspected_data(cfg: DictConfig, predictor: Any) -> dict:
    """The checkpoint's ``data`` section, with the ``data.*`` values given on the command
    line in place of its own."""
    from nlp_lstm.cli import command_line_keys

    data = dict(predictor.bundle.config.get("data", {}))
    for name in command_line_keys():
        if name.startswith("data.") and name[5:] in cfg.data:
            data[name[5:]] = cfg.data[name[5:]]
    return data


# ---------------------------------------------------------------------------- saturation


def saturation(results: Sequence[dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per sigmoid gate array name: ``(fraction < 0.1, fraction > 0.9)`` of each unit
    ``(hidden,)`` over every position of every input."""
    kind = cell_kind(results[0])
    out = {}
    for key in results[0]:
        parsed = parse_key(key)
        if parsed is None or parsed[3] not in SIGMOID_GATES[kind]:
            continue
        values = np.concatenate([r[key] for r in results])
        out[key] = ((values < LOW).mean(0), (values > HIGH).mean(0))
    return out


def forget_saturated(fractions: dict, kind: str) -> dict[str, dict[str, int]]:
    """Per ``module.l{layer}`` (both directions): how many forget gates (GRU: update gates
    ``z``) are right-saturated (> 0.9) more than half the time, of how many units."""
    gate = "f" if kind == "lstm" else "z"
    counts: dict[str, dict[str, int]] = {}
    for key, (_, high) in fractions.items():
        module, layer, _, q = parse_key(key)  # type: ignore[misc]
        if q != gate:
            continue
        entry = counts.setdefault(f"{module}.l{layer}", {"saturated": 0, "units": 0})
        entry["saturated"] += int((high > 0.5).sum())
        entry["units"] += int(high.size)
    return counts


def plot_saturation(fractions: dict, path: Path) -> None:
    """Karpathy et al. (2015)'s figure: per gate type, each unit a dot at (fraction of
    positions left-saturated, fraction right-saturated), coloured by module and layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = sorted({parse_key(k)[3] for k in fractions}, key="ifozr".index)  # type: ignore[index]
    groups = sorted({"{}.l{}".format(*parse_key(k)[:2]) for k in fractions})  # type: ignore[index]
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    names = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate",
             "z": "update gate"}  # fmt: skip
    figure, axes = plt.subplots(1, len(gates), figsize=(4 * len(gates), 4.2), squeeze=False)
    for axis, gate in zip(axes[0], gates, strict=True):
        for group in groups:
            low = [fractions[k][0] for k in fractions if _group(k) == (group, gate)]
            high = [fractions[k][1] for k in fractions if _group(k) == (group, gate)]
            if low:
                axis.scatter(np.concatenate(low), np.concatenate(high), s=12, alpha=0.6,
                             color=colours[group], label=group)  # fmt: skip
        axis.plot([0, 1], [1, 0], color="0.8", linewidth=1, zorder=0)
        axis.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), title=names.get(gate, gate),
                 xlabel=f"fraction left-saturated (< {LOW})")  # fmt: skip
        axis.set_aspect("equal")
    axes[0][0].set_ylabel(f"fraction right-saturated (> {HIGH})")
    axes[0][-1].legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _group(key: str) -> tuple[str, str]:
    module, layer, _, q = parse_key(key)  # type: ignore[misc]
    return f"{module}.l{layer}", q


# ---------------------------------------------------------------------------- the page


def page_data(arrays: dict[str, np.ndarray]) -> dict:
    """The page's data: per module its position labels and ``values[layer/direction][q]``,
    each ``(positions, hidden)`` as nested lists rounded to 4 decimals."""
    modules: dict[str, dict] = {}
    for key, value in arrays.items():
        if key.endswith(".positions"):
            modules.setdefault(key[: -len(".positions")], {"values": {}})["positions"] = [
                str(v) for v in value
            ]
            continue
        parsed = parse_key(key)
        if parsed is None:
            continue
        module, layer, reverse, q = parsed
        entry = modules.setdefault(module, {"values": {}})
        run = f"l{layer}" + (".reverse" if reverse else "")
        entry["values"].setdefault(run, {})[q] = np.round(value.astype(np.float64), 4).tolist()
    return modules


def inside_page(
    arrays: dict[str, np.ndarray], task: str, ckpt: str, best: dict | None = None
) -> str:
    """One self-contained HTML page (inline CSS and JS, nothing fetched) of one input;
    ``best`` (property -> ranked units, from the split's scan) adds a button per property
    that shows its best unit. The URL's hash selects a view: ``#module=rnn&layer=l1&
    direction=forward&quantity=c&cell=17``."""
    shortcuts = []
    for name, units in (best or {}).items():
        module, layer, reverse, q = parse_key(units[0].key)  # type: ignore[misc]
        shortcuts.append({"property": name, "module": module, "layer": f"l{layer}",
                          "direction": "backward" if reverse else "forward", "quantity": q,
                          "cell": units[0].unit, "r": round(units[0].r, 3)})  # fmt: skip
    data = json.dumps({"task": task, "modules": page_data(arrays), "best": shortcuts},
                      separators=(",", ":"))  # fmt: skip
    data = data.replace("</", "<\\/")
    title = html.escape(f"inside {task}: {Path(str(ckpt)).name}")
    return PAGE.replace("__TITLE__", title).replace("__DATA__", data)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
#controls label{margin-right:1em}
#text{font-family:ui-monospace,monospace;line-height:2.1;margin:1em 0;max-width:70em}
#text span{padding:2px 3px;margin:0 1px;border-radius:3px;cursor:default;white-space:pre}
#text.chars span{margin:0;padding:2px 0}
#tip{position:fixed;display:none;background:#fff;border:1px solid #999;padding:6px 9px;
font:12px ui-monospace,monospace;box-shadow:2px 2px 6px #0003;pointer-events:none}
#legend{font-size:12px;color:#555}
#best button{margin:.4em .4em 0 0;font-size:12px}
</style></head><body>
<h2>__TITLE__</h2>
<div id="controls">
<label>module <select id="module"></select></label>
<label>layer <select id="layer"></select></label>
<label>direction <select id="direction"></select></label>
<label>quantity <select id="quantity"></select></label>
<label>cell <input id="cell" type="number" min="0" value="0" style="width:5em"></label>
<span id="size"></span>
</div>
<div id="best"></div>
<div id="text"></div>
<div id="legend"></div>
<div id="tip"></div>
<script>
const DATA = __DATA__;
const NAMES = {i:"input gate",f:"forget gate",g:"cell candidate",o:"output gate",c:"cell",
  h:"hidden",r:"reset gate",z:"update gate",n:"candidate"};
const BOUNDED = {i:1,f:1,o:1,r:1,z:1};
const $ = id => document.getElementById(id);
function fill(sel, items, labels) {
  const keep = sel.value; sel.innerHTML = "";
  items.forEach((v, k) => { const o = document.createElement("option"); o.value = v;
    o.textContent = labels ? labels[k] : v; sel.appendChild(o); });
  if (items.includes(keep)) sel.value = keep;
}
function runs() { return DATA.modules[$("module").value].values; }
function run() { const l = $("layer").value, d = $("direction").value;
  return runs()[d === "backward" ? l + ".reverse" : l]; }
function update() {
  const r = runs(), layers = [...new Set(Object.keys(r).map(k => k.split(".")[0]))];
  fill($("layer"), layers);
  const dirs = r[$("layer").value + ".reverse"] ? ["forward", "backward"] : ["forward"];
  fill($("direction"), dirs);
  const qs = Object.keys(run()); fill($("quantity"), qs, qs.map(q => q + " (" + NAMES[q] + ")"));
  draw();
}
function colour(v, q, scale) {
  if (BOUNDED[q]) { const a = Math.max(0, Math.min(1, v));
    return `rgba(33,102,172,${a.toFixed(3)})`; }
  const a = Math.max(-1, Math.min(1, v / scale));
  return a >= 0 ? `rgba(33,102,172,${a.toFixed(3)})` : `rgba(178,24,43,${(-a).toFixed(3)})`;
}
function draw() {
  const m = DATA.modules[$("module").value], r = run(), q = $("quantity").value;
  const hidden = r[q][0].length, cell = $("cell");
  cell.max = hidden - 1; let j = Math.max(0, Math.min(hidden - 1, +cell.value || 0));
  cell.value = j; $("size").textContent = hidden + " cells";
  const column = r[q].map(row => row[j]);
  const scale = BOUNDED[q] ? 1 : Math.max(1e-6, ...column.map(Math.abs));
  const text = $("text"); text.innerHTML = "";
  text.className = DATA.task === "charlm" ? "chars" : "";
  m.positions.forEach((label, p) => {
    const s = document.createElement("span");
    s.textContent = label === "\\n" ? "\\u21b5\\n" : label;
    s.style.background = colour(column[p], q, scale);
    if (Math.abs(column[p] / scale) > 0.6) s.style.color = "#fff";
    s.onmousemove = e => tip(e, p, label, j); s.onmouseleave = () => $("tip").style.display = "none";
    text.appendChild(s);
  });
  $("legend").textContent = BOUNDED[q] ? "shade: 0 (white) to 1 (blue)"
    : `shade: -${scale.toFixed(3)} (red), 0 (white), +${scale.toFixed(3)} (blue)`;
}
function tip(e, p, label, j) {
  const r = run(), t = $("tip");
  const lines = Object.keys(r).map(q => q.padEnd(2) + " " + r[q][p][j].toFixed(4) + "  " + NAMES[q]);
  t.textContent = ""; const head = document.createElement("b");
  head.textContent = "position " + p + ": " + JSON.stringify(label) + ", cell " + j;
  t.appendChild(head); const pre = document.createElement("pre");
  pre.style.margin = "4px 0 0"; pre.textContent = lines.join("\\n"); t.appendChild(pre);
  t.style.display = "block"; t.style.left = (e.clientX + 14) + "px"; t.style.top = (e.clientY + 14) + "px";
}
function show(view) {
  if (view.module && DATA.modules[view.module]) { $("module").value = view.module; update(); }
  if (view.layer) { $("layer").value = view.layer; update(); }
  if (view.direction) { $("direction").value = view.direction; update(); }
  if (view.quantity) $("quantity").value = view.quantity;
  if (view.cell !== undefined) $("cell").value = view.cell;
  draw();
}
fill($("module"), Object.keys(DATA.modules));
$("module").onchange = update; $("layer").onchange = update; $("direction").onchange = update;
$("quantity").onchange = draw; $("cell").oninput = draw;
update();
DATA.best.forEach(b => { const button = document.createElement("button");
  button.textContent = `${b.property}: ${b.module} ${b.layer}${b.direction === "backward" ? " backward" : ""} ${b.quantity} ${b.cell} (r ${b.r >= 0 ? "+" : ""}${b.r})`;
  button.onclick = () => show(b); $("best").appendChild(button); });
if (location.hash.length > 1) show(Object.fromEntries(new URLSearchParams(location.hash.slice(1))));
</script></body></html>
"""
