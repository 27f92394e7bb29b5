"""The Python inference API: ``nlp_lstm.load`` and the five task predictors."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import nlp_lstm
from nlp_lstm.data.parallel import encode
from nlp_lstm.errors import UserError
from nlp_lstm.tasks.common import plain_result
from tests.cli_helpers import run_main
from tests.test_charlm import VERSE
from tests.test_translate import sequence_log_prob, source_batch


@pytest.fixture(scope="module")
def checkpoints(trained_models) -> dict:
    """One tiny trained model of each task, and the files it was trained on."""
    return trained_models


def as_json(results) -> list:
    return [json.loads(json.dumps(plain_result(r))) for r in results]


def predicted_lines(*args: str, stdin: str | None = None) -> list:
    code, stdout, stderr = run_main("mode=predict", "output_format=jsonl", *args, stdin=stdin)
    assert code == 0, stderr[-3000:]
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- every task


def test_load_gives_what_mode_predict_writes_for_every_task(checkpoints, tmp_path):
    ckpt, files = checkpoints["ckpt"], checkpoints["files"]

    texts = ["Mr John Smith said in Paris. The Google Corp deal was new.", "in Rome ."]
    tagger = nlp_lstm.load(ckpt["ner"])
    written = predicted_lines("task=ner", f"ckpt={ckpt['ner']}", stdin="\n".join(texts))
    expected = [{"text": t, "entities": e} for t, e in zip(texts, tagger(texts), strict=True)]
    assert written == as_json(expected)
    assert any(row["entities"] for row in written)

    reviews = ["the film is great", "a dull plot"]
    classifier = nlp_lstm.load(ckpt["sentiment"])
    written = predicted_lines("task=sentiment", f"ckpt={ckpt['sentiment']}",
                              stdin="\n".join(reviews))  # fmt: skip
    assert written == as_json(classifier(reviews))

    generator = nlp_lstm.load(ckpt["charlm"])
    sampling = {"length": 30, "temperature": 0.8, "top_k": 5, "top_p": 0.9, "seed": 7}
    written = predicted_lines("task=charlm", f"ckpt={ckpt['charlm']}", "sample.length=30",
                              "sample.top_k=5", "sample.top_p=0.9", "sample.seed=7",
                              stdin="to be\nthat is\n")  # fmt: skip
    assert written == as_json(generator(["to be", "that is"], **sampling))

    sources = (checkpoints["root"] / "mt_dev.de").read_text().splitlines()[:5]
    translator = nlp_lstm.load(ckpt["translate"])
    written = predicted_lines("task=translate", f"ckpt={ckpt['translate']}",
                              "decode.beam_size=3", stdin="\n".join(sources))  # fmt: skip
    assert written == as_json(translator.translate(sources, beam_size=3))

    forecaster = nlp_lstm.load(ckpt["forecast"])
    written = predicted_lines("task=forecast", f"ckpt={ckpt['forecast']}",
                              f"data.path={files['series']}")  # fmt: skip
    assert written == as_json([forecaster.forecast(files["series"])])


def test_plain_text_output_is_the_same_results(checkpoints):
    ckpt = checkpoints["ckpt"]
    generator = nlp_lstm.load(ckpt["charlm"])
    code, stdout, _ = run_main("task=charlm", "mode=predict", f"ckpt={ckpt['charlm']}",
                               "sample.prompt=to be", "sample.length=25", "sample.seed=3")  # fmt: skip
    assert code == 0
    assert stdout == "to be" + generator.generate("to be", length=25, seed=3) + "\n\n"
    tagger = nlp_lstm.load(ckpt["ner"])
    code, stdout, _ = run_main("task=ner", "mode=predict", f"ckpt={ckpt['ner']}",
                               stdin="Mr John Smith visited Berlin.\n")  # fmt: skip
    tagged = tagger.tag("Mr John Smith visited Berlin.")
    assert stdout.splitlines()[:6] == [
        f"{t.text}\t{tag}" for t, tag in zip(tagged.tokens, tagged.tags, strict=True)
    ]
    assert [t.text for t in tagged.tokens][-2:] == ["Berlin", "."]  # cut as CoNLL is


def test_predictors_know_their_task_and_metadata(checkpoints):
    ckpt = checkpoints["ckpt"]
    tagger = nlp_lstm.load(ckpt["ner"], device="cpu")
    assert tagger.task == "ner" and tagger.labels == ["LOC", "ORG", "PER"]
    assert tagger.config["model"]["hidden_size"] == 24 and "O" in tagger.tag_set
    classifier = nlp_lstm.load(ckpt["sentiment"])
    assert classifier.task == "sentiment" and classifier.labels.itos == ["neg", "pos"]
    prediction = classifier("the film is great")
    assert (
        prediction.label in ("neg", "pos")
        and prediction.score == prediction.probs[prediction.label]
    )
    assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert [w.text for w in prediction.attention] == ["the", "film", "is", "great"]
    assert sum(w.weight for w in prediction.attention) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(AttributeError):
        prediction.label = "x"  # frozen


def test_tagger_offsets_scores_and_marginals(checkpoints):
    tagger = nlp_lstm.load(ckpt := checkpoints["ckpt"]["ner"])
    text = "Mr  John Smith\tsaid in Paris.\nThe Google Corp deal was new."
    tagged = tagger.tag(text, marginals=True)
    assert [text[a:b] for a, b in ((t.start, t.end) for t in tagged.tokens)] == [
        t.text for t in tagged.tokens
    ]
    assert len(tagged.sentences) == 2 and tagged.sentences[0] == (0, 7)
    assert tagged.marginals.shape == (len(tagged.tokens), len(tagger.tag_set))
    assert np.allclose(tagged.marginals.sum(1), 1.0, atol=1e-4)
    assert tagged.entities, "the toy model finds entities"
    for entity in tagged.entities:
        assert text[entity.start : entity.end] == entity.text and 0 < entity.score <= 1
    # a tokenised sentence: offsets into the tokens joined by single spaces
    [entities] = tagger([["Mr", "John", "Smith", "in", "Rome", "."]])
    joined = "Mr John Smith in Rome ."
    assert all(joined[e.start : e.end] == e.text for e in entities)
    assert nlp_lstm.load(ckpt)("") == () and tagger([]) == []


@pytest.mark.parametrize("seed", range(5))
def test_entities_are_slices_of_any_text(checkpoints, seed):
    """Random texts (names the model knows, Unicode, runs of spaces, tabs, line breaks,
    punctuation runs): every entity is the slice of the caller's text its offsets say, and
    the tokens cover the text's non-space characters once, in order."""
    import random

    rng = random.Random(seed)
    pieces = ["Mr", "John", "Smith", "Paris", "Google", "Corp", "in", "said", "Zoë", "東京",
              ".", ",", "!!", "...", "(", ")", '"', "'s", "n't", "-", "  ", "\t", "\n", " ",
              "U.S.", "1996-08-30", "e\u0301", "\u00a0"]  # fmt: skip
    tagger = nlp_lstm.load(checkpoints["ckpt"]["ner"])
    texts = ["".join(rng.choice(pieces) + rng.choice([" ", "", " "]) for _ in range(rng.randint(0, 60)))
             for _ in range(20)]  # fmt: skip
    for text, tagged in zip(texts, tagger.tag(texts), strict=True):
        for entity in tagged.entities:
            assert text[entity.start : entity.end] == entity.text
        covered = "".join(text[t.start : t.end] for t in tagged.tokens)
        assert covered == "".join(c for c in text if not c.isspace())
        assert all(a.end <= b.start for a, b in zip(tagged.tokens, tagged.tokens[1:], strict=False))
        assert len(tagged.tags) == len(tagged.tokens)


def test_translation_score_and_attention(checkpoints):
    translator = nlp_lstm.load(checkpoints["ckpt"]["translate"])
    greedy = translator.translate("Ein hund sieht eine katze.", beam_size=1)
    beam = translator.translate("Ein hund sieht eine katze.", beam_size=4)
    for result in (greedy, beam):
        rows, cols = result.attention.shape
        assert rows == len(result.target_tokens) and cols == len(result.source_tokens)
        assert result.target_tokens[-1] == "</s>"
        assert np.allclose(result.attention.sum(1), 1.0, atol=1e-4)
        ids = [translator.target_tokenizer.token_to_id(t) for t in result.target_tokens[:-1]]
        source = encode(translator.source_tokenizer, ["Ein hund sieht eine katze."])
        with torch.no_grad():  # the score is log P(output + EOS), read step by step
            expected = sequence_log_prob(translator.model, source_batch(source), 0, ids)
        assert result.score == pytest.approx(expected, abs=1e-4) and result.score < 0


def test_generator_stream_score_and_seeds(checkpoints):
    generator = nlp_lstm.load(checkpoints["ckpt"]["charlm"])
    streamed = "".join(generator.stream("to be", length=40, seed=11))
    assert streamed == generator.generate("to be", length=40, seed=11)
    assert len(streamed) == 40
    greedy = generator.generate("to be", length=20, temperature=0)
    assert greedy == generator.generate("to be", length=20, temperature=0, seed=99)
    bpc = generator.score(VERSE * 3)
    assert 0 < bpc < generator.score("qqqq zzzz xxxx qqqq")
    with pytest.raises(ValueError, match="never seen in training"):
        generator.generate("ROMEO~", length=5)


def test_forecast_from_a_file_a_frame_or_a_dict(checkpoints):
    import pandas as pd

    path = checkpoints["files"]["series"]
    forecaster = nlp_lstm.load(checkpoints["ckpt"]["forecast"])
    from_file = forecaster.forecast(path)
    frame = pd.read_csv(path)
    from_frame = forecaster.forecast(frame)
    from_dict = forecaster.forecast({c: frame[c].tolist() for c in frame.columns})
    assert from_file.values.shape == (6, 2) and from_file.columns == ("a", "b")
    assert from_file.times[0] == "2020-01-17 16:00:00"  # the hour after the last row
    for other in (from_frame, from_dict):
        assert other.times == from_file.times
        assert np.allclose(other.values, from_file.values, atol=1e-6)
    two = forecaster([path, frame.iloc[:300]])  # a list of tables: one batch
    assert np.allclose(two[0].values, from_file.values, atol=1e-5) and len(two) == 2
    with pytest.raises(ValueError, match="look_back"):
        forecaster(frame.iloc[:10])


# ---------------------------------------------------------------------------- threads


def test_one_predictor_shared_by_threads_gives_the_sequential_results(checkpoints):
    tagger = nlp_lstm.load(checkpoints["ckpt"]["ner"])
    rng = np.random.default_rng(0)
    words = ["Mr", "John", "Smith", "said", "in", "Paris", "Google", "Corp", "the", "deal",
             "Quixotl", "Zanzibar", ".", ",", "new"]  # fmt: skip
    calls = []
    for _ in range(200):
        texts = [" ".join(rng.choice(words, size=rng.integers(1, 14))) for _ in range(rng.integers(1, 4))]  # fmt: skip
        calls.append(texts if len(texts) > 1 else texts[0])
    expected = [tagger(call) for call in calls]
    fresh = nlp_lstm.load(checkpoints["ckpt"]["ner"])  # vocabulary grown in another order
    results: dict[int, object] = {}

    def work(worker: int) -> None:
        for index in range(worker, len(calls), 8):
            results[index] = fresh(calls[index])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(calls))] == expected


# ---------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_one_clear_error(checkpoints, tmp_path):
    ckpt = checkpoints["ckpt"]
    tagger = nlp_lstm.load(ckpt["ner"])
    with pytest.raises(TypeError, match="list of inputs"):
        tagger(None)
    with pytest.raises(TypeError, match="not int"):
        tagger(42)
    with pytest.raises(TypeError, match="input 1: expected"):
        tagger(["fine", 3])
    with pytest.raises(ValueError, match="tokens must be"):
        tagger([["two words"]])
    with pytest.raises(UserError, match="task 'ner', not 'sentiment'"):
        nlp_lstm.load(ckpt["ner"], task="sentiment")
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(ValueError, match="not a readable nlp_lstm checkpoint"):
        nlp_lstm.load(not_a_checkpoint)
    with pytest.raises(ValueError, match="checkpoint not found"):
        nlp_lstm.load(tmp_path / "missing.pt")
    with pytest.raises(TypeError):
        nlp_lstm.load(None)
    classifier = nlp_lstm.load(ckpt["sentiment"])
    with pytest.raises(ValueError, match="empty text"):
        classifier(["good", "   "])
    translator = nlp_lstm.load(ckpt["translate"])
    with pytest.raises(ValueError, match="beam_size"):
        translator.translate("ein hund", beam_size=0)


def test_a_megabyte_of_text_is_tagged_sentence_by_sentence(checkpoints):
    tagger = nlp_lstm.load(checkpoints["ckpt"]["ner"])
    sentence = "Mr John Smith said in Paris that the Google Corp deal was new. "
    text = sentence * (2**20 // len(sentence))
    tagged = tagger.tag(text)
    assert len(tagged.sentences) == 2**20 // len(sentence)
    assert all(text[e.start : e.end] == e.text for e in tagged.entities)
    no_ends = "word " * 1000  # no sentence end at all: cut into pieces the model can take
    assert len(tagger.tag(no_ends).sentences) == 5


def test_the_docs_python_example_runs(checkpoints, capsys):
    page = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text()
    code = page.split("<!-- python-api -->")[1].split("```python")[1].split("```")[0]
    for task, path in checkpoints["ckpt"].items():
        code = code.replace(f"runs/{task}/RUN/checkpoints/best.pt", str(path))
    code = code.replace("recent.csv", str(checkpoints["files"]["series"]))
    assert "RUN" not in code
    exec(compile(code, "docs/python-api.md", "exec"), {})
    assert len(capsys.readouterr().out) == 100  # the streamed characters
