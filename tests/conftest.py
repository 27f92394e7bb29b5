"""Shared fixtures: small corpora written on the fly (no corpus files are committed)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # under pytest -n N each worker (and every CLI it starts) takes one core, so that N
    # workers share the machine instead of each asking torch for all of it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

PEOPLE = ["John", "Mary", "Smith", "Obama", "Ana", "Lee", "Ivan", "Chen", "Maria", "Khan"]
PLACES = ["Paris", "London", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Rome"]
ORGS = ["Reuters", "Google", "Siemens", "Fiat", "Nokia", "Unilever"]
FILLER = ["the", "said", "on", "a", "report", "today", "and", "of", "new", "deal", "was", "it"]


def toy_ner_sentences(count: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences whose entities are recognisable from the words and their context."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        tokens: list[tuple[str, str]] = []
        for _ in range(rng.randint(2, 5)):
            roll = rng.random()
            if roll < 0.25:
                tokens.append(("Mr", "O"))
                names = rng.sample(PEOPLE, rng.randint(1, 2))
                tokens += [(n, ("B-PER" if i == 0 else "I-PER")) for i, n in enumerate(names)]
            elif roll < 0.45:
                tokens += [("in", "O"), (rng.choice(PLACES), "B-LOC")]
            elif roll < 0.6:
                tokens += [(rng.choice(ORGS), "B-ORG"), ("Corp", "I-ORG")]
            else:
                tokens.append((rng.choice(FILLER), "O"))
        tokens.append((".", "O"))
        sentences.append(tokens)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]], docstart: bool = True) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for sentence in sentences:
        lines += [f"{token} NNP B-NP {tag}" for token, tag in sentence]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def toy_conll(tmp_path: Path) -> dict[str, Path]:
    """train/dev/test CoNLL files of the toy NER task."""
    return {
        "train": write_conll(tmp_path / "train.txt", toy_ner_sentences(300, seed=1)),
        "dev": write_conll(tmp_path / "dev.txt", toy_ner_sentences(60, seed=2)),
        "test": write_conll(tmp_path / "test.txt", toy_ner_sentences(60, seed=3)),
    }


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Vector caches go to a per-session temp folder, never to the user's home."""
    monkeypatch.setenv("NLP_LSTM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def step_results(model, batch, predict) -> tuple:
    """One forward and backward pass of a task model on a batch: its loss, example count,
    parameter gradients and predictions (to compare the same model over two batchings)."""
    model.zero_grad()
    loss, count = model(batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return loss.detach(), count, grads, predict(model, batch)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> dict:
    """One tiny trained model of each task (tests/trained_models.py), trained once a session:
    ``{"ckpt": {task: path}, "files": {...}, "root": folder}``."""
    from tests.trained_models import train_all

    return train_all(tmp_path_factory.mktemp("trained"))
