"""Exported graphs (TorchScript, ONNX, int8) give the eager model's outputs."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.export import (
    ExportConfig,
    PaddedRNN,
    export_graph,
    graph_inputs,
    metadata_path,
    reversal_index,
)
from nlp_lstm.tasks import ner, sentiment
from nlp_lstm.tasks.words import word_split
from tests.cli_helpers import run_main

TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
SENTENCES = [
    ["Peter", "Blackburn", "flew", "to", "Berlin", "on", "Monday", "."],
    ["EU", "rejects", "German", "call"],
    ["Hi"],
    ["the", "Lake", "District", "is", "in", "northern", "England", ",", "says", "Peter"],
]


def test_reversal_index_reverses_within_length_and_is_its_own_inverse():
    index = reversal_index(torch.tensor([4, 2, 1]), 5)
    assert index.tolist() == [[3, 2, 1, 0, 4], [1, 0, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert torch.equal(index.gather(1, index), torch.arange(5).expand(3, 5))


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_padded_rnn_equals_the_packed_rnn(kind, bidirectional, layers):
    torch.manual_seed(0)
    rnn = kind(5, 4, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    inputs, lengths = torch.randn(4, 7, 5), torch.tensor([7, 3, 1, 5])
    packed, hidden = rnn(pack_padded_sequence(inputs, lengths, True, enforce_sorted=False))
    states, _ = pad_packed_sequence(packed, batch_first=True, total_length=7)
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    final = torch.cat(list(h_n[-(2 if bidirectional else 1) :]), dim=-1)
    for padded in (PaddedRNN(rnn), torch.jit.script(PaddedRNN(rnn))):
        got_states, got_final = padded(inputs, lengths)
        torch.testing.assert_close(got_states, states)
        torch.testing.assert_close(got_final, final)


def toy_tagger(char: str, crf: bool = True) -> tuple[ner.BiLSTMCRFTagger, Vocab, Vocab]:
    torch.manual_seed(1)
    words = Vocab(sorted({t for s in SENTENCES[:3] for t in s}))  # sentence 4 has unknowns
    chars = Vocab(sorted({c for s in SENTENCES for t in s for c in t}))
    config = ner.NERModelConfig(hidden_size=12, char=char, char_dim=6, char_hidden=5, crf=crf)
    model = ner.BiLSTMCRFTagger(
        config, random_rows(len(words), 8), EmbeddingsConfig(), len(chars), TAGS, "bioes"
    )
    with torch.no_grad():  # sharper scores than the initial ones, so paths vary
        model.head.projection.weight.mul_(8)
        if crf:
            model.head.crf.transitions.normal_()
    return model.eval(), words, chars


def eager_tags(model, words, chars, sentences) -> list[list[int]]:
    split = word_split(sentences, None, words, chars)
    batch = split.collate(list(range(len(sentences))))
    with torch.no_grad():
        paths = ner.predict(model, batch)
    out = [[] for _ in sentences]
    for i, path in zip(batch.indices.tolist(), paths, strict=True):
        out[i] = path
    return out


def graph_tags(outputs, sentences) -> list[list[int]]:
    return [[int(t) for t in row[: len(s)]] for row, s in zip(outputs, sentences, strict=True)]


@pytest.mark.parametrize("char,crf", [("cnn", True), ("lstm", True), ("none", False)])
def test_tagger_graph_scripted_and_onnx_give_the_eager_tags(tmp_path, char, crf):
    import onnxruntime

    model, words, chars = toy_tagger(char, crf)
    expected = eager_tags(model, words, chars, SENTENCES)
    inputs = graph_inputs(SENTENCES, words, chars)
    graph = ner.TaggerGraph(model).eval()
    assert graph_tags(graph(*inputs), SENTENCES) == expected
    example = graph_inputs(SENTENCES[1:3], words, chars)  # other shapes than scored
    axes = {"words": {0: "b", 1: "t"}, "chars": {0: "b", 1: "t", 2: "c"}, "lengths": {0: "b"}}
    for fmt in ("torchscript", "onnx"):
        path = tmp_path / f"tagger.{fmt}"
        export_graph(graph, example, axes, {"tags": {0: "b", 1: "t"}}, {"task": "ner"},
                     ExportConfig(format=fmt, path=str(path)))  # fmt: skip
        if fmt == "torchscript":
            got = torch.jit.load(str(path))(*inputs)
        else:
            session = onnxruntime.InferenceSession(str(path))
            feed = dict(
                zip(["words", "chars", "lengths"], (t.numpy() for t in inputs), strict=True)
            )
            names = [i.name for i in session.get_inputs()]
            (got,) = session.run(None, {name: feed[name] for name in names})
        assert graph_tags(got, SENTENCES) == expected, fmt
        meta = json.loads(metadata_path(path).read_text())
        read = ["words", "lengths"] if char == "none" and fmt == "onnx" else list(axes)
        assert meta["inputs"] == read and meta["format"] == fmt


@pytest.mark.parametrize(
    "char,static", [("none", False), ("cnn", False), ("lstm", False), ("cnn", True)]
)
def test_classifier_graph_scripted_and_onnx_give_the_eager_probabilities(tmp_path, char, static):
    import onnxruntime

    torch.manual_seed(2)
    words = Vocab(sorted({t for s in SENTENCES for t in s}))
    chars = Vocab(sorted({c for s in SENTENCES for t in s for c in t})) if char != "none" else None
    config = sentiment.SentimentModelConfig(
        hidden_size=6, num_layers=2, char=char, char_dim=4, char_hidden=5
    )
    embeddings = EmbeddingsConfig(static_channel=static)
    model = sentiment.AttentionClassifier(
        config, random_rows(len(words), 8), embeddings, 3, len(chars) if chars else 0
    ).eval()
    split = word_split(SENTENCES, None, words, chars=chars, pad_multiple=8)
    batch = split.collate(list(range(len(SENTENCES))))
    with torch.no_grad():
        logits, attention = model.scores(batch)
    order = batch.indices.argsort()
    steps = max(len(s) for s in SENTENCES)
    probabilities, attention = torch.softmax(logits, -1)[order], attention[order][:, :steps]
    word_ids, char_ids, lengths = graph_inputs(SENTENCES, words, chars)
    inputs = (word_ids, lengths) if chars is None else (word_ids, lengths, char_ids)
    example = tuple(graph_inputs(SENTENCES[:2], words, chars))  # other shapes than scored
    example = example[::2] if chars is None else (example[0], example[2], example[1])
    graph = sentiment.classifier_graph(model).eval()
    axes = {"words": {0: "b", 1: "t"}, "lengths": {0: "b"}}
    if chars is not None:
        axes["chars"] = {0: "b", 1: "t", 2: "c"}
    outputs = {"probabilities": {0: "b"}, "weights": {0: "b", 1: "t"}}
    for fmt in ("torchscript", "onnx"):
        path = tmp_path / f"classifier.{fmt}"
        export_graph(graph, example, axes, outputs, {}, ExportConfig(format=fmt, path=str(path)))
        if fmt == "torchscript":
            got = torch.jit.load(str(path))(*inputs)
        else:
            session = onnxruntime.InferenceSession(str(path))
            got = session.run(None, {n: t.numpy() for n, t in zip(axes, inputs, strict=True)})
        torch.testing.assert_close(torch.as_tensor(got[0]), probabilities, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.as_tensor(got[1]), attention, atol=1e-5, rtol=1e-4)
        assert json.loads(metadata_path(path).read_text())["inputs"] == list(axes)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_int8_dynamic_graphs_load_run_and_are_smaller(tmp_path, fmt):
    import onnxruntime

    torch.manual_seed(3)
    model, words, chars = toy_tagger("cnn")
    size = model.embedder.output_size  # layers big enough for int8 to shrink the file
    model.encoder.rnn = nn.LSTM(size, 96, batch_first=True, bidirectional=True)
    model.head.projection = nn.Linear(192, len(TAGS))
    graph = ner.TaggerGraph(model).eval()
    inputs = graph_inputs(SENTENCES, words, chars)
    axes = {"words": {0: "b", 1: "t"}, "chars": {0: "b", 1: "t", 2: "c"}, "lengths": {0: "b"}}
    sizes = {}
    for quantize in ("none", "dynamic"):
        path = tmp_path / f"{quantize}.{fmt}"
        config = ExportConfig(format=fmt, path=str(path), quantize=quantize)
        export_graph(graph, inputs, axes, {"tags": {0: "b", 1: "t"}}, {}, config)
        sizes[quantize] = path.stat().st_size
        if fmt == "torchscript":
            loaded = torch.jit.load(str(path))
            got = loaded(*inputs)
            if quantize == "dynamic":
                kinds = {m.original_name for m in loaded.modules()}
                assert {"PackedParameter", "LinearPackedParams"} <= kinds, kinds  # int8 weights
        else:
            feed = dict(
                zip(["words", "chars", "lengths"], (t.numpy() for t in inputs), strict=True)
            )
            (got,) = onnxruntime.InferenceSession(str(path)).run(None, feed)
        tags = torch.as_tensor(got)
        assert tags.shape == inputs[0].shape and tags.dtype == torch.long
        lengths = inputs[2].unsqueeze(1)
        assert torch.all(tags[torch.arange(tags.shape[1]) >= lengths] == 0)
        assert torch.all((tags >= 0) & (tags < len(TAGS)))
    assert sizes["dynamic"] < 0.6 * sizes["none"]


def test_cli_export_is_self_sufficient_and_matches_predict(tmp_path):
    """mode=export on a trained checkpoint: loading the graph with plain torch and feeding
    it inputs built from the JSON alone gives mode=predict's tags."""
    from tests.conftest import toy_ner_sentences, write_conll

    files = {s: write_conll(tmp_path / f"{s}.txt", toy_ner_sentences(n, seed=k))
             for s, n, k in (("train", 120, 1), ("dev", 30, 2))}  # fmt: skip
    run = tmp_path / "run"
    code, _, err = run_main(
        "task=ner", f"data.train={files['train']}", f"data.dev={files['dev']}", "data.test=null",
        "debug=tiny", "trainer.max_epochs=2", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert code == 0, err[-2000:]
    ckpt = run / "checkpoints" / "best.pt"
    graph_path = tmp_path / "out" / "tagger.pt"
    code, out, err = run_main(
        "task=ner", "mode=export", f"ckpt={ckpt}", f"export.path={graph_path}"
    )
    assert code == 0, err[-2000:]
    described = json.loads(out.strip().splitlines()[-1])
    assert described["path"] == str(graph_path) and described["bytes"] == graph_path.stat().st_size

    text = "Peter visited Berlin\nqqq zzz unknown words here\n"
    code, out, err = run_main("task=ner", "mode=predict", f"ckpt={ckpt}", stdin=text)
    assert code == 0, err[-2000:]
    predicted = [
        [line.split("\t")[1] for line in block.splitlines()] for block in out.strip().split("\n\n")
    ]

    meta = json.loads(metadata_path(graph_path).read_text())
    word_ids = {w: i for i, w in enumerate(meta["words"])}
    char_ids = {c: i for i, c in enumerate(meta["chars"])}
    sentences = [line.split() for line in text.splitlines()]
    width, chars = max(map(len, sentences)), meta["max_word_chars"]
    words = torch.zeros(len(sentences), width, dtype=torch.long)
    char_tensor = torch.zeros(len(sentences), width, chars, dtype=torch.long)
    for b, sentence in enumerate(sentences):
        for t, token in enumerate(sentence):
            words[b, t] = word_ids.get(token, meta["unk_id"])
            for c, ch in enumerate(token[:chars]):
                char_tensor[b, t, c] = char_ids.get(ch, meta["unk_id"])
    lengths = torch.tensor([len(s) for s in sentences])
    tags = torch.jit.load(str(graph_path))(words, char_tensor, lengths)
    from nlp_lstm.data.conll import to_iob2

    exported = [to_iob2([meta["tags"][i] for i in row[: len(s)].tolist()], meta["tag_scheme"])
                for row, s in zip(tags, sentences, strict=True)]  # fmt: skip
    assert exported == predicted
    # the same through ONNX with numpy and onnxruntime only (scripts/tag_onnx.py)
    import subprocess
    import sys

    from tests.cli_helpers import REPO

    onnx_path = tmp_path / "out" / "tagger.onnx"
    code, _, err = run_main("task=ner", "mode=export", f"ckpt={ckpt}", "export.format=onnx",
                            f"export.path={onnx_path}")  # fmt: skip
    assert code == 0, err[-2000:]
    served = subprocess.run([sys.executable, str(REPO / "scripts/tag_onnx.py"), str(onnx_path)],
                            input=text, capture_output=True, text=True, check=True)  # fmt: skip
    blocks = served.stdout.strip().split("\n\n")
    tags = [[line.split("\t")[1] for line in block.splitlines()] for block in blocks]
    assert [to_iob2(t, meta["tag_scheme"]) for t in tags] == predicted


def test_export_needs_a_path_and_a_known_format(tmp_path):
    code, out, err = run_main("task=ner", "mode=export", "ckpt=x.pt")
    assert code == 2 and "export.path" in err and not out
    code, out, err = run_main("task=ner", "mode=export", "ckpt=x.pt", "export.format=tflite",
                              f"export.path={tmp_path / 'a'}")  # fmt: skip
    assert code == 2 and err.count("error:") == 1 and "tflite" in err
    assert not (tmp_path / "a").exists()


def onnx_runner(path):
    """``run(*tensors) -> outputs`` of an ONNX file, inputs given in the graph's order."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    return lambda *xs: session.run(None, {n: x.numpy() for n, x in zip(names, xs, strict=True)})


def greedy_with_graphs(encode, step, source, lengths, max_len: int) -> list[list[int]]:
    """Greedy decoding driven by an exported encoder and decoder step, with the constraints
    of nlp_lstm.modules.search (no pad/BOS, no EOS first, EOS at the length cap)."""
    from nlp_lstm.tasks.translate import IDS

    states, keys, mask, h, c, feed = (torch.as_tensor(x) for x in encode(source, lengths))
    tokens = torch.full((source.shape[0],), IDS.bos)
    outputs, done = [[] for _ in range(source.shape[0])], [False] * source.shape[0]
    for position in range(max_len + 1):
        log_probs, h, c, feed, _ = (
            torch.as_tensor(x) for x in step(tokens, h, c, feed, states, keys, mask)
        )
        log_probs[:, [IDS.pad, IDS.bos]] = float("-inf")
        if position == 0:
            log_probs[:, IDS.eos] = float("-inf")
        if position == max_len:
            log_probs[:, :] = float("-inf")
            log_probs[:, IDS.eos] = 0.0
        tokens = log_probs.argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            if not done[row]:
                done[row] = token == IDS.eos
                if not done[row]:
                    outputs[row].append(token)
    return outputs


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot"])
def test_translate_encoder_and_step_graphs_decode_as_the_model_does(tmp_path, attention):

    from nlp_lstm.data.batching import lengths_mask, pad
    from nlp_lstm.modules.search import greedy_search
    from nlp_lstm.tasks import translate

    torch.manual_seed(4)
    config = translate.TranslateModelConfig(
        embedding_dim=8, hidden_size=12, num_layers=2, attention=attention, tie_embeddings=True
    )
    model = translate.Seq2Seq(config, 30, 25).eval()
    with torch.no_grad():
        for param in model.parameters():  # larger than the initial weights: outputs vary
            param.normal_(0, 0.8)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17], [20]]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    lengths = torch.tensor([len(rows[i]) for i in order])
    source = pad([rows[i] for i in order])
    batch = translate.PairBatch(
        source, lengths_mask(lengths, source.shape[1]), lengths, torch.tensor(order)
    )
    max_len = 7
    with torch.no_grad():
        memory, state = model.encode(batch)
        expected, _ = greedy_search(
            model.decoder, memory, state, torch.full((4,), max_len), translate.IDS
        )
        encoder, stepper = translate.EncoderGraph(model), translate.StepGraph(model)
        states, _, _, h, c, _ = encoder(source, lengths)
        torch.testing.assert_close(states, memory.states)
        torch.testing.assert_close((h, c), state.hidden)
        assert greedy_with_graphs(encoder, stepper, source, lengths, max_len) == expected
    assert len({tuple(e) for e in expected}) > 1  # the test is not vacuous
    for fmt in ("torchscript", "onnx"):
        path = tmp_path / f"mt.{fmt}"
        translate.export_graphs(model, ExportConfig(format=fmt, path=str(path)), {})
        step_file = translate.step_path(path)
        if fmt == "torchscript":
            encode, step = torch.jit.load(str(path)), torch.jit.load(str(step_file))
        else:
            encode, step = onnx_runner(path), onnx_runner(step_file)
        assert greedy_with_graphs(encode, step, source, lengths, max_len) == expected, fmt
        assert json.loads(metadata_path(path).read_text())["part"] == "encoder"
