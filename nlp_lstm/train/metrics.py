"""Evaluation metrics: entity-level P/R/F1 (seqeval, conlleval-equal) and classification."""

from __future__ import annotations

from collections.abc import Sequence


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro-averaged entity precision/recall/F1 and per-type scores, in percent.

    Uses seqeval's default (conlleval-compatible) chunking on IOB2 tags.
    """
    from seqeval.metrics import classification_report

    report = classification_report(
        [list(s) for s in gold], [list(s) for s in predicted], output_dict=True, zero_division=0
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        kind: {
            "precision": round(100 * float(row["precision"]), 4),
            "recall": round(100 * float(row["recall"]), 4),
            "f1": round(100 * float(row["f1-score"]), 4),
            "support": int(row["support"]),
        }
        for kind, row in sorted(report.items())
        if kind not in ("micro avg", "macro avg", "weighted avg")
    }
    return {
        "f1": round(100 * float(micro["f1-score"]), 4),
        "precision": round(100 * float(micro["precision"]), 4),
        "recall": round(100 * float(micro["recall"]), 4),
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
