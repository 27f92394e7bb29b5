"""Translation: attention, search, tokenisers, a tiny model that learns, and the CLI."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import sacrebleu
import torch

from nlp_lstm.data.parallel import (
    ParallelText,
    decode,
    encode,
    load_tokenizer,
    train_tokenizer,
)
from nlp_lstm.data.vectors import EmbeddingsConfig
from nlp_lstm.errors import ConfigError
from nlp_lstm.modules.attention import GlobalAttention
from nlp_lstm.modules.search import SpecialIds, beam_search
from nlp_lstm.tasks.translate import (
    DecodeConfig,
    PairCollator,
    Seq2Seq,
    TranslateDataConfig,
    TranslateModelConfig,
    build_tokenizers,
    pretrained_matrix,
)
from tests.cli_helpers import last_json, run_main

IDS = SpecialIds()


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_attention_weights_sum_to_one_over_real_positions_and_zero_on_padding(kind):
    torch.manual_seed(0)
    attention = GlobalAttention(6, kind)
    memory = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    memory_padded = memory.masked_fill(~mask.unsqueeze(-1), 123.0)  # junk under padding
    context, weights = attention(
        torch.randn(3, 6), memory_padded, attention.keys(memory_padded), mask
    )
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    assert weights[mask].gt(0).all()
    # the context mixes real positions only: junk under padding changes nothing
    expected = torch.einsum("ns,nsh->nh", weights, memory.masked_fill(~mask.unsqueeze(-1), 0))
    assert torch.allclose(context, expected, atol=1e-6)


def tiny_model(vocab: int = 9, attention: str = "luong_general", seed: int = 0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    config = TranslateModelConfig(
        embedding_dim=kw.pop("embedding_dim", 8),
        hidden_size=kw.pop("hidden_size", 12),
        dropout=0.0,
        attention=attention,
        **kw,
    )
    return Seq2Seq(config, vocab, vocab).eval()


def source_batch(sentences: list[list[int]]):
    return PairCollator(sentences, None)(list(range(len(sentences))))


@pytest.mark.parametrize("attention", ["bahdanau", "luong_dot", "luong_general"])
def test_beam_size_one_gives_exactly_the_greedy_output(attention):
    model = tiny_model(vocab=30, attention=attention, seed=3, hidden_size=16, num_layers=2)
    rng = random.Random(0)
    sentences = [[rng.randrange(4, 30) for _ in range(rng.randint(1, 9))] for _ in range(17)]
    batch = source_batch(sentences)
    decode_cfg = DecodeConfig(max_len_a=1.0, max_len_b=3)
    with torch.no_grad():
        greedy, weights = model.translate(batch, decode_cfg, beam_size=1)
        memory, state = model.encode(batch)
        max_lens = (batch.source_lengths + 3).long()
        beam = beam_search(model.decoder, memory, state, max_lens, beam_size=1, ids=IDS)
    assert beam == greedy
    lengths = batch.source_lengths.tolist()
    for output, limit in zip(greedy, lengths, strict=True):
        assert 1 <= len(output) <= limit + 3
        assert not {IDS.pad, IDS.bos, IDS.eos} & set(output)
    assert weights.shape[:2] == (17, max(len(o) for o in greedy) + 1)


def sequence_log_prob(model: Seq2Seq, batch, row: int, tokens: list[int]) -> float:
    """log P(tokens + EOS | source row), step by step with the raw softmax."""
    memory, state = model.encode(batch)
    memory, state = memory.select(torch.tensor([row])), state.select(torch.tensor([row]))
    total, previous = 0.0, IDS.bos
    for token in [*tokens, IDS.eos]:
        attentional, state, _ = model.decoder.step(torch.tensor([previous]), state, memory)
        total += torch.log_softmax(model.decoder.logits(attentional), -1)[0, token].item()
        previous = token
    return total


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_a_wide_beam_finds_what_brute_force_enumeration_finds(length_penalty):
    """With more beams than hypotheses, beam search must return the best of all outputs up
    to the length limit (by score / length ** length_penalty), found by enumerating them."""
    model = tiny_model(vocab=7, seed=5)  # real tokens: unk, 4, 5, 6
    batch = source_batch([[4, 5, 6, 5], [6, 6], [5]])
    limit = 3
    with torch.no_grad():
        memory, state = model.encode(batch)
        found = beam_search(
            model.decoder, memory, state, torch.full((3,), limit), 100, length_penalty, IDS
        )
        for row in range(3):
            scored = {
                tokens: sequence_log_prob(model, batch, row, list(tokens))
                / (len(tokens) + 1) ** length_penalty
                for n in range(1, limit + 1)
                for tokens in itertools.product([IDS.unk, 4, 5, 6], repeat=n)
            }
            best = max(scored, key=scored.get)
            position = batch.indices.tolist().index(row)
            assert found[position] == list(best), (
                row,
                scored[tuple(found[position])],
                scored[best],
            )


def test_teacher_forcing_equals_stepwise_decoding():
    model = tiny_model(vocab=11, seed=2, input_feeding=True)
    batch = PairCollator([[4, 5, 6], [7, 8]], [[9, 10, 4, 5], [6]])([0, 1])
    with torch.no_grad():
        memory, state = model.encode(batch)
        logits, _ = model.decoder(batch.target_in, state, memory)
        for position in range(batch.target_in.shape[1]):
            attentional, state, _ = model.decoder.step(batch.target_in[:, position], state, memory)
            assert torch.allclose(model.decoder.logits(attentional), logits[:, position], atol=1e-6)


def test_loss_counts_target_tokens_and_gradients_reach_every_part():
    model = tiny_model(vocab=11, seed=2).train()
    batch = PairCollator([[4, 5, 6], [7, 8]], [[9, 10, 4, 5], [6]])([0, 1])
    loss, count = model(batch)
    assert int(count) == (4 + 1) + (1 + 1)  # tokens and EOS, no padding
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def random_sequences(rng: random.Random, count: int, low: int = 4, high: int = 12):
    return [[rng.randrange(low, high) for _ in range(rng.randint(3, 6))] for _ in range(count)]


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_a_tiny_model_learns_to_copy_and_to_reverse(task):
    rng = random.Random(1)
    flip = (lambda s: s[::-1]) if task == "reverse" else (lambda s: list(s))
    model = tiny_model(vocab=12, seed=0, embedding_dim=32, hidden_size=64).train()
    model.label_smoothing = 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=400)
    for _ in range(400):
        source = random_sequences(rng, 32)
        batch = PairCollator(source, [flip(s) for s in source])(list(range(32)))
        loss, count = model(batch)
        optimizer.zero_grad()
        (loss / count).backward()
        optimizer.step()
        schedule.step()
    held_out = random_sequences(random.Random(99), 50)
    batch = source_batch(held_out)
    with torch.no_grad():
        outputs, _ = model.eval().translate(batch, DecodeConfig(beam_size=5), beam_size=5)
        greedy, _ = model.translate(batch, DecodeConfig(), beam_size=1)
    expected = [flip(held_out[i]) for i in batch.indices.tolist()]
    assert outputs == expected
    assert greedy == expected


SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee, während (ein) Kind lacht!",
    "Eine Frau mit 3 Äpfeln steht am 20-Fuß-Zaun.",
    "„Hallo“, sagt der Junge; er ist 7 Jahre alt?",
]


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_tokenizer_round_trip_through_the_checkpoint_form(kind):
    tokenizer = train_tokenizer(SENTENCES * 3, kind, vocab_size=200)
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = encode(tokenizer, SENTENCES)
    assert decode(tokenizer, ids) == SENTENCES
    restored = load_tokenizer(tokenizer.to_str())
    assert encode(restored, SENTENCES) == ids and decode(restored, ids) == SENTENCES
    if kind == "bpe":  # new words split into known pieces and come back whole
        unseen = ["Ein Hund fährt im Zaun, lacht."]
        assert decode(tokenizer, encode(tokenizer, unseen)) == unseen


def test_joint_vocabulary_is_one_tokenizer_for_both_sides():
    pairs = ParallelText(SENTENCES, [s.upper() for s in SENTENCES], Path("x.de"), Path("x.en"))
    config = TranslateDataConfig(tokenizer="word", vocab_size=500)
    source, target = build_tokenizers(config, pairs)
    assert source is not target and "▁EIN" not in source.get_vocab()
    config.joint_vocab = True
    source, target = build_tokenizers(config, pairs)
    assert source is target and {"▁EIN", "▁Ein"} <= set(source.get_vocab())


def test_pretrained_rows_go_to_the_tokens_with_a_vector(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("mann 1 2 3 4\nfährt 5 6 7 8\n. 9 9 9 9\n")
    tokenizer = train_tokenizer(SENTENCES, "word", vocab_size=100)
    config = EmbeddingsConfig(name="t", format="glove", path=str(vectors), dim=4, cache_dir=None)
    matrix = pretrained_matrix(tokenizer, config, 4)
    assert matrix.shape == (tokenizer.get_vocab_size(), 4)
    assert torch.equal(matrix[tokenizer.token_to_id("▁Mann")], torch.tensor([1.0, 2, 3, 4]))
    assert torch.equal(matrix[tokenizer.token_to_id("▁fährt")], torch.tensor([5.0, 6, 7, 8]))
    assert torch.equal(matrix[tokenizer.token_to_id(".")], torch.tensor([9.0, 9, 9, 9]))
    assert torch.equal(matrix[0], torch.zeros(4))
    with pytest.raises(ConfigError, match="embedding_dim"):
        pretrained_matrix(tokenizer, config, 8)


# ---------------------------------------------------------------------------- CLI

WORDS = {"ein": "a", "hund": "dog", "katze": "cat", "sieht": "sees", "mag": "likes",
         "rot": "red", "blau": "blue", "klein": "small", "groß": "big", "und": "and"}  # fmt: skip


def write_pairs(prefix, count: int, seed: int) -> list[str]:
    """A toy German -> English corpus translated word by word; returns the English side."""
    rng = random.Random(seed)
    german = list(WORDS)
    de, en = [], []
    for _ in range(count):
        words = [rng.choice(german) for _ in range(rng.randint(2, 6))]
        de.append(" ".join(words).capitalize() + ".")
        en.append(" ".join(WORDS[w] for w in words).capitalize() + ".")
    prefix.with_suffix(".de").write_text("\n".join(de) + "\n")
    prefix.with_suffix(".en").write_text("\n".join(en) + "\n")
    return en


TINY = [
    "data.tokenizer=word", "model.embedding_dim=32", "model.hidden_size=64",
    "model.dropout=0.0", "model.label_smoothing=0.0", "trainer.max_epochs=12",
    "trainer.lr=0.01", "trainer.batch_size=16", "trainer.progress_bar=false",
]  # fmt: skip


def test_cli_train_test_predict_round_trip(tmp_path):
    write_pairs(tmp_path / "train", 400, seed=1)
    write_pairs(tmp_path / "dev", 30, seed=2)
    test_references = write_pairs(tmp_path / "test", 25, seed=3)
    run = tmp_path / "run"
    code, stdout, stderr = run_main(
        "task=translate", f"data.train={tmp_path / 'train'}", f"data.dev={tmp_path / 'dev'}",
        *TINY, f"hydra.run.dir={run}",
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    metrics = last_json(stdout)
    assert metrics["n"] == 30 and metrics["greedy_bleu"] > 60 and metrics["bleu"] > 60
    for name in ("attention.png", "curves.png", "metrics.csv", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    ckpt = run / "checkpoints" / "best.pt"

    code, stdout, stderr = run_main(
        "task=translate", "mode=test", f"ckpt={ckpt}", f"data.test={tmp_path / 'test'}",
        "decode.beam_size=3", f"hydra.run.dir={tmp_path / 't'}",
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    scores = last_json(stdout)
    assert set(scores) == {"bleu", "chrf", "signature", "n"}
    assert scores["n"] == 25 and scores["bleu"] > 60 and "tok:13a" in scores["signature"]

    out = tmp_path / "out.en"
    code, _, stderr = run_main(
        "task=translate", "mode=predict", f"ckpt={ckpt}", f"input={tmp_path / 'test.de'}",
        f"output={out}", "decode.beam_size=3", f"hydra.run.dir={tmp_path / 'p'}",
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    hypotheses = out.read_text().splitlines()
    assert len(hypotheses) == 25  # one line each, in input order: scores as mode=test did
    bleu = sacrebleu.corpus_bleu(hypotheses, [test_references]).score
    assert round(bleu, 2) == scores["bleu"]
    assert all(h.endswith(".") and h[0].isupper() for h in hypotheses)  # detokenised text

    code, stdout, _ = run_main(
        "task=translate", "mode=predict", f"ckpt={ckpt}",  # a plain call, as users make it
        stdin="Ein hund.\nEine unbekannte Zeile mit Wörtern.\n",
    )  # fmt: skip
    assert code == 0 and stdout.splitlines()[0] == "A dog." and len(stdout.splitlines()) == 2

    code, stdout, stderr = run_main(
        "task=translate", "mode=predict", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'e'}",
        stdin="Ein hund.\n\nRot.\n",
    )  # fmt: skip
    assert code == 2 and stdout == "" and "stdin.txt:2: empty line" in stderr


def test_parallel_files_that_disagree_name_both_files_and_counts(tmp_path):
    write_pairs(tmp_path / "train", 20, seed=1)
    (tmp_path / "bad.de").write_text("Ein hund.\nEine katze.\nRot.\n")
    (tmp_path / "bad.en").write_text("A dog.\nA cat.\n")
    code, stdout, stderr = run_main(
        "task=translate", f"data.train={tmp_path / 'train'}", f"data.dev={tmp_path / 'bad'}",
        *TINY, f"hydra.run.dir={tmp_path / 'r'}",
    )  # fmt: skip
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and stdout == "" and "Traceback" not in stderr
    assert f"{tmp_path / 'bad.de'}" in errors[0] and f"{tmp_path / 'bad.en'}" in errors[0]
    assert "3 lines" in errors[0] and "has 2" in errors[0]
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_cli_export_translates_a_sentence_with_plain_onnxruntime(tmp_path):
    """mode=export on a trained checkpoint: the encoder, the step and the JSON (tokenizers
    inside) translate "Ein hund." with onnxruntime and tokenizers alone, as predict does."""
    from tokenizers import Tokenizer

    from nlp_lstm.export import metadata_path
    from tests.test_export import greedy_with_graphs, onnx_runner

    write_pairs(tmp_path / "train", 400, seed=1)
    write_pairs(tmp_path / "dev", 30, seed=2)
    run = tmp_path / "run"
    code, _, stderr = run_main(
        "task=translate", f"data.train={tmp_path / 'train'}", f"data.dev={tmp_path / 'dev'}",
        *TINY, f"hydra.run.dir={run}",
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    ckpt = run / "checkpoints" / "best.pt"
    path = tmp_path / "mt.onnx"
    code, stdout, stderr = run_main(
        "task=translate", "mode=export", f"ckpt={ckpt}", "export.format=onnx", f"export.path={path}"
    )
    assert code == 0, stderr[-3000:]
    assert last_json(stdout)["path"] == str(path)
    meta = json.loads(metadata_path(path).read_text())
    source_tok = Tokenizer.from_str(meta["source_tokenizer"])
    target_tok = Tokenizer.from_str(meta["target_tokenizer"])

    ids = source_tok.encode("Ein hund.").ids
    source, lengths = torch.tensor([ids]), torch.tensor([len(ids)])
    max_len = int(meta["decode"]["max_len_a"] * len(ids) + meta["decode"]["max_len_b"])
    (out,) = greedy_with_graphs(
        onnx_runner(path), onnx_runner(path.parent / meta["step"]), source, lengths, max_len
    )
    assert target_tok.decode(out, skip_special_tokens=True) == "A dog."


def test_param_init_draws_every_weight_uniformly_and_keeps_padding_rows_zero():
    from nlp_lstm.tasks.translate import Seq2Seq, TranslateModelConfig

    torch.manual_seed(0)
    model = Seq2Seq(TranslateModelConfig(hidden_size=16, embedding_dim=8, param_init=0.1), 30, 40)
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.1, name
        assert parameter.abs().max() > 0.05, name  # drawn, not left at zero
    assert (
        not model.source_embedding.weight[0].any() and not model.decoder.embedding.weight[0].any()
    )
    default = Seq2Seq(TranslateModelConfig(hidden_size=16, embedding_dim=8), 30, 40)
    assert default.source_embedding.weight.abs().max() > 1  # PyTorch's N(0, 1) rows
    with pytest.raises(ConfigError, match="param_init"):
        TranslateModelConfig(param_init=-1)
