"""Which cells track what: simple properties of the input correlated with every cell and
hidden unit of a trained model's recurrent modules over a whole split (Karpathy, Johnson
and Fei-Fei, 2015), for ``mode=inspect``'s ``cells.md``, ``cells.png`` and its saturation
plot.

A split is read as the task reads it (:func:`read_sample`), run through
:func:`nlp_lstm.inside.run_modules` in batches, and folded into running sums
(:class:`Scan`): per unit the sums of ``x``, ``x**2`` and ``x * y`` for every property
``y``, and per sigmoid gate how often it is below 0.1 and above 0.9, so that a split of any
length costs the memory of one batch. The properties, by task (one value a position):

* charlm: position in the line, inside double quotes, inside brackets, on a speaker-name
  line (``ROMEO:``), a capital letter;
* ner: inside an entity, inside an entity of each type (gold tags);
* sentiment: the sentence's gold label, and after a negation word;
* translate: the position in the sentence, and tokens to its end (encoder and decoder);
* forecast: the hour of day and the day of week of each segment's last row (with a time
  column) and their daily and weekly cycles (cos and sin), and the segment's place in the
  window.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlp_lstm.inside import (
    BATCH,
    HIGH,
    LOW,
    SIGMOID_GATES,
    Modules,
    cell_kind,
    forecast_member,
    forecast_windows,
    run_modules,
)

SCAN_HINT = "give data.<split>=FILE, or inspect.split=null to read the input only"
CHUNK = 400  # charlm: a split's text is read in pieces of whole lines up to this long
SEARCHED = ("c", "h")  # the quantities searched for property cells
SPEAKER = re.compile(r"[A-Z][A-Za-z' .,-]{0,40}:")  # a play's speaker-name line
NEGATIONS = {"not", "n't", "no", "never", "nothing", "none", "nor", "neither", "without"}


@dataclass
class Sample:
    """A split read for inspection: its inputs (as :func:`run_modules` takes them, or
    window positions for forecast) and per input what its properties need (gold tags,
    a label, segment times, or None)."""

    source: str
    items: list[Any]
    notes: list[Any]
    windows: Any = None  # forecast: the split's Windows; items index them
    times: list[Any] | None = None  # forecast: the series' time stamps


# ---------------------------------------------------------------------------- splits


def read_sample(predictor: Any, data: dict, split: str, max_positions: int) -> Sample:
    """The first ``max_positions`` positions (about) of the ``split`` (train, dev or test)
    of ``data`` (a task's data section), read as the task reads it."""
    from nlp_lstm.config import to_dataclass

    task = predictor.task
    if task == "charlm":
        from nlp_lstm.files import read_text
        from nlp_lstm.tasks.charlm import CharLMDataConfig, read_corpus
        from nlp_lstm.tasks.common import require_file

        config = to_dataclass(CharLMDataConfig, data, "data")
        if split == "test":
            path = require_file(config.test, "test file (data.test)", SCAN_HINT)
            text, source = read_text(path, "test file"), str(path)
        else:  # as training read them (dev: a file, or the training text's tail)
            train_text, dev_text, dev_source = read_corpus(config)
            text, source = (dev_text, dev_source) if split == "dev" else (train_text, config.train)
        pieces = list(line_chunks(text[:max_positions], CHUNK))
        return Sample(source, pieces, [None] * len(pieces))
    if task == "ner":
        from nlp_lstm.data.conll import read_conll
        from nlp_lstm.tasks.common import require_file
        from nlp_lstm.tasks.ner import NERDataConfig, _with_iob2_tags

        config = to_dataclass(NERDataConfig, data, "data")
        path = require_file(getattr(config, split), f"{split} file (data.{split})", SCAN_HINT)
        sentences = read_conll(path, config.token_column, config.tag_column, what=f"{split} file")
        sentences = _with_iob2_tags(_until(sentences, max_positions, lambda s: len(s.tokens)))
        return Sample(str(path), [s.tokens for s in sentences], [s.tags for s in sentences])
    if task == "sentiment":
        from nlp_lstm.tasks.sentiment import SentimentDataConfig, read_split

        config = to_dataclass(SentimentDataConfig, data, "data")
        texts = read_split(config, split)
        kept = _until(list(range(len(texts.tokens))), max_positions, lambda i: len(texts.tokens[i]))
        kept = [i for i in kept if texts.tokens[i]]
        return Sample(texts.path, [texts.tokens[i] for i in kept], [texts.labels[i] for i in kept])
    if task == "translate":
        from nlp_lstm.tasks.translate import TranslateDataConfig, read_pairs

        config = to_dataclass(TranslateDataConfig, data, "data")
        pairs = read_pairs(getattr(config, split), config, split)
        sources = _until(pairs.source, max_positions // 2, lambda s: len(s.split()))
        return Sample(str(pairs.source_path), sources, [None] * len(sources))
    return _forecast_sample(predictor, data, split, max_positions)


def _until(items: list, limit: int, size) -> list:
    """The first items whose sizes add up to ``limit`` (at least one)."""
    total = 0
    for count, item in enumerate(items):
        total += size(item)
        if total >= limit:
            return items[: count + 1]
    return items


def line_chunks(text: str, size: int) -> Iterator[str]:
    """``text`` in consecutive pieces of whole lines, each up to ``size`` characters (a
    longer line is cut), so that every piece starts a line."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut >= start else end
        yield text[start:end]
        start = end


def _forecast_sample(predictor: Any, data: dict, split: str, max_positions: int) -> Sample:
    """Windows spread evenly over the split, as many as ``max_positions`` allows."""
    from dataclasses import replace

    from nlp_lstm.data.series import read_series
    from nlp_lstm.tasks.common import require_file
    from nlp_lstm.tasks.forecast import prepare

    config = replace(predictor.data, path=data.get("path") or predictor.data.path)
    path = require_file(config.path, "series file (data.path)", SCAN_HINT)
    series = read_series(path, config.time_column)
    prepared = prepare(series, config, predictor.targets, predictor.features, predictor.scaler)
    windows = prepared.windows[split]
    member = forecast_member(predictor)
    rows = len(predictor.targets) if member.independent else 1
    per_window = rows * config.look_back // member.project.segment
    count = max(1, min(len(windows), max_positions // max(per_window, 1)))
    chosen = sorted({int(i) for i in np.linspace(0, len(windows) - 1, count)})
    notes = []
    for i in chosen:
        first = windows.start + i
        notes.append(list(range(first, first + config.look_back)))
    return Sample(str(path), chosen, notes, windows=windows, times=series.times)


def sample_modules(predictor: Any, sample: Sample, indices: list[int]) -> list[Modules]:
    """The recurrent modules' gates for some of the sample's inputs."""
    if sample.windows is None:
        return run_modules(predictor, [sample.items[i] for i in indices])
    windows = torch.stack([sample.windows.window(sample.items[i])[0] for i in indices])
    labels = [[_row_label(sample, row) for row in sample.notes[i]] for i in indices]
    with predictor.lock, torch.no_grad():
        return forecast_windows(predictor, windows, labels)


def _row_label(sample: Sample, row: int) -> str:
    return sample.times[row].isoformat(" ") if sample.times is not None else str(row)


# ---------------------------------------------------------------------------- properties


def properties(predictor: Any, sample: Sample, index: int, module: str, labels: list[str]):
    """Each property's value at each position of one module over one input ``(P,)``."""
    task, note = predictor.task, sample.notes[index]
    if task == "charlm":
        return char_properties("".join(labels))
    if task == "ner":
        inside = np.array([t != "O" for t in note], dtype=float)
        found = {"inside an entity": inside}
        for kind in predictor.labels:
            found[f"inside {kind}"] = np.array([t[2:] == kind for t in note], dtype=float)
        return found
    if task == "sentiment":
        names = list(predictor.labels.itos)
        shown = names[1:] if len(names) == 2 else names
        found = {f"label {name}": np.full(len(labels), float(note == name)) for name in shown}
        negated, seen = [], False
        for token in labels:
            negated.append(float(seen))
            seen = seen or token.lower() in NEGATIONS or token.lower().endswith("n't")
        found["after a negation"] = np.array(negated)
        return found
    if task == "translate":
        steps = np.arange(len(labels), dtype=float)
        return {"position in sentence": steps, "tokens to the end": steps[::-1].copy()}
    return _forecast_properties(predictor, sample, index, len(labels))


def char_properties(text: str) -> dict[str, np.ndarray]:
    """Per character of a text that starts a line: its position in the line (the newline
    ending a line is its last position), inside double quotes (from the opening quote to
    the closing one), inside brackets, on a speaker-name line, a capital letter."""
    size = len(text)
    column, speaker = np.zeros(size), np.zeros(size)
    offset = 0
    for line in text.split("\n"):
        end = min(offset + len(line) + 1, size)  # with its newline
        column[offset:end] = np.arange(end - offset)
        if SPEAKER.fullmatch(line):
            speaker[offset:end] = 1.0
        offset = end
    quoted, bracketed = np.zeros(size), np.zeros(size)
    inside, depth = False, 0
    for position, char in enumerate(text):
        opening = char == '"' and not inside
        inside = inside != (char == '"')
        quoted[position] = float(inside or (char == '"' and not opening))
        depth += char in "([{"
        bracketed[position] = float(depth > 0)
        depth = max(depth - (char in ")]}"), 0)
    capital = np.array([c.isupper() for c in text], dtype=float)
    return {
        "position in line": column,
        "inside quotes": quoted,
        "inside brackets": bracketed,
        "speaker-name line": speaker,
        "capital letter": capital,
    }


def _forecast_properties(predictor: Any, sample: Sample, index: int, positions: int):
    """Per segment (a row of segments per target column with independent channels)."""
    rows = sample.notes[index]
    size = forecast_member(predictor).project.segment
    ends = rows[size - 1 :: size]
    repeat = positions // len(ends)
    found = {"segment in window": np.tile(np.arange(len(ends), dtype=float), repeat)}
    if sample.times is not None:
        times = [sample.times[row] for row in ends]
        hours = np.array([t.hour + t.minute / 60 for t in times])
        days = np.array([t.weekday() + hours[k] / 24 for k, t in enumerate(times)])
        found["hour of day"] = np.tile(np.floor(hours), repeat)
        found["day of week"] = np.tile(np.floor(days), repeat)
        for name, value, period in (("daily", hours, 24), ("weekly", days, 7)):
            angle = 2 * np.pi * value / period  # a cycle peaking at any phase is a mix of both
            found[f"{name} cycle (cos)"] = np.tile(np.cos(angle), repeat)
            found[f"{name} cycle (sin)"] = np.tile(np.sin(angle), repeat)
    return found


# ---------------------------------------------------------------------------- the scan


@dataclass
class Unit:
    """One unit's correlation with a property: ``key`` is ``module.l{k}[.reverse].{q}``."""

    property: str
    key: str
    unit: int
    r: float

    @property
    def name(self) -> str:
        return f"{self.key}[{self.unit}]"


@dataclass
class Scan:
    """Running sums over the positions of a split (see the module's docstring), and the
    first ``keep`` positions' cell and hidden states of each module for an LSTMVis export."""

    keep: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # module -> positions seen
    inputs: int = 0
    names: dict[str, list[str]] = field(default_factory=dict)  # module -> property names
    sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    kept: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    kept_labels: dict[str, list[str]] = field(default_factory=dict)

    def add(self, module: str, gates: dict[str, np.ndarray], labels: list[str],
            values: dict[str, np.ndarray]) -> None:  # fmt: skip
        """One module over some positions: ``gates`` ``{key: (P, H)}``, ``values`` ``{property:
        (P,)}``."""
        names = self.names.setdefault(module, sorted(values))
        if sorted(values) != names:
            raise ValueError(f"{module}: properties {sorted(values)} after {names}")
        y = np.stack([values[n] for n in names], 1) if names else np.zeros((len(labels), 0))
        seen = self.positions.get(module, 0)
        self._sum(f"{module}#", {"y": y.sum(0), "yy": (y * y).sum(0)})
        kind = cell_kind(gates)
        for key, value in gates.items():
            q = key.rsplit(".", 1)[1]
            if q in SIGMOID_GATES[kind]:
                low, high = (value < LOW).sum(0), (value > HIGH).sum(0)
                self._sum(f"{module}.{key}", {"low": low, "high": high})
            if q in SEARCHED:
                x = value.astype(np.float64)
                self._sum(f"{module}.{key}", {"x": x.sum(0), "xx": (x * x).sum(0), "xy": x.T @ y})
                if seen < self.keep:
                    take = self.keep - seen
                    self.kept.setdefault(module, {}).setdefault(key, []).append(value[:take])
        if seen < self.keep:
            self.kept_labels.setdefault(module, []).extend(labels[: self.keep - seen])
        self.positions[module] = seen + len(labels)

    def _sum(self, key: str, parts: dict[str, np.ndarray]) -> None:
        into = self.sums.setdefault(key, {})
        for name, value in parts.items():
            into[name] = into[name] + value if name in into else value.astype(np.float64)

    def saturation(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per sigmoid gate array: ``(fraction < 0.1, fraction > 0.9)`` of each unit."""
        out = {}
        for key, sums in self.sums.items():
            if "low" in sums:
                count = self.positions[key.split(".")[0]]
                out[key] = (sums["low"] / count, sums["high"] / count)
        return out

    def correlations(self, module: str) -> dict[str, np.ndarray]:
        """Per searched array of ``module``: Pearson r ``(H, properties)`` (0 where a unit or
        a property does not vary)."""
        n = self.positions[module]
        own = self.sums[f"{module}#"]
        var_y = n * own["yy"] - own["y"] ** 2
        out = {}
        for key, sums in self.sums.items():
            if "xy" not in sums or key.split(".")[0] != module:
                continue
            var_x = n * sums["xx"] - sums["x"] ** 2
            cov = n * sums["xy"] - np.outer(sums["x"], own["y"])
            scale = np.sqrt(np.clip(np.outer(var_x, var_y), 0, None))
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(scale > 1e-12 * max(n, 1) ** 2, cov / scale, 0.0)
            out[key] = np.clip(r, -1.0, 1.0)
        return out

    def means(self, module: str) -> dict[str, float]:
        own = self.sums[f"{module}#"]
        return {n: float(v) / self.positions[module] for n, v in zip(self.names[module], own["y"], strict=True)}  # fmt: skip

    def best(self, top: int = 3) -> dict[str, list[Unit]]:
        """Per property (``module: property`` when there are several modules) the ``top``
        units by |r|, best first; properties constant over the split are left out."""
        modules = sorted(self.names)
        found: dict[str, list[Unit]] = {}
        for module in modules:
            table = self.correlations(module)
            keys = sorted(table)
            if not keys:
                continue
            stacked = np.concatenate([table[k] for k in keys])  # (units, properties)
            owners = [(k, u) for k in keys for u in range(table[k].shape[0])]
            for p, name in enumerate(self.names[module]):
                column = np.abs(stacked[:, p])
                if not column.any():
                    continue
                label = f"{module}: {name}" if len(modules) > 1 else name
                order = np.argsort(-column, kind="stable")[:top]
                found[label] = [
                    Unit(label, owners[i][0], owners[i][1], float(stacked[i, p])) for i in order
                ]
        return found


def scan(predictor: Any, sample: Sample, keep: int = 0) -> Scan:
    """Run the whole sample in batches and fold every position into a :class:`Scan`."""
    result = Scan(keep=keep)
    for start in range(0, len(sample.items), BATCH):
        indices = list(range(start, min(start + BATCH, len(sample.items))))
        outputs = sample_modules(predictor, sample, indices)
        for module in outputs[0]:
            labels, values, gates = [], [], []
            for index, modules in zip(indices, outputs, strict=True):
                array, names = modules[module]
                labels += names
                values.append(properties(predictor, sample, index, module, names))
                gates.append(array)
            joined = {k: torch.cat([g[k] for g in gates]).float().cpu().numpy() for k in gates[0]}
            merged = {n: np.concatenate([v[n] for v in values]) for n in values[0]}
            result.add(module, joined, labels, merged)
        result.inputs += len(indices)
    return result


# ---------------------------------------------------------------------------- excerpts


@dataclass
class Excerpt:
    """One unit over a short stretch of the split: the positions' labels, the unit's
    values and the property's."""

    unit: Unit
    labels: list[str]
    values: np.ndarray
    truth: np.ndarray


def excerpts(predictor: Any, sample: Sample, units: list[Unit], length: int) -> list[Excerpt]:
    """For each unit, ``length`` positions of the sample from the first input over which
    its property varies (and the inputs after it), with the unit's values there."""
    found = []
    last = min(len(sample.items), 400) - 1
    computed: dict[int, Modules] = {}  # input -> its gates, shared by the units

    def modules_at(index: int) -> Modules:
        if index not in computed:
            computed[index] = sample_modules(predictor, sample, [index])[0]
        return computed[index]

    for unit in units:
        module, name = _module_and_property(unit)
        key = unit.key.split(".", 1)[1]
        labels: list[str] = []
        values, truth = [], []
        for index in range(last + 1):
            gates, names = modules_at(index)[module]
            prop = properties(predictor, sample, index, module, names)[name]
            if not labels and prop.min() == prop.max() and index < last:
                continue
            labels += names
            values.append(gates[key][:, unit.unit].float().cpu().numpy())
            truth.append(prop)
            if len(labels) >= length:
                break
        found.append(Excerpt(unit, labels[:length], np.concatenate(values)[:length],
                             np.concatenate(truth)[:length]))  # fmt: skip
    return found


def _module_and_property(unit: Unit) -> tuple[str, str]:
    module = unit.key.split(".")[0]
    name = unit.property.split(": ", 1)[1] if ": " in unit.property else unit.property
    return module, name


BARS = "▁▂▃▄▅▆▇█"


def shown(label: str) -> str:
    """A position's label as one printable run (a newline as ⏎, a tab as ⇥)."""
    return label.replace("\n", "⏎").replace("\t", "⇥") or "∅"


def bar_lines(excerpt: Excerpt, width: int = 96, chars: bool = False) -> list[str]:
    """The excerpt as pairs of lines: the text, and under each position a bar of its value
    (▁ lowest to █ highest over the excerpt)."""
    low, high = float(excerpt.values.min()), float(excerpt.values.max())
    span = high - low if high > low else 1.0
    levels = [BARS[min(7, int((v - low) / span * 8))] for v in excerpt.values]
    lines, text, bars = [], "", ""
    for label, level in zip(excerpt.labels, levels, strict=True):
        piece = shown(label) if chars else shown(label) + " "
        if len(text) + len(piece) > width and text:
            lines += [text.rstrip(), bars.rstrip()]
            text, bars = "", ""
        text += piece
        bars += level * (len(piece) - (0 if chars else 1)) + ("" if chars else " ")
    if text:
        lines += [text.rstrip(), bars.rstrip()]
    return lines


# ---------------------------------------------------------------------------- writing


def cells_markdown(task: str, ckpt: str, split: str, sample: Sample, result: Scan,
                   best: dict[str, list[Unit]], shown_excerpts: list[Excerpt]) -> str:  # fmt: skip
    """cells.md: the table of best units per property, the plot, and each best unit's
    excerpt as text over bars."""
    units = sum(sums["x"].size for sums in result.sums.values() if "x" in sums)
    positions = sum(result.positions.values())
    lines = [
        f"# Cells that track the input: {task}, `{Path(str(ckpt)).name}`",
        "",
        f"The {split} split (`{sample.source}`): {positions:,} positions in {result.inputs:,} "
        f"inputs. Each unit of every cell state `c` and hidden state `h` (every layer and "
        f"direction: {units:,} units) is correlated (Pearson r) with each property over every "
        "position; the units with the largest |r| are listed, best first.",
        "",
        "| property | mean over the split | best unit | r | next |",
        "|---|---|---|---|---|",
    ]
    for name, ranked in best.items():
        module, prop = name.split(": ", 1) if ": " in name else (ranked[0].key.split(".")[0], name)
        mean = result.means(module)[prop]
        following = ", ".join(f"`{u.name}` {u.r:+.2f}" for u in ranked[1:])
        lines.append(
            f"| {name} | {mean:.3g} | `{ranked[0].name}` | {ranked[0].r:+.3f} | {following} |"
        )
    lines += ["", "![the best unit of each property over an excerpt](cells.png)", ""]
    for excerpt in shown_excerpts:
        unit = excerpt.unit
        lines += [f"## {unit.property}: `{unit.name}`, r = {unit.r:+.3f}", "", "```"]
        lines += bar_lines(excerpt, chars=task == "charlm")
        lines += ["```", ""]
    if not best:
        lines.append("No property varies over this split.")
    return "\n".join(lines) + "\n"


def plot_cells(shown_excerpts: list[Excerpt], path: Path, chars: bool, width: int = 80) -> None:
    """Each best unit's excerpt as text on a background shaded by the unit's value (blue
    positive, red negative, scaled to the excerpt's largest magnitude), a row per property."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = [_layout(e, chars, width) for e in shown_excerpts]
    heights = [max(1, len(rows)) for rows, _ in layouts]
    figure, axes = plt.subplots(
        len(layouts) or 1, 1, squeeze=False,
        figsize=(width * 0.085 + 0.4, sum(0.24 * h + 0.4 for h in heights) + 0.2),
        gridspec_kw={"height_ratios": heights or [1]},
    )  # fmt: skip
    for axis, excerpt, (rows, grid) in zip(axes[:, 0], shown_excerpts, layouts, strict=False):
        scale = float(np.abs(excerpt.values).max()) or 1.0
        axis.imshow(np.ma.masked_invalid(grid) / scale, cmap="RdBu", vmin=-1, vmax=1,
                    aspect="auto", interpolation="nearest",
                    extent=(0, width, len(rows), 0))  # fmt: skip
        unit = excerpt.unit
        axis.set_title(f"{unit.property}: {unit.name}  r = {unit.r:+.3f}", fontsize=9, loc="left")
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes[len(shown_excerpts) :, 0]:
        axis.axis("off")
    figure.tight_layout()
    if shown_excerpts:  # a monospace glyph is 0.6 em wide: one column per character
        column_points = axes[0, 0].get_position().width * figure.get_figwidth() * 72 / width
        size = column_points / 0.66
        for axis, (rows, _) in zip(axes[:, 0], layouts, strict=False):
            for row, pieces in enumerate(rows):
                for column, text in pieces:
                    axis.text(column, row + 0.75, text, family="monospace", fontsize=size)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _layout(excerpt: Excerpt, chars: bool, width: int):
    """Rows of ``(column, text)`` and a grid ``(rows, width)`` of each column's value."""
    rows: list[list[tuple[int, str]]] = [[]]
    values: list[list[float]] = [[np.nan] * width]
    column = 0
    for label, value in zip(excerpt.labels, excerpt.values, strict=True):
        text = shown(label)[:width]
        size = len(text) + (0 if chars else 1)
        if column + len(text) > width:
            rows.append([])
            values.append([np.nan] * width)
            column = 0
        rows[-1].append((column, text))
        for c in range(column, min(column + len(text), width)):
            values[-1][c] = float(value)
        column += size
        if chars and label == "\n":
            rows.append([])
            values.append([np.nan] * width)
            column = 0
    if not rows[-1]:
        rows.pop()
        values.pop()
    return rows, np.array(values)
