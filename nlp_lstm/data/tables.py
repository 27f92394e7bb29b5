"""Labelled text tables (CSV, TSV, JSONL, or a Hugging Face hub dataset) via ``datasets``.

A stdlib pass checks the structure first, so a bad row is reported by file and line (a
wrong column count, bad JSON, a missing field, an empty text or label); then ``datasets``
loads the file (cached as Arrow) and tokenises it with ``map``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nlp_lstm.errors import DataError, UserError
from nlp_lstm.files import read_lines

Tokenizer = Literal["whitespace", "words"]
WORDS = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")
NON_SPACE = re.compile(r"\S+")


@dataclass
class LabelledTexts:
    """Token lists with their labels (strings) and the line each came from."""

    tokens: list[list[str]]
    labels: list[str]
    lines: list[int]
    path: str


# Penn Treebank escapes for brackets (SST's sentence files write -lrb- where its phrase file
# and users' raw text write "("): every token is read as the bracket itself.
PTB_BRACKETS = {
    "-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
}  # fmt: skip


def tokenize(text: str, tokenizer: Tokenizer, lowercase: bool) -> list[str]:
    """``whitespace``: split on spaces (pre-tokenised corpora such as SST); ``words``: words
    and single punctuation marks. PTB bracket tokens (``-lrb-`` ..., any case) become the
    brackets they stand for, here and only here, for training, test and predict alike."""
    return [token for token, _, _ in tokenize_spans(text, tokenizer, lowercase)]


def tokenize_spans(text: str, tokenizer: Tokenizer, lowercase: bool) -> list[tuple[str, int, int]]:
    """:func:`tokenize`'s tokens with where each was cut from: ``(token, start, end)``,
    ``text[start:end]`` being the token before lower-casing and bracket mapping."""
    pattern = NON_SPACE if tokenizer == "whitespace" else WORDS
    spans = []
    for match in pattern.finditer(text):
        token = match.group().lower() if lowercase else match.group()
        if token[0] == "-":
            token = PTB_BRACKETS.get(token.lower(), token)
        spans.append((token, match.start(), match.end()))
    return spans


def _table_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise DataError(path, None, "unknown table format: name it .csv, .tsv or .jsonl")


def _scan_delimited(
    path: Path, delimiter: str, quoting: int, fields: tuple[str, str]
) -> list[tuple[int, str, str]]:
    text = "\n".join(read_lines(path, "table"))
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    header = next(reader)
    missing = [f for f in fields if f not in header]
    if missing:
        raise DataError(
            path,
            1,
            f"no column {missing[0]!r} in the header {header} (set data.text_field / data.label_field)",
        )
    positions = [header.index(f) for f in fields]
    rows = []
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                path, start, f"expected {len(header)} columns like the header, found {len(row)}"
            )
        rows.append((start, row[positions[0]], row[positions[1]]))
    return header, rows


def _scan_jsonl(path: Path, fields: tuple[str, str]) -> list[tuple[int, str, str]]:
    rows = []
    for number, line in enumerate(read_lines(path, "table"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, number, f"not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(path, number, "expected a JSON object per line")
        for field in fields:
            if field not in record:
                raise DataError(
                    path, number, f"no field {field!r} (set data.text_field / data.label_field)"
                )
        rows.append((number, record[fields[0]], record[fields[1]]))
    return rows


def read_labelled(
    path: str | Path,
    text_field: str,
    label_field: str,
    tokenizer: Tokenizer = "whitespace",
    lowercase: bool = False,
    cache_dir: str | None = None,
) -> LabelledTexts:
    """Read and check a local table, then load and tokenise it through ``datasets``."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(path).expanduser()
    kind = _table_kind(path)
    fields = (text_field, label_field)
    if kind == "jsonl":
        rows = _scan_jsonl(path, fields)
    else:
        quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
        header, rows = _scan_delimited(path, "\t" if kind == "tsv" else ",", quoting, fields)
    if not rows:
        raise DataError(path, None, "table has no rows")
    for line, text, label in rows:
        if label is None or str(label).strip() == "":
            raise DataError(path, line, "missing label")
        if text is None or not str(text).strip():
            raise DataError(path, line, "empty text")

    if kind == "jsonl":
        dataset = datasets.load_dataset(
            "json", data_files=str(path), split="train", cache_dir=cache_dir
        )
    else:
        dataset = datasets.load_dataset(
            "csv", data_files=str(path), split="train", cache_dir=cache_dir,
            delimiter="\t" if kind == "tsv" else ",", quoting=quoting, keep_default_na=False, na_filter=False,
            features=datasets.Features({name: datasets.Value("string") for name in header}),
        )  # fmt: skip
    return _tokenised(
        dataset, fields, [line for line, _, _ in rows], str(path), tokenizer, lowercase
    )


def read_hub(name: str, config: str | None, split: str, text_field: str, label_field: str,
             tokenizer: Tokenizer = "whitespace", lowercase: bool = False, cache_dir: str | None = None) -> LabelledTexts:  # fmt: skip
    """A split of a Hugging Face hub dataset (needs the network on first use)."""
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except Exception as err:  # hub and network errors come in many types
        raise UserError(f"cannot load {name!r} split {split!r} from the hub: {err}") from None
    for field in (text_field, label_field):
        if field not in dataset.column_names:
            raise UserError(f"{name}: no column {field!r} (columns: {dataset.column_names})")
    where = f"{name}[{split}]"
    for row, (text, label) in enumerate(
        zip(dataset[text_field], dataset[label_field], strict=True), start=1
    ):
        if label is None or str(label).strip() == "":
            raise DataError(where, row, "missing label")
        if not str(text or "").strip():
            raise DataError(where, row, "empty text")
    return _tokenised(
        dataset,
        (text_field, label_field),
        list(range(1, len(dataset) + 1)),
        where,
        tokenizer,
        lowercase,
    )


def _clean(value) -> str:
    """A cell as text without byte-order marks (a file concatenated from two carries one
    at the start of a line, which would become part of a label or a token)."""
    return str(value).replace("\ufeff", "")


def _tokenised(
    dataset,
    fields: tuple[str, str],
    lines: list[int],
    where: str,
    tokenizer: Tokenizer,
    lowercase: bool,
) -> LabelledTexts:
    text_field, label_field = fields
    if len(dataset) != len(lines):
        raise DataError(
            where,
            None,
            f"parsed {len(dataset)} rows but checked {len(lines)}; is the quoting unusual?",
        )
    dataset = dataset.map(
        lambda batch: {
            "tokens": [tokenize(_clean(t), tokenizer, lowercase) for t in batch[text_field]]
        },
        batched=True,
    )
    return LabelledTexts(
        list(dataset["tokens"]),
        [_clean(label).strip() for label in dataset[label_field]],
        lines,
        where,
    )
