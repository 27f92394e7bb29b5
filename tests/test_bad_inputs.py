"""Every bad input or misuse ends as one line on stderr and exit code 2: no traceback, the
file and line named where there is one, and no run artefact written or changed.

The CLI runs in this process (``nlp_lstm.__main__.main`` with a patched argv), which takes
a fraction of a second a case instead of a fresh interpreter's seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_main
from tests.conftest import toy_ner_sentences, write_conll

TINY_NER = ["debug=tiny"]  # conf/debug/tiny.yaml: a tiny model for one short epoch


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad files of every reader, and one trained NER checkpoint."""
    root = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {"root": root}
    f["train"] = write_conll(root / "train.txt", toy_ner_sentences(40, seed=1))
    f["dev"] = write_conll(root / "dev.txt", toy_ner_sentences(10, seed=2))

    def write(name: str, text: str | bytes) -> None:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        f[name] = path

    write("conll_columns.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    write("conll_one_column.txt", "EU\nrejects\n")
    write("conll_tag.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP X-BAD\n")
    write("conll_latin1.txt", "M\u00fcnchen NNP B-NP B-LOC\n".encode("latin-1"))
    write("empty.txt", "")
    write("blank.txt", "\n\n  \n")
    write("conll_long_line.txt", "EU NNP B-NP B-ORG\n" + "x" * 2_000_000 + " y\n")
    write("sst_train.tsv", "label\tsentence\n1\ta fine film\n0\tso dull\n1\tgreat\n0\tbad\n")
    write("sst_columns.tsv", "label\tsentence\n1\tgood\n0\tbad\textra\n")
    write("sst_no_label.tsv", "label\tsentence\n1\tgood\n\tno label here\n")
    write("sst_empty_text.tsv", "label\tsentence\n1\tgood\n0\t   \n")
    write("sst_header.tsv", "stars\ttext\n1\tgood\n")
    write("sst_unknown_label.tsv", "label\tsentence\n1\tgood\n7\tbad\n")
    write("sst_one_label.tsv", "label\tsentence\n1\tgood\n1\tfine\n")
    write("sst_bad.jsonl", '{"sentence": "ok", "label": 1}\n{"sentence": "oops", \n')
    write("sst_list.jsonl", '{"sentence": "ok", "label": 1}\n[1, 2]\n')
    write("sst_field.jsonl", '{"sentence": "ok", "label": 1}\n{"text": "no", "label": 0}\n')
    write("sst.parquet", "not a table")
    write("text_latin1.txt", b"fine line\nbroken \xff byte\n")
    write("text.txt", "to be, or not to be: that is the question.\n" * 20)
    write("text_one_char.txt", "x")
    write("mt_good.de", "Ein Hund.\nEine Katze.\n")
    write("mt_good.en", "A dog.\nA cat.\n")
    write("mt_empty.de", "Ein Hund.\nEine Katze.\n")
    write("mt_empty.en", "A dog.\n  \n")
    write("mt_count.de", "Ein Hund.\nEine Katze.\nRot.\n")
    write("mt_count.en", "A dog.\nA cat.\n")
    write("mt_half.de", "Ein Hund.\n")
    header = "date,a,b\n"
    good = "".join(f"2020-01-01 {h:02d}:00:00,{h}.5,{h * 2}\n" for h in range(24))
    write("series_nan.csv", header + good.replace("5.5,10", "5.5,abc"))
    write("series_empty_cell.csv", header + good.replace("7.5,14", "7.5,"))
    write("series_time.csv", header + good.replace("2020-01-01 09:00", "2020-01-01 03:00"))
    write("series_cells.csv", header + good.replace("4.5,8", "4.5,8,9"))
    write("series_short.csv", header + good)
    write("series_column.csv", "date,x\n" + "".join(f"2020-01-{d:02d},1\n" for d in range(1, 29)))
    code, _, err = run_main(
        "task=ner", f"data.train={f['train']}", f"data.dev={f['dev']}", "data.test=null",
        f"hydra.run.dir={root / 'ner_run'}", *TINY_NER,
    )  # fmt: skip
    assert code == 0, err[-2000:]
    f["ckpt"] = root / "ner_run" / "checkpoints" / "best.pt"
    return f


def ner(f, **data) -> list[str]:
    data = {"train": f["train"], "dev": f["dev"], "test": "null", **data}
    return ["task=ner", *(f"data.{k}={v}" for k, v in data.items()), *TINY_NER]


def sentiment(f, **data) -> list[str]:
    data = {"train": f["sst_train.tsv"], "dev": f["sst_train.tsv"], "test": "null", **data}
    return [
        "task=sentiment", *(f"data.{k}={v}" for k, v in data.items()), "debug=tiny",
    ]  # fmt: skip


def translate(f, **data) -> list[str]:
    data = {"train": f["root"] / "mt_good", "dev": f["root"] / "mt_good", **data}
    return [
        "task=translate", *(f"data.{k}={v}" for k, v in data.items()), "data.tokenizer=word",
        "debug=tiny",
    ]  # fmt: skip


def forecast(f, name: str, *extra: str) -> list[str]:
    return [
        "task=forecast", f"data.path={f[name]}", "data.look_back=4", "data.horizon=2",
        "model.segment=2", "debug=tiny", *extra,
    ]  # fmt: skip


# (id, arguments given the files, [file key or None, line or None], fragment of the message)
CASES = [
    # CoNLL reader (ner)
    ("conll wrong column count", lambda f: ner(f, train=f["conll_columns.txt"]), ("conll_columns.txt", 2), "columns"),
    ("conll one column", lambda f: ner(f, train=f["conll_one_column.txt"]), ("conll_one_column.txt", 1), "at least 2 columns"),
    ("conll unknown tag form", lambda f: ner(f, dev=f["conll_tag.txt"]), ("conll_tag.txt", 2), "unknown tag form"),
    ("conll not UTF-8", lambda f: ner(f, dev=f["conll_latin1.txt"]), ("conll_latin1.txt", 1), "UTF-8"),
    ("conll empty file", lambda f: ner(f, train=f["empty.txt"]), ("empty.txt", None), "empty"),
    ("conll blank lines only", lambda f: ner(f, train=f["blank.txt"]), ("blank.txt", None), "empty"),
    ("conll a directory", lambda f: ner(f, train=f["root"]), ("root", None), "is a directory"),
    ("conll missing file", lambda f: ner(f, train=f["root"] / "none.txt"), (None, None), "not found"),
    ("conll 2 MB line quoted short", lambda f: ner(f, train=f["conll_long_line.txt"]), ("conll_long_line.txt", 2), "..."),
    # labelled tables (sentiment)
    ("tsv wrong column count", lambda f: sentiment(f, train=f["sst_columns.tsv"]), ("sst_columns.tsv", 3), "expected 2 columns"),
    ("tsv missing label", lambda f: sentiment(f, train=f["sst_no_label.tsv"]), ("sst_no_label.tsv", 3), "missing label"),
    ("tsv empty text", lambda f: sentiment(f, dev=f["sst_empty_text.tsv"]), ("sst_empty_text.tsv", 3), "empty text"),
    ("tsv header without the field", lambda f: sentiment(f, train=f["sst_header.tsv"]), ("sst_header.tsv", 1), "no column 'sentence'"),
    ("tsv unknown dev label", lambda f: sentiment(f, dev=f["sst_unknown_label.tsv"]), ("sst_unknown_label.tsv", 3), "unknown label"),
    ("tsv a single label", lambda f: sentiment(f, train=f["sst_one_label.tsv"]), ("sst_one_label.tsv", None), "at least two labels"),
    ("jsonl bad JSON", lambda f: sentiment(f, dev=f["sst_bad.jsonl"]), ("sst_bad.jsonl", 2), "not valid JSON"),
    ("jsonl not an object", lambda f: sentiment(f, dev=f["sst_list.jsonl"]), ("sst_list.jsonl", 2), "JSON object"),
    ("jsonl missing field", lambda f: sentiment(f, dev=f["sst_field.jsonl"]), ("sst_field.jsonl", 2), "no field 'sentence'"),
    ("table unknown format", lambda f: sentiment(f, train=f["sst.parquet"]), ("sst.parquet", None), "unknown table format"),
    ("table a directory", lambda f: sentiment(f, train=f["root"]), ("root", None), "is a directory"),
    # plain text (charlm)
    ("text not UTF-8", lambda f: ["task=charlm", f"data.train={f['text_latin1.txt']}"], ("text_latin1.txt", 2), "not valid UTF-8"),
    ("text empty", lambda f: ["task=charlm", f"data.train={f['empty.txt']}"], ("empty.txt", None), "empty"),
    ("text dev too short to score", lambda f: ["task=charlm", f"data.train={f['text.txt']}", f"data.dev={f['text_one_char.txt']}"], ("text_one_char.txt", None), "two characters"),
    ("text too short to split", lambda f: ["task=charlm", f"data.train={f['text_one_char.txt']}"], ("text_one_char.txt", None), "too short"),
    # parallel text (translate)
    ("parallel empty line", lambda f: translate(f, dev=f["root"] / "mt_empty"), ("mt_empty.en", 2), "empty line"),
    ("parallel line counts differ", lambda f: translate(f, train=f["root"] / "mt_count"), ("mt_count.de", None), "has 3 lines but"),
    ("parallel side missing", lambda f: translate(f, dev=f["root"] / "mt_half"), (None, None), "(en side) not found"),
    ("parallel prefix not a file", lambda f: translate(f, dev=f["root"] / "mt_good.de"), (None, None), "not found"),
    ("beam size 0", lambda f: [*translate(f), "decode.beam_size=0"], (None, None), "decode.beam_size"),
    ("odd translate hidden size", lambda f: [*translate(f), "model.hidden_size=7"], (None, None), "model.hidden_size"),
    # numeric series (forecast)
    ("series not a number", lambda f: forecast(f, "series_nan.csv"), ("series_nan.csv", 7), "not a number"),
    ("series empty cell", lambda f: forecast(f, "series_empty_cell.csv"), ("series_empty_cell.csv", 9), "empty cell"),
    ("series time not increasing", lambda f: forecast(f, "series_time.csv"), ("series_time.csv", 11), "does not come after"),
    ("series cell count", lambda f: forecast(f, "series_cells.csv"), ("series_cells.csv", 6), "cells"),
    ("series split too short", lambda f: forecast(f, "series_short.csv", "data.look_back=8", "data.horizon=6", "model.segment=4"), ("series_short.csv", None), "shorter than"),
    ("series unknown target", lambda f: forecast(f, "series_column.csv", "data.targets=OT"), ("series_column.csv", 1), "no column 'OT'"),
    ("series no time column", lambda f: forecast(f, "series_short.csv", "data.time_column=when"), ("series_short.csv", 1), "no time column"),
    # configuration
    ("negative lr", lambda f: [*ner(f), "trainer.lr=-1"], (None, None), "trainer.lr"),
    ("batch size 0", lambda f: [*ner(f), "trainer.batch_size=0"], (None, None), "trainer.batch_size"),
    ("eval batch size 0", lambda f: [*ner(f), "trainer.eval_batch_size=0"], (None, None), "trainer.eval_batch_size"),
    ("max epochs 0", lambda f: [*ner(f), "trainer.max_epochs=0"], (None, None), "trainer.max_epochs"),
    ("hidden size 0", lambda f: [*ner(f), "model.hidden_size=0"], (None, None), "model.hidden_size"),
    ("dropout 2", lambda f: [*ner(f), "model.dropout=2"], (None, None), "model.dropout"),
    ("not a number", lambda f: [*ner(f), "trainer.lr=fast"], (None, None), "trainer.lr"),
    ("bad choice", lambda f: [*ner(f), "model.cell=rnn"], (None, None), "model.cell"),
    ("pad multiple 0", lambda f: [*ner(f), "data.pad_multiple=0"], (None, None), "data.pad_multiple"),
    ("sentiment pad multiple 0", lambda f: [*sentiment(f), "data.pad_multiple=0"], (None, None), "data.pad_multiple"),
    ("sentiment char encoder", lambda f: [*sentiment(f), "model.char=gru"], (None, None), "model.char"),
    ("unknown key", lambda f: [*ner(f), "trainer.no_such_key=1"], (None, None), "unknown key trainer.no_such_key"),
    ("unknown key added with +", lambda f: [*ner(f), "+model.x=1"], (None, None), "unknown key model.x"),
    ("unknown group option", lambda f: [*ner(f), "model=nope"], (None, None), "model/nope"),
    ("unknown task", lambda f: ["task=translation"], (None, None), "unknown task 'translation'"),
    ("unknown mode", lambda f: ["task=ner", "mode=dance"], (None, None), "no mode 'dance' (modes: train, test, predict, export, serve, inspect)"),
    ("mode of another task", lambda f: ["task=charlm", "mode=export"], (None, None), "no mode 'export'"),
    ("export without a path", lambda f: ["task=ner", "mode=export", f"ckpt={f['text.txt']}"], (None, None), "export.path"),
    ("export path a folder", lambda f: ["task=ner", "mode=export", f"ckpt={f['text.txt']}", f"export.path={f['dev'].parent}"], (None, None), "is a directory"),
    ("monitor of another task", lambda f: [*ner(f), "task.monitor=bpc"], (None, None), "task.monitor"),
    ("static swap without the static channel", lambda f: [*sentiment(f), "embeddings.static_channel=false", "embeddings.static_swap=0.2"], (None, None), "embeddings.static_channel=true"),
    ("static swap of 1", lambda f: [*sentiment(f), "embeddings.static_channel=true", "embeddings.static_swap=1"], (None, None), "embeddings.static_swap"),
    ("embeddings file without path", lambda f: [*ner(f), "embeddings=file"], (None, None), "embeddings.path"),
    ("embeddings file missing", lambda f: [*ner(f), "embeddings=file", "embeddings.path=/no/vectors.txt"], (None, None), "not found"),
    ("ddp without torchrun", lambda f: [*ner(f), "trainer=ddp"], (None, None), "torchrun"),
    # checkpoints and modes
    ("test without ckpt", lambda f: ["task=ner", "mode=test", f"data.test={f['dev']}"], (None, None), "needs ckpt"),
    ("ckpt missing", lambda f: ["task=ner", "mode=test", "ckpt=/no/best.pt", f"data.test={f['dev']}"], (None, None), "checkpoint not found"),
    ("ckpt not a checkpoint", lambda f: ["task=ner", "mode=test", f"ckpt={f['text.txt']}", f"data.test={f['dev']}"], (None, None), "not a readable"),
    ("ckpt of another task", lambda f: ["task=sentiment", "mode=test", f"ckpt={f['ckpt']}", f"data.test={f['sst_train.tsv']}"], (None, None), "not 'sentiment'"),
    ("test file malformed", lambda f: ["task=ner", "mode=test", f"ckpt={f['ckpt']}", f"data.test={f['conll_tag.txt']}"], ("conll_tag.txt", 2), "unknown tag form"),
    ("output a directory", lambda f: ["task=ner", "mode=predict", f"ckpt={f['ckpt']}", f"input={f['dev']}", f"output={f['root']}"], (None, None), "is a directory"),
    ("input missing", lambda f: ["task=ner", "mode=predict", f"ckpt={f['ckpt']}", "input=/no/input.txt"], (None, None), "not found"),
    ("input format unknown", lambda f: ["task=ner", "mode=predict", f"ckpt={f['ckpt']}", f"input={f['dev']}", "input_format=xml"], (None, None), "input_format"),
]  # fmt: skip


@pytest.mark.parametrize("args, where, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, args, where, fragment):
    run = tmp_path / "run"
    code, stdout, stderr = run_main(*args(files), f"hydra.run.dir={run}")
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    message = errors[0]
    assert fragment in message, message
    assert len(message) < 400, message[:500]
    name, line = where
    if name is not None:
        place = f"{files[name]}:{line}:" if line else f"{files[name]}"
        assert place in message, message
    assert stdout == ""  # no figure printed
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


def test_suite_covers_every_reader_and_forty_cases():
    kinds = {c[0].split()[0] for c in CASES}
    assert len(CASES) >= 40 and {"conll", "tsv", "jsonl", "text", "series"} <= kinds


def test_a_run_folder_with_checkpoints_is_never_overwritten(files, tmp_path):
    run = tmp_path / "run"
    assert run_main(*ner(files), f"hydra.run.dir={run}")[0] == 0
    best = (run / "checkpoints" / "best.pt").read_bytes()
    config = (run / "config.yaml").read_text()
    code, _, stderr = run_main(*ner(files), "trainer.seed=3", f"hydra.run.dir={run}")
    assert code == 2 and "trainer.resume=auto" in stderr and "trainer.overwrite=true" in stderr
    assert (run / "checkpoints" / "best.pt").read_bytes() == best
    assert (run / "config.yaml").read_text() == config
    assert "already holds checkpoints" in (run / "run.log").read_text()  # the reason is logged
    code, _, stderr = run_main(
        *ner(files), "trainer.seed=3", "trainer.overwrite=true", f"hydra.run.dir={run}"
    )
    assert code == 0, stderr[-2000:]
    assert "seed: 3" in (run / "config.yaml").read_text()


def test_test_and_predict_leave_no_run_folder_unless_asked(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_main(
        "task=ner", "mode=test", f"ckpt={files['ckpt']}", f"data.test={files['dev']}"
    )
    assert code == 0 and "f1" in json.loads(stdout.splitlines()[-1])
    code, stdout, _ = run_main(
        "task=ner", "mode=predict", f"ckpt={files['ckpt']}", stdin="in Rome .\n"
    )
    assert code == 0 and stdout.startswith("in\t")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()


def test_byte_order_marks_inside_files_are_not_data(files, tmp_path):
    from nlp_lstm.data.conll import read_conll
    from nlp_lstm.data.tables import read_labelled

    conll = tmp_path / "two.txt"
    conll.write_bytes(files["train"].read_bytes() + b"\xef\xbb\xbf" + files["dev"].read_bytes())
    tokens = {t for s in read_conll(conll) for t in s.tokens}
    assert not any("\ufeff" in t for t in tokens) and "-DOCSTART-" not in tokens
    table = tmp_path / "two.tsv"
    body = files["sst_train.tsv"].read_text().split("\n", 1)[1]
    table.write_text(files["sst_train.tsv"].read_text() + "\ufeff" + body)
    texts = read_labelled(table, "sentence", "label")
    assert set(texts.labels) == {"0", "1"} and not any(
        "\ufeff" in t for s in texts.tokens for t in s
    )


def test_limited_evaluation_reports_what_it_scored(files, tmp_path):
    """``trainer.limit_eval_batches`` shortens scoring only with the figure saying so (its
    supports count the scored sentences' entities); it cuts evaluation only: predict still
    writes every sentence."""
    args = ["task=ner", f"ckpt={files['ckpt']}", "trainer.eval_batch_size=4"]

    def support(*extra: str) -> int:
        code, stdout, stderr = run_main(*args, *extra, "mode=test", f"data.test={files['dev']}")
        assert code == 0, stderr[-2000:]
        scores = json.loads(stdout.splitlines()[-1])
        return sum(row["support"] for row in scores["per_type"].values())

    assert 0 < support("trainer.limit_eval_batches=1") < support()  # 4 of the 10 sentences
    code, stdout, stderr = run_main(
        *args, "trainer.limit_eval_batches=1", "mode=predict", f"input={files['dev']}",
        "input_format=conll",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert stdout.strip("\n").count("\n\n") == 9  # all ten sentences, a blank line between


# ---------------------------------------------------------------------------- configs built in Python


def config_classes() -> list[type]:
    """Every config dataclass: the tasks' sections and the shared ones."""
    from nlp_lstm.config import task_module, task_names
    from nlp_lstm.data.vectors import EmbeddingsConfig
    from nlp_lstm.export import ExportConfig
    from nlp_lstm.tasks.common import TaskConfig
    from nlp_lstm.train.trainer import TrainerConfig

    tasks = [cls for name in task_names() for cls in task_module(name).SCHEMAS.values()]
    return [TrainerConfig, EmbeddingsConfig, ExportConfig, TaskConfig, *tasks]


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_every_config_checks_its_field_types(cls):
    # a config built in Python gets the CLI's one-line errors: each typed field refuses a
    # value of the wrong type, naming itself
    import dataclasses
    import types
    import typing

    from nlp_lstm.errors import ConfigError

    required = {f.name: "x" for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}  # fmt: skip
    cls(**required)  # the defaults pass
    hints = typing.get_type_hints(cls)

    def plain(hint) -> bool:  # a scalar type, a Literal, or a union of them with None
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return all(plain(a) for a in typing.get_args(hint) if a is not type(None))
        return hint in (int, float, bool, str) or typing.get_origin(hint) is typing.Literal

    checked = [f.name for f in dataclasses.fields(cls) if plain(hints[f.name])]
    assert checked, cls
    for name in checked:
        with pytest.raises(ConfigError, match=f"^{name} must be"):
            cls(**{**required, name: ["not", "a", "value"]})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: m["ner"].NERModelConfig(hidden_size=0), "hidden_size must be at least 1, got 0"),
        (lambda m: m["sentiment"].SentimentModelConfig(dropout=1.0), "dropout must be in [0, 1)"),
        (lambda m: m["sentiment"].SentimentDataConfig(pad_multiple=0), "pad_multiple must be at least 1"),
        (lambda m: m["charlm"].CharLMDataConfig(seq_len=0), "seq_len must be at least 1"),
        (lambda m: m["charlm"].CharLMModelConfig(tie_weights=True), "tie_weights needs embedding_dim == hidden_size"),
        (lambda m: m["charlm"].SampleConfig(top_p=0.0), "top_p must be in (0, 1]"),
        (lambda m: m["translate"].TranslateModelConfig(hidden_size=7), "hidden_size must be even"),
        (lambda m: m["translate"].DecodeConfig(beam_size=0), "beam_size must be at least 1"),
        (lambda m: m["forecast"].ForecastModelConfig(head="segments", channels="mixed"), "head=segments needs"),
        (lambda m: m["forecast"].ForecastDataConfig(horizon=0), "horizon must be at least 1"),
    ],
)  # fmt: skip
def test_configs_built_in_python_check_their_ranges(build, message):
    from nlp_lstm.config import task_module, task_names
    from nlp_lstm.errors import ConfigError

    modules = {name: task_module(name) for name in task_names()}
    with pytest.raises(ConfigError) as caught:
        build(modules)
    assert str(caught.value).startswith(message), caught.value
