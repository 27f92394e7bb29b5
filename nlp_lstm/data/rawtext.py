"""Raw text -> sentences of tokens with character offsets, split as CoNLL-2003 is tokenised.

CoNLL-2003 (Reuters) follows Penn Treebank conventions, and a tagger only knows tokens cut
the way its training corpus cuts them: ``Berlin.`` is ``Berlin`` ``.``; ``Germany's`` is
``Germany`` ``'s``; ``isn't`` is ``is`` ``n't``; ``U.S.``, ``Inc.``, ``M.`` (an initial),
``1996-08-30``, ``6-4``, ``1,000``, ``3.5``, ``one-day``, ``O'Brien`` and ``C$`` stay whole;
``"``, ``(``, ``$``, ``%``, ``--`` and ``...`` are tokens of their own. General-purpose
tokenizers disagree with that in ways that matter here (syntok, the successor of the segtok
that flair uses, cuts ``U.S.`` into ``U.S`` ``.`` and rewrites ``n't`` as ``not``), so the
rules are one regular expression, checked against the corpus itself
(``scripts/bench_api.py`` reports how many CoNLL dev sentences, detokenised, come back
exactly).

Every token is a slice of the caller's text (``text[start:end] == token``), tokens never
overlap, and every character that is not white space belongs to exactly one token.
Sentences end after ``.``, ``!``, ``?`` or ``...`` (with any closing quotes or brackets)
when the next token can start a sentence, at every line break, and after ``MAX_TOKENS``
tokens at the latest.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_TOKENS = 200  # a longer run without a sentence end is cut into pieces of this size

# single-period abbreviations kept whole (PTB and CoNLL do): titles, company and street
# words, months, and a few Latin ones; case-sensitive, as in the corpus
ABBREVIATIONS = frozenset(
    """Mr Mrs Ms Dr Prof St Sr Jr Inc Corp Co Ltd Bros Gen Gov Sen Rep Lt Col Capt Sgt Maj
    Adm Cmdr Rev Hon Mt Ft Ave Blvd Rd No vs Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov
    Dec Mon Tue Wed Thu Fri Sat Sun etc approx Nos Fig Dept Univ Assn Est Ala Ariz Ark
    Calif Colo Conn Del Fla Ga Ill Ind Kan Ky La Md Mass Mich Minn Miss Mo Mont Neb Nev Okla
    Ore Pa Tenn Tex Va Vt Wash Wis Wyo""".split()  # noqa: SIM905
)

_WORD = r"(?:\w|[\u0300-\u036f])"  # letters, digits, combining accents
_CLITIC = r"(?i:['’](?:s|re|ve|ll|d|m)|n['’]t)(?!\w)"
TOKEN = re.compile(
    rf"""
    https?://[^\s"'<>()]*[^\s"'<>().,;:!?]       # URLs (closing punctuation left out)
  | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+             # e-mail addresses
  | (?:[A-Za-z]\.){{2,}}(?![A-Za-z])               # U.S.  U.N.  a.m.  F.C.
  | [A-Z]{{1,3}}\$                                 # C$  A$  US$
  | [+-]?\.?\d(?:[\d,.:/-]*\d)?(?!\w|-\w)         # 1,000  3.5  .500  1996-08-30  6-4  1/2  +44
  | {_WORD}+?(?=(?i:n['’]t)(?!\w))                # is|n't  do|n't
  | {_CLITIC}                                     # 's 're 've 'll 'd 'm n't
  | {_WORD}+(?:(?:-|['’](?!(?i:s|re|ve|ll|d|m|t)(?!\w))|&){_WORD}+)*
                                                  # words, one-day, O'Brien, AT&T
  | \.{{2,}} | -{{2,}} | `` | ''                  # ...  --  PTB quotes
  | \S                                            # any other mark, alone
    """,
    re.VERBOSE,
)
_ENDS = frozenset({".", "!", "?", "...", "…"})
_CLOSERS = frozenset({'"', "'", ")", "]", "}", "''", "’", "”", "»"})
_OPENERS = frozenset({'"', "'", "(", "[", "{", "``", "‘", "“", "«", "-", "--"})


class Token(NamedTuple):
    """A token and where it is in the text it was cut from: ``text[start:end]``."""

    text: str
    start: int
    end: int


_CHUNK = re.compile(r"\S+")
_TRAILING = frozenset(',;:!?)"')  # a mark that always stands alone after a plain word
_LEADING = frozenset('("')  # and before one


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` with their character offsets (see the module docstring)."""
    tokens: list[Token] = []
    for chunk in _CHUNK.finditer(text):  # no token spans white space
        word, start, end = chunk.group(), chunk.start(), chunk.end()
        if word.isalnum() or len(word) == 1:  # most chunks: a plain word, a number, a mark
            tokens.append(Token(word, start, end))
        elif word[:-1].isalnum() and (
            word[-1] in _TRAILING or (word[-1] == "." and _period_alone(text, word[:-1], start))
        ):  # "Berlin,"  "said:"  "Berlin."
            tokens += (Token(word[:-1], start, end - 1), Token(word[-1], end - 1, end))
        elif word[0] in _LEADING and word[1:].isalnum():  # "(Reuters  "Yes
            tokens += (Token(word[0], start, start + 1), Token(word[1:], start + 1, end))
        else:
            _cut(text, start, end, tokens)
    return tokens


def _cut(text: str, start: int, end: int, tokens: list[Token]) -> None:
    """Append the tokens of the chunk ``text[start:end]`` (no white space in it)."""
    first = len(tokens)
    for match in TOKEN.finditer(text, start, end):
        word, begin, stop = match.group(), match.start(), match.end()
        if text.startswith(".", stop):
            word, stop = _with_period(text, word, begin, stop)
        if len(tokens) > first and begin < tokens[-1].end:  # the word before took a period
            begin = tokens[-1].end
            if begin >= stop:
                continue
            word = text[begin:stop]  # what is left of the match ("Mr.." -> "Mr." ".")
        tokens.append(Token(word, begin, stop))


def _period_alone(text: str, word: str, start: int) -> bool:
    """Whether the ``.`` after the plain word ``word`` (at ``start``) is a token of its own."""
    return _with_period(text, word, start, start + len(word))[0] == word


def _with_period(text: str, word: str, start: int, end: int) -> tuple[str, int]:
    """A word followed by ``.`` keeps it when it is an abbreviation (``Mr.``, ``Inc.``, not
    at a line's end), an initial (``M. Smith``) or a line's number (``1. Michael``)."""
    after = text[end + 1 : end + 3]
    if word.isalpha() and word in ABBREVIATIONS:
        if after[:1] not in ("", "\n", "\r"):  # at a line's end: a full stop
            return word + ".", end + 1
    elif len(word) == 1 and word.isupper():
        if after[:1].isspace() and after[1:2].isupper():
            return word + ".", end + 1
    elif word.isdigit() and len(word) <= 3:
        before = text[:start].rstrip(" \t")
        if (not before or before[-1] in "\r\n") and (not after[:1] or after[:1].isspace()):
            return word + ".", end + 1
    return word, end


def split_sentences(text: str, tokens: list[Token] | None = None) -> list[list[Token]]:
    """The tokens of ``text`` grouped into sentences (see the module docstring)."""
    tokens = tokenize(text) if tokens is None else tokens
    sentences: list[list[Token]] = []
    current: list[Token] = []
    ended = False  # the current sentence has seen its final punctuation
    for token in tokens:
        if current:
            gap = text[current[-1].end : token.start]
            if "\n" in gap or "\r" in gap or len(current) >= MAX_TOKENS:
                breaks = True
            elif ended and token.text in _CLOSERS and not gap:
                breaks = False  # a closing quote or bracket stays with its sentence
            else:
                breaks = ended and bool(gap) and _can_start(token.text)
            if breaks:
                sentences.append(current)
                current, ended = [], False
        current.append(token)
        ended = token.text in _ENDS or (ended and token.text in _CLOSERS)
    if current:
        sentences.append(current)
    return sentences


def _can_start(word: str) -> bool:
    first = word[0]
    return first.isupper() or first.isdigit() or word in _OPENERS


# ---------------------------------------------------------------------------- detokenising

_NO_SPACE_BEFORE = frozenset({",", ".", ":", ";", "?", "!", "%", ")", "]", "}", "...", "''", "'"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "$", "``"})


def detokenize(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens joined back into text as a person would write them (``Berlin .`` ->
    ``Berlin.``; ``" quoted "`` -> ``"quoted"``; ``Germany 's`` -> ``Germany's``), with
    each token's ``(start, end)`` in that text. For turning tokenised corpora into raw
    text (benchmarks, tests); :func:`tokenize` cuts most such text back into the same
    tokens."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    quote_open = False
    previous = None
    for token in tokens:
        space = previous is not None
        if token == '"':
            if quote_open:
                space = False
            quote_open = not quote_open
        elif token in _NO_SPACE_BEFORE or re.fullmatch(_CLITIC, token):
            space = False
        if previous is not None and (
            previous in _NO_SPACE_AFTER or (previous == '"' and quote_open and token != '"')
        ):
            space = False
        if space:
            parts.append(" ")
            length += 1
        spans.append((length, length + len(token)))
        parts.append(token)
        length += len(token)
        previous = token
    return "".join(parts), spans
