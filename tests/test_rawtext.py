"""Raw text -> tokens and sentences with offsets, cut as CoNLL-2003 is tokenised."""

import random

import pytest

from nlp_lstm.data.rawtext import MAX_TOKENS, detokenize, split_sentences, tokenize


def words(text: str) -> list[str]:
    return [t.text for t in tokenize(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Peter Blackburn visited Berlin.", ["Peter", "Blackburn", "visited", "Berlin", "."]),
        ("Germany's EU isn't", ["Germany", "'s", "EU", "is", "n't"]),
        ("U.S. officials (A$5,000)", ["U.S.", "officials", "(", "A$", "5,000", ")"]),
        ("on 1996-08-30 won 6-4 at 3.5%", ["on", "1996-08-30", "won", "6-4", "at", "3.5", "%"]),
        ('he said "yes" -- really...', ["he", "said", '"', "yes", '"', "--", "really", "..."]),
        (
            "Dr. Smith of Acme Inc. and M. Johnson",
            ["Dr.", "Smith", "of", "Acme", "Inc.", "and", "M.", "Johnson"],
        ),  # fmt: skip
        ("O'Brien's one-day AT&T deal", ["O'Brien", "'s", "one-day", "AT&T", "deal"]),
        ("a 20-year-old's 61st", ["a", "20-year-old", "'s", "61st"]),
        ("1. Michael Johnson", ["1.", "Michael", "Johnson"]),
        ("mail jo@reuters.com.", ["mail", "jo@reuters.com", "."]),
        ("Mr.. Smith", ["Mr.", ".", "Smith"]),
    ],
)
def test_tokens_follow_the_corpus_conventions(text, expected):
    assert words(text) == expected


def test_sentences_end_at_final_punctuation_and_line_breaks():
    text = 'He left. "Why?" she asked. the end\nLONDON 1996-08-30\n\nMr. Smith met Dr. Jones.'
    sentences = [[t.text for t in s] for s in split_sentences(text)]
    assert sentences == [
        ["He", "left", "."],
        # no capital after "?" or ".": the sentence goes on
        ['"', "Why", "?", '"', "she", "asked", ".", "the", "end"],
        ["LONDON", "1996-08-30"],
        ["Mr.", "Smith", "met", "Dr.", "Jones", "."],
    ]
    assert len(split_sentences("word " * (MAX_TOKENS * 2 + 1))) == 3


ALPHABET = "aZé漢字ß0 9.,;:!?'\"()-–—/\\$%&@#…\t\n  \u00a0\u200bx\u0301"


@pytest.mark.parametrize("seed", range(30))
def test_tokens_are_slices_that_cover_every_non_space_char_once(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 300)))
    tokens = tokenize(text)
    covered = [False] * len(text)
    end = 0
    for token in tokens:
        assert text[token.start : token.end] == token.text and token.text
        assert token.start >= end  # in order, no overlap
        assert not any(c.isspace() for c in token.text)
        for i in range(token.start, token.end):
            covered[i] = True
        end = token.end
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    flat = [t for s in split_sentences(text, tokens) for t in s]
    assert flat == tokens


def test_detokenised_sentences_tokenise_back():
    sentences = [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        [
            "Germany",
            "'s",
            "representative",
            "said",
            '"',
            "we",
            "do",
            "n't",
            "support",
            "it",
            '"',
            ".",
        ],  # fmt: skip
        ["(", "Reuters", ")", "--", "shares", "rose", "3.5", "%", "to", "$", "1,000", "."],
    ]
    for tokens in sentences:
        text, spans = detokenize(tokens)
        assert [text[a:b] for a, b in spans] == tokens
        assert words(text) == tokens
    assert detokenize(sentences[1])[0] == "Germany's representative said \"we don't support it\"."
