"""nlp_lstm: LSTM models for NER, sentiment, character language modelling, forecasting and
translation.

A trained model is one call away (the task is read from the checkpoint)::

    import nlp_lstm
    tagger = nlp_lstm.load("runs/ner/<run>/checkpoints/best.pt")
    tagger("Peter Blackburn visited Berlin.")   # entities with offsets and probabilities

The building blocks are importable on their own::

    from nlp_lstm import BiLSTMEncoder, CRF, TokenEmbedder, Vocab, Trainer, Job, Split
"""

from nlp_lstm.api import load
from nlp_lstm.checkpoint import Bundle, load_checkpoint
from nlp_lstm.contract import Job, Monitor, Predictor, Split
from nlp_lstm.data.vectors import EmbeddingsConfig, build_vocab_and_vectors, load_keyed_vectors
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.inside import inspect
from nlp_lstm.modules.crf import CRF
from nlp_lstm.modules.embeddings import CharCNN, CharLSTM, TokenEmbedder
from nlp_lstm.modules.encoder import BiLSTMEncoder, EncoderOutput
from nlp_lstm.modules.heads import ClassifierHead, TaggingHead
from nlp_lstm.modules.pooling import AttentionPooling
from nlp_lstm.modules.sampling import filter_logits, sample_next
from nlp_lstm.modules.series import RevIN, SegmentProjection
from nlp_lstm.train.trainer import Trainer, TrainerConfig

__all__ = [
    "AttentionPooling",
    "BiLSTMEncoder",
    "Bundle",
    "CRF",
    "CharCNN",
    "CharLSTM",
    "ClassifierHead",
    "EmbeddingsConfig",
    "EncoderOutput",
    "Job",
    "Monitor",
    "Predictor",
    "RevIN",
    "SegmentProjection",
    "Split",
    "TaggingHead",
    "TokenEmbedder",
    "Trainer",
    "TrainerConfig",
    "Vocab",
    "build_vocab_and_vectors",
    "filter_logits",
    "inspect",
    "load",
    "load_checkpoint",
    "load_keyed_vectors",
    "sample_next",
]
__version__ = "0.1.0"
