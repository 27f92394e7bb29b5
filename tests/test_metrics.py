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
