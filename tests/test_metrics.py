import pytest

from nlp_lstm.train.metrics import classification_scores, entity_scores, per_type_table


def test_entity_scores_known_values():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    scores = entity_scores(gold, pred)
    # 4 gold entities, 3 predicted, 2 correct (PER in sentence 1, ORG in sentence 2)
    assert scores["precision"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert scores["recall"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), abs=1e-3)
    assert scores["per_type"]["PER"] == {
        "precision": 100.0,
        "recall": 50.0,
        "f1": pytest.approx(66.6667),
        "support": 2,
    }
    assert scores["per_type"]["LOC"]["recall"] == 0.0
    assert "all" in per_type_table(scores)


def test_entity_scores_follow_conlleval_chunking():
    # conlleval starts a chunk at a stray I- tag and splits at a type change
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]]
    scores = entity_scores(gold, pred)
    assert scores["per_type"]["PER"]["f1"] == 100.0
    assert scores["precision"] == pytest.approx(100 / 3, abs=1e-3) and scores["recall"] == 50.0


def test_perfect_and_empty_predictions():
    gold = [["B-PER", "O"]]
    assert entity_scores(gold, gold)["f1"] == 100.0
    assert entity_scores(gold, [["O", "O"]])["f1"] == 0.0


def test_classification_scores():
    scores = classification_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert scores["accuracy"] == 60.0 and scores["n"] == 5
    # F1: class0 2*1/(2+2)=0.5, class1 2*2/(3+2)=0.8, class2 0
    assert scores["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3, abs=1e-3)
    assert scores["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_entity_scores_equal_seqeval_on_random_tag_sequences():
    # seqeval (default mode, conlleval chunking) is the reference; invalid sequences included
    import random

    from seqeval.metrics import classification_report

    rng = random.Random(0)
    tags = ["O", "O", "O"] + [f"{p}-{k}" for p in "BIES" for k in ("PER", "LOC", "MISC")]
    for trial in range(200):
        lengths = [rng.randint(0, 12) for _ in range(rng.randint(1, 6))]
        gold = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        pred = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        if trial % 4 == 0:  # near-miss predictions: mostly the gold tags
            pred = [[t if rng.random() < 0.8 else rng.choice(tags) for t in g] for g in gold]
        ours = entity_scores(gold, pred)
        report = classification_report(gold, pred, output_dict=True, zero_division=0)
        micro = report.pop("micro avg", {"precision": 0, "recall": 0, "f1-score": 0})
        report.pop("macro avg", None), report.pop("weighted avg", None)
        assert ours["f1"] == round(100 * float(micro["f1-score"]), 4)
        assert ours["precision"] == round(100 * float(micro["precision"]), 4)
        assert ours["recall"] == round(100 * float(micro["recall"]), 4)
        assert sorted(ours["per_type"]) == sorted(report)
        for kind, row in report.items():
            assert ours["per_type"][kind] == {
                "precision": round(100 * float(row["precision"]), 4),
                "recall": round(100 * float(row["recall"]), 4),
                "f1": round(100 * float(row["f1-score"]), 4),
                "support": int(row["support"]),
            }


def test_entity_chunks_of_each_scheme():
    from nlp_lstm.train.metrics import entity_chunks

    assert entity_chunks(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entity_chunks(["I-PER", "I-PER", "B-PER", "O"]) == [("PER", 0, 1), ("PER", 2, 2)]
    assert entity_chunks(["S-LOC", "B-ORG", "I-ORG", "E-ORG", "S-ORG"]) == [
        ("LOC", 0, 0),
        ("ORG", 1, 3),
        ("ORG", 4, 4),
    ]
    assert entity_chunks(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
    assert entity_chunks([]) == [] and entity_chunks(["O", "O"]) == []


def test_entity_scores_reject_unequal_sentence_counts():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
