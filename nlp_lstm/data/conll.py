"""CoNLL column files and tag schemes (IOB1, IOB2, BIOES).

A CoNLL file has one token a line with space- or tab-separated columns (token first,
tag last), a blank line between sentences and optional ``-DOCSTART-`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nlp_lstm.errors import DataError, quote
from nlp_lstm.files import read_lines

TAG_PATTERN = re.compile(r"^(O|[BIES]-\S+)$")
SCHEMES = ("iob1", "iob2", "bioes")


@dataclass
class Sentence:
    """Tokens with their tags (``None`` for raw text) and the 1-based line it starts on."""

    tokens: list[str]
    tags: list[str] | None
    line: int


def read_conll(
    path: str | Path, token_column: int = 0, tag_column: int = -1, what: str = "CoNLL file"
) -> list[Sentence]:
    """Read sentences from a CoNLL file, checking every line.

    Every token line must have the same number of columns as the first one and a tag of
    the form ``O`` or ``B-X``/``I-X``/``E-X``/``S-X``; any other line is a DataError naming
    the file and the line.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    width = None

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags), start))
            tokens.clear()
            tags.clear()

    for number, raw in enumerate(read_lines(path, what), start=1):
        fields = raw.split()
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if width is None:
            width = len(fields)
            if width < 2:
                raise DataError(
                    path,
                    number,
                    f"expected at least 2 columns (token ... tag), found 1: {quote(raw)}",
                )
        if len(fields) != width:
            raise DataError(
                path,
                number,
                f"expected {width} columns like the first token line, found {len(fields)}: {quote(raw)}",
            )
        try:
            token, tag = fields[token_column], fields[tag_column]
        except IndexError:
            raise DataError(path, number, f"no column {tag_column} in {quote(raw)}") from None
        if not TAG_PATTERN.match(tag):
            raise DataError(
                path, number, f"unknown tag form {quote(tag)} (expected O, B-X, I-X, E-X or S-X)"
            )
        if not tokens:
            start = number
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise DataError(path, None, f"{what} holds no sentences")
    return sentences


def read_tokenized_text(path: str | Path) -> list[Sentence]:
    """Raw text, one sentence a line, whitespace-separated tokens; blank lines are skipped."""
    return [
        Sentence(line.split(), None, number)
        for number, line in enumerate(read_lines(path, "input file"), start=1)
        if line.strip()
    ]


def looks_like_conll(path: str | Path) -> bool:
    """True when every non-blank line ends in a tag-shaped column and has 2+ columns (a
    hint for the log only: raw text can look like that, so it never decides the format)."""
    lines = [ln.split() for ln in read_lines(path, "input file") if ln.strip()]
    return all((len(f) >= 2 and TAG_PATTERN.match(f[-1])) or f[0] == "-DOCSTART-" for f in lines)


# ---------------------------------------------------------------------------- schemes


def _split(tag: str) -> tuple[str, str]:
    return (tag, "") if tag == "O" else (tag[0], tag[2:])


def detect_scheme(tag_sequences: list[list[str]]) -> str:
    """``bioes`` if E-/S- tags occur, ``iob1`` if some I-X starts an entity, else ``iob2``."""
    scheme = "iob2"
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            prefix, kind = _split(tag)
            if prefix in "ES":
                return "bioes"
            if prefix == "I" and previous not in (f"B-{kind}", f"I-{kind}"):
                scheme = "iob1"
            previous = tag
    return scheme


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """Convert a sequence from ``scheme`` to IOB2. Lenient: stray I-X start an entity."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        prefix, kind = _split(tag)
        if prefix == "S":
            tag = f"B-{kind}"
        elif prefix == "E":
            tag = f"I-{kind}"
        prefix, kind = _split(tag)
        if prefix == "I" and previous not in (f"B-{kind}", f"I-{kind}"):
            tag = f"B-{kind}"
        out.append(tag)
        previous = tag
    return out


def iob2_to_bioes(tags: list[str]) -> list[str]:
    """Convert a valid IOB2 sequence to BIOES."""
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = _split(tag)
        continues = i + 1 < len(tags) and tags[i + 1] == f"I-{kind}"
        if prefix == "B":
            out.append(tag if continues else f"S-{kind}")
        elif prefix == "I":
            out.append(tag if continues else f"E-{kind}")
        else:
            out.append(tag)
    return out


def convert_tags(tags: list[str], source: str, target: str) -> list[str]:
    """Convert between schemes via IOB2 (``target`` is ``iob2`` or ``bioes``)."""
    iob2 = to_iob2(tags, source)
    return iob2_to_bioes(iob2) if target == "bioes" else iob2


def allowed_transitions(
    tags: list[str], scheme: str
) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """Which starts, transitions (``[from][to]``) and ends form valid sequences in ``scheme``.

    IOB2: I-X only after B-X or I-X. BIOES: I-X/E-X only after B-X or I-X, and B-X/I-X
    must be followed by I-X or E-X (so they cannot end a sentence).
    """
    if scheme not in ("iob2", "bioes"):
        raise ValueError(f"constraints are defined for iob2 and bioes, not {scheme!r}")
    parts = [_split(t) for t in tags]

    def can_follow(prev: tuple[str, str] | None, cur: tuple[str, str]) -> bool:
        p_prefix, p_kind = prev if prev else ("O", "")
        c_prefix, c_kind = cur
        if scheme == "iob2":
            return c_prefix != "I" or (p_prefix in "BI" and p_kind == c_kind and prev is not None)
        inside = prev is not None and p_prefix in "BI"
        if inside:
            return c_prefix in "IE" and c_kind == p_kind
        return c_prefix in ("O", "B", "S")

    start = [can_follow(None, c) for c in parts]
    trans = [[can_follow(p, c) for c in parts] for p in parts]
    end = [scheme == "iob2" or p[0] in ("O", "E", "S") for p in parts]
    return start, trans, end


def is_valid(tags: list[str], scheme: str) -> bool:
    """Whether a tag sequence satisfies ``scheme``'s constraints."""
    if not tags:
        return True
    tag_set = sorted(set(tags))
    index = {t: i for i, t in enumerate(tag_set)}
    start, trans, end = allowed_transitions(tag_set, scheme)
    ids = [index[t] for t in tags]
    return (
        start[ids[0]]
        and end[ids[-1]]
        and all(trans[a][b] for a, b in zip(ids, ids[1:], strict=False))
    )
