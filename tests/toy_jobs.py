"""Small Jobs for Trainer tests: a fake task with known arithmetic, and the toy NER tagger."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.contract import Job, Monitor, Split
from nlp_lstm.data.batching import lengths_mask
from nlp_lstm.data.conll import Sentence
from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.tasks.ner import BiLSTMCRFTagger, NERModelConfig, make_score, predict
from nlp_lstm.tasks.words import word_split
from nlp_lstm.train.process import seed_everything
from nlp_lstm.train.settings import TrainerConfig
from tests.conftest import toy_ner_sentences

# ---------------------------------------------------------------------------- a fake task


@dataclass
class ValuesBatch:
    values: Tensor  # (B, L) padded
    mask: Tensor  # (B, L)
    lengths: Tensor  # (B,)
    indices: Tensor  # (B,)


class ValuesCollator:
    def __init__(self, examples: list[list[float]]) -> None:
        self.examples = examples

    def __call__(self, positions: list[int]) -> ValuesBatch:
        lengths = torch.tensor([len(self.examples[i]) for i in positions])
        width = int(lengths.max())
        values = torch.zeros(len(positions), width)
        for row, i in enumerate(positions):
            values[row, : len(self.examples[i])] = torch.tensor(self.examples[i])
        return ValuesBatch(values, lengths_mask(lengths, width), lengths, torch.tensor(positions))


class MeanModel(nn.Module):
    """One weight ``w``; each value ``v`` costs ``(w - v)^2``. The loss is summed over the
    values and counted by values, so the count-weighted mean loss is minimised by the mean
    of all values, and a gradient step moves ``w`` towards the mean of the step's values."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(start))

    def forward(self, batch: ValuesBatch) -> tuple[Tensor, Tensor]:
        cost = (self.w - batch.values) ** 2 * batch.mask
        return cost.sum(), batch.mask.sum()


def values_split(examples: list[list[float]]) -> Split:
    return Split(examples, [len(e) for e in examples], ValuesCollator(examples))


def fake_job(examples: list[list[float]], score, mode: str = "max", start: float = 0.0) -> Job:
    """A Job over lists of values whose predict returns each example's position."""
    return Job(
        model=MeanModel(start),
        train=values_split(examples),
        dev=values_split(examples),
        predict=lambda model, batch: batch.indices.tolist(),
        score=score,
        monitor=Monitor("metric", mode),
        bundle=Bundle("fake", {}),
    )


def random_values(count: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.uniform(-2, 4) for _ in range(rng.randint(1, 9))] for _ in range(count)]


# ---------------------------------------------------------------------------- the toy tagger


def toy_job(n: int = 64, dropout: float = 0.0, seed: int = 0) -> Job:
    """The toy NER task as a Job: a small BiLSTM-CRF, scored on its own training sentences."""
    sentences = toy_ner_sentences(n, seed=seed)
    tokens = [[t for t, _ in s] for s in sentences]
    gold = [[g for _, g in s] for s in sentences]
    tags = Vocab(sorted({g for s in gold for g in s}), specials=())
    words = Vocab.from_counts(Counter(t for s in tokens for t in s))
    chars = Vocab.from_counts(Counter(c for s in tokens for t in s for c in t))
    seed_everything(seed)
    config = NERModelConfig(
        hidden_size=16, char_dim=8, char_hidden=8, dropout=dropout, word_dropout=0.0
    )
    model = BiLSTMCRFTagger(
        config, random_rows(len(words), 12), EmbeddingsConfig(), len(chars), tags.itos, "iob2"
    )
    gold_sentences = [Sentence(t, g, 0) for t, g in zip(tokens, gold, strict=True)]
    return Job(
        model=model,
        train=word_split(
            tokens, [tags.encode(g) for g in gold], words, chars, examples=gold_sentences
        ),  # fmt: skip
        dev=word_split(tokens, None, words, chars, examples=gold_sentences),
        predict=predict,
        score=make_score(tags, "iob2"),
        monitor=Monitor("f1", "max"),
        bundle=Bundle("toy", {}, {"words": words.to_list()}),
    )


def quiet(**overrides) -> TrainerConfig:
    base = dict(
        progress_bar=False, device="cpu", max_epochs=1, lr_schedule="none", gradient_clip_val=None
    )
    return TrainerConfig(**{**base, **overrides})
