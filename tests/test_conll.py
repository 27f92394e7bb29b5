import pytest

from nlp_lstm.data.conll import (
    allowed_transitions,
    convert_tags,
    detect_scheme,
    is_valid,
    looks_like_conll,
    read_conll,
    read_tokenized_text,
    to_iob2,
)
from nlp_lstm.errors import DataError


def test_reads_sentences_skipping_docstart(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    )
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert [s.line for s in sentences] == [3, 7]


def test_tab_separated_two_column_files(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text("Paris\tS-LOC\nis\tO\r\n\nnice\tO\n")
    assert [s.tags for s in read_conll(path)] == [["S-LOC", "O"], ["O"]]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ O\n", 2, "expected 4 columns"),
        ("EU B-ORG\nrejects\n", 2, "expected 2 columns"),
        ("EU\n", 1, "at least 2 columns"),
        ("EU NNP B-NP B-ORG\nrejects VBZ B-VP X-PER\n", 2, "unknown tag form 'X-PER'"),
        ("EU NNP B-NP B_ORG\n", 1, "unknown tag form"),
        ("EU NNP B-NP ORG\n", 1, "unknown tag form"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == line
    assert info.value.path == str(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_empty_missing_and_bad_utf8_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_conll(empty)
    only_docstart = tmp_path / "doc.txt"
    only_docstart.write_text("-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(only_docstart)
    with pytest.raises(DataError, match="not found"):
        read_conll(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("EU B-ORG\nM\u00fcnchen B-LOC\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_conll(bad)
    assert info.value.line == 2 and "UTF-8" in info.value.message


def test_detect_and_convert_schemes():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "O", "I-ORG"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O", "B-ORG"]
    bioes = ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "O", "S-ORG"]
    assert detect_scheme([iob1]) == "iob1"
    assert detect_scheme([iob2]) == "iob2"
    assert detect_scheme([bioes]) == "bioes"
    assert to_iob2(iob1, "iob1") == iob2
    assert convert_tags(iob1, "iob1", "bioes") == bioes
    assert convert_tags(bioes, "bioes", "iob2") == iob2
    long = ["B-ORG", "I-ORG", "I-ORG", "O"]
    assert convert_tags(long, "iob2", "bioes") == ["B-ORG", "I-ORG", "E-ORG", "O"]
    assert convert_tags(convert_tags(long, "iob2", "bioes"), "bioes", "iob2") == long


def test_allowed_transitions():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    start, trans, end = allowed_transitions(tags, "iob2")
    index = {t: i for i, t in enumerate(tags)}
    assert not start[index["I-PER"]] and start[index["B-LOC"]]
    assert not trans[index["O"]][index["I-PER"]]
    assert not trans[index["B-PER"]][index["I-LOC"]]
    assert trans[index["B-PER"]][index["I-PER"]] and trans[index["I-PER"]][index["I-PER"]]
    assert all(end)
    assert is_valid(["B-PER", "I-PER", "O"], "iob2") and not is_valid(["O", "I-PER"], "iob2")
    assert is_valid(["B-PER", "E-PER", "S-LOC"], "bioes")
    assert not is_valid(["B-PER", "O"], "bioes") and not is_valid(["B-PER"], "bioes")


def test_raw_text_and_format_detection(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("Peter lives in Paris .\n\nHe likes it\n")
    assert [s.tokens for s in read_tokenized_text(raw)] == [
        ["Peter", "lives", "in", "Paris", "."],
        ["He", "likes", "it"],
    ]
    assert not looks_like_conll(raw)
    conll = tmp_path / "c.txt"
    conll.write_text("-DOCSTART- -X- -X- O\n\nPeter B-PER\nsaid O\n")
    assert looks_like_conll(conll)
