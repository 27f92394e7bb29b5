"""Evaluation metrics: entity-level P/R/F1 (conlleval chunking) and classification."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def entity_chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as ``(type, first, last)``, chunked as conlleval does.

    Any scheme (IOB1, IOB2, BIOES) and invalid sequences alike: an entity begins at B-/S-,
    at an I-/E- that does not continue an entity of its type, or where the type changes; it
    ends after E-/S-, before O/B-/S-, or where the type changes.
    """
    chunks: list[tuple[str, int, int]] = []
    prev_prefix, prev_kind, first = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = ("O", "") if tag == "O" else (tag[:1], tag[2:])
        ends = prev_prefix != "O" and (prev_prefix in "ES" or prefix in "BSO" or kind != prev_kind)
        starts = prefix != "O" and (prefix in "BS" or prev_prefix in "ESO" or kind != prev_kind)
        if ends:
            chunks.append((prev_kind, first, i - 1))
        if starts:
            first = i
        prev_prefix, prev_kind = prefix, kind
    return chunks


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro-averaged entity precision/recall/F1 and per-type scores, in percent.

    Equal to conlleval and to seqeval's default mode (tests check seqeval's figures on random
    tag sequences); computed here because importing seqeval loads scikit-learn, SciPy and
    pandas (~130 MiB) for one warning class.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold_set, pred_set = set(), set()
    for n, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted")
        gold_set.update((kind, n, a, b) for kind, a, b in entity_chunks(g))
        pred_set.update((kind, n, a, b) for kind, a, b in entity_chunks(p))
    gold_count = Counter(c[0] for c in gold_set)
    pred_count = Counter(c[0] for c in pred_set)
    correct_count = Counter(c[0] for c in gold_set & pred_set)

    def row(correct: int, pred: int, support: int) -> dict:
        precision, recall, f1 = _prf(correct, pred, support)
        return {
            "precision": round(100 * precision, 4),
            "recall": round(100 * recall, 4),
            "f1": round(100 * f1, 4),
            "support": support,
        }

    per_type = {
        kind: row(correct_count[kind], pred_count[kind], gold_count[kind])
        for kind in sorted(gold_count.keys() | pred_count.keys())
    }
    micro = row(len(gold_set & pred_set), len(pred_set), len(gold_set))
    return {
        "f1": micro["f1"],
        "precision": micro["precision"],
        "recall": micro["recall"],
        "per_type": per_type,
    }


def per_type_table(scores: dict) -> str:
    """A small fixed-width table of per-type and overall P/R/F1."""
    lines = [f"{'type':<8} {'prec':>7} {'rec':>7} {'f1':>7} {'support':>8}"]
    for kind, row in scores["per_type"].items():
        lines.append(
            f"{kind:<8} {row['precision']:7.2f} {row['recall']:7.2f} {row['f1']:7.2f} {row['support']:8d}"
        )
    total = sum(row["support"] for row in scores["per_type"].values())
    lines.append(
        f"{'all':<8} {scores['precision']:7.2f} {scores['recall']:7.2f} {scores['f1']:7.2f} {total:8d}"
    )
    return "\n".join(lines)


def classification_scores(gold: Sequence[int], predicted: Sequence[int], num_classes: int) -> dict:
    """Accuracy and macro-F1 (percent), the count, and the confusion matrix (gold x predicted)."""
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    n = len(gold)
    correct = sum(confusion[i][i] for i in range(num_classes))
    f1s = []
    for k in range(num_classes):
        tp = confusion[k][k]
        predicted_k = sum(confusion[i][k] for i in range(num_classes))
        gold_k = sum(confusion[k])
        if gold_k == 0 and predicted_k == 0:
            continue
        f1s.append(2 * tp / (predicted_k + gold_k) if predicted_k + gold_k else 0.0)
    return {
        "accuracy": round(100 * correct / max(n, 1), 4),
        "macro_f1": round(100 * sum(f1s) / max(len(f1s), 1), 4),
        "n": n,
        "confusion": confusion,
    }
