"""Each metric against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from model.metrics import corpus_bleu, iob2_chunks, make_scorer, score, semeval_macro_f1, tokenize_13a
from model.tasks import NER_TAGS, RELATION, SENTIMENT, TAGGING, TRANSLATION

NER = TAGGING.heads[1]
POS = TAGGING.heads[0]


def one_hot(ids, n):
    return np.eye(n)[np.asarray(ids)]


def tags(*names):
    return [NER_TAGS.index(n) for n in names]


def test_iob2_chunks_follow_conlleval():
    assert iob2_chunks(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    # an I- that does not continue its type starts a new entity, as conlleval reads it
    assert iob2_chunks(["O", "I-ORG", "I-ORG", "I-PER"]) == {("ORG", 1, 3), ("PER", 3, 4)}
    assert iob2_chunks(["B-ORG", "B-ORG"]) == {("ORG", 0, 1), ("ORG", 1, 2)}
    assert iob2_chunks(["O", "O"]) == set()


def test_entity_f1_is_exact_span_and_type_not_token_accuracy():
    # sentence 1: gold PER[0:2], LOC[3:4]; predicted PER[0:1] (wrong span), LOC[3:4] (right)
    # sentence 2: gold ORG[0:1]; predicted PER[0:1] (wrong type) and an extra LOC[2:3]; position 3 is padding
    examples = [
        (tags("B-PER", "I-PER", "O", "B-LOC"), one_hot(tags("B-PER", "O", "O", "B-LOC"), 7), np.ones(4)),
        (tags("B-ORG", "O", "O", "O"), one_hot(tags("B-PER", "O", "B-LOC", "B-LOC"), 7), np.array([1, 1, 1, 0])),
    ]
    # correct 1 (LOC), predicted 4, gold 3: P = 1/4, R = 1/3, F1 = 2PR/(P+R) = 2/7
    assert score("entity_precision", NER, examples) == pytest.approx(1 / 4)
    assert score("entity_recall", NER, examples) == pytest.approx(1 / 3)
    assert score("entity_f1", NER, examples) == pytest.approx(2 / 7)


def test_token_accuracy_counts_real_words_only():
    labels = np.array([1, 2, 3, 0, 0])
    predicted = one_hot([1, 2, 0, 5, 5], 17)  # padding positions are wrong but weigh 0
    assert score("token_accuracy", POS, [(labels, predicted, np.array([1, 1, 1, 0, 0]))]) == pytest.approx(2 / 3)


def test_sentence_accuracy_and_auc_skip_examples_of_other_tasks():
    head = SENTIMENT.heads[0]
    examples = [
        (np.array(1), np.array([0.2, 0.8]), np.array(1.0)),  # positive, scored 0.8
        (np.array(0), np.array([0.6, 0.4]), np.array(1.0)),  # negative, scored 0.4
        (np.array(1), np.array([0.7, 0.3]), np.array(1.0)),  # positive, scored 0.3 (wrong)
        (np.array(0), np.array([0.9, 0.1]), np.array(0.0)),  # another task's example
    ]
    assert score("accuracy", head, examples) == pytest.approx(2 / 3)
    # pairs (positive, negative): (0.8 > 0.4) yes, (0.3 > 0.4) no -> AUC 1/2
    assert score("auc", head, examples) == pytest.approx(0.5)


def test_semeval_macro_f1_takes_direction_into_account_and_excludes_other():
    gold = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)", "Other", "Other"]
    pred = ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)", "Other", "Component-Whole(e1,e2)", "Other"]
    # Cause-Effect: correct 1 (the wrong direction is not), predicted 2, gold 2 -> P = R = F1 = 1/2
    # Component-Whole: correct 0 -> F1 0. The other 7 types: F1 0. Other is not averaged.
    assert semeval_macro_f1(gold, pred) == pytest.approx(0.5 / 9)
    perfect = [label for label in RELATION.heads[0].labels if label != "Other"]
    assert semeval_macro_f1(perfect, perfect) == pytest.approx(1.0)


def test_semeval_scorer_reads_probabilities_and_weights():
    head = RELATION.heads[0]
    labels = head.labels
    examples = [
        (np.array(labels.index("Cause-Effect(e1,e2)")), one_hot(labels.index("Cause-Effect(e1,e2)"), 19), np.array(1.0)),
        (np.array(labels.index("Cause-Effect(e2,e1)")), one_hot(labels.index("Cause-Effect(e1,e2)"), 19), np.array(1.0)),
        (np.array(0), one_hot(labels.index("Message-Topic(e1,e2)"), 19), np.array(0.0)),  # not a relation example
    ]
    assert score("semeval_macro_f1", head, examples) == pytest.approx(semeval_macro_f1(
        ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"], ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)"]))


HYPOTHESES = [
    "¿Dónde está la estación?", "Me gusta leer libros.", "El gato negro duerme en la casa.",
    "Tengo 3.5 euros - no más!", "Tom's car is red, isn't it?", "Hola", "", "Es 10-20 &amp; <b>",
]  # fmt: skip
REFERENCES = [
    "¿Dónde está la estación de tren?", "Me gustan los libros.", "El gato negro duerme en casa.",
    "Tengo 3.5 euros, no más.", "El coche de Tom es rojo, ¿no?", "Hola, amigo.", "Nada.", "Es 10-20 & <b>",
]  # fmt: skip


def test_13a_tokenization_matches_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    for line in HYPOTHESES + REFERENCES:
        assert tokenize_13a(line) == Tokenizer13a()(line.rstrip()).split()


@pytest.mark.parametrize("pairs", [slice(None), slice(0, 1), slice(0, 3), slice(5, 6), slice(6, 7), slice(3, 5)])
def test_corpus_bleu_matches_sacrebleu(pairs):
    import sacrebleu

    hypotheses, references = HYPOTHESES[pairs], REFERENCES[pairs]
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score / 100
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected, abs=1e-9)


def test_bleu_scorer_accumulates_the_corpus_and_skips_other_tasks_examples():
    import sacrebleu

    head = TRANSLATION.heads[0]
    examples = [(np.array([r.encode()]), np.array([h.encode()]), np.array([1.0])) for h, r in zip(HYPOTHESES, REFERENCES)]
    examples.append((np.array([b""]), np.array([b""]), np.array([0.0])))  # an example of another task
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score / 100
    assert score("bleu", head, examples) == pytest.approx(expected, abs=1e-9)
    assert score("bleu", head, [(np.array([b"a b c d"]), np.array([b"a b c d"]), np.array([1.0]))]) == pytest.approx(1.0)


def test_a_tfma_element_without_labels_for_a_head_is_not_scored():
    from model.metrics import _add_example

    class Element:  # the part of TFMA's StandardMetricInputs the adapter reads
        def __init__(self, labels):
            self._labels = labels

        def get_labels(self, model_name, head):
            return self._labels

        def get_predictions(self, model_name, head):
            return np.eye(len(NER_TAGS))[[1, 2, 0]]

        def get_example_weights(self, model_name, head):
            return None

    scorer = make_scorer("entity_f1", NER)
    _add_example(scorer, Element(None), "", "ner")
    assert scorer.gold == scorer.predicted == 0
    _add_example(scorer, Element(np.array([1, 2, 0])), "", "ner")
    assert scorer.result() == 1.0
