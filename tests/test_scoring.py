"""The pure scorers of model/scoring.py: each metric against a hand computation, BLEU against sacreBLEU."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtnlp.model.scoring import as_text, corpus_bleu, iob2_chunks, make_scorer, score, semeval_macro_f1
from mtnlp.model.tasks import NER_TAGS, RELATION, SENTIMENT, TAGGING, TRANSLATION

REPO = Path(__file__).resolve().parents[1]
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
        (
            np.array(labels.index("Cause-Effect(e1,e2)")),
            one_hot(labels.index("Cause-Effect(e1,e2)"), 19),
            np.array(1.0),
        ),
        (
            np.array(labels.index("Cause-Effect(e2,e1)")),
            one_hot(labels.index("Cause-Effect(e1,e2)"), 19),
            np.array(1.0),
        ),
        (np.array(0), one_hot(labels.index("Message-Topic(e1,e2)"), 19), np.array(0.0)),  # not a relation example
    ]
    assert score("semeval_macro_f1", head, examples) == pytest.approx(
        semeval_macro_f1(["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"], ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)"])
    )


HYPOTHESES = [
    "¿Dónde está la estación?",
    "Me gusta leer libros.",
    "El gato negro duerme en la casa.",
    "Tengo 3.5 euros - no más!",
    "Tom's car is red, isn't it?",
    "Hola",
    "",
    "Es 10-20 &amp; <b>",
]
REFERENCES = [
    "¿Dónde está la estación de tren?",
    "Me gustan los libros.",
    "El gato negro duerme en casa.",
    "Tengo 3.5 euros, no más.",
    "El coche de Tom es rojo, ¿no?",
    "Hola, amigo.",
    "Nada.",
    "Es 10-20 & <b>",
]


@pytest.mark.parametrize("pairs", [slice(None), slice(0, 1), slice(0, 3), slice(5, 6), slice(6, 7), slice(3, 5)])
def test_corpus_bleu_matches_sacrebleu(pairs):
    import sacrebleu

    hypotheses, references = HYPOTHESES[pairs], REFERENCES[pairs]
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score / 100
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected, abs=1e-9)


def test_bleu_scorer_accumulates_the_corpus_and_skips_other_tasks_examples():
    import sacrebleu

    head = TRANSLATION.heads[0]
    examples = [
        (np.array([r.encode()]), np.array([h.encode()]), np.array([1.0])) for h, r in zip(HYPOTHESES, REFERENCES)
    ]
    examples.append((np.array([b""]), np.array([b""]), np.array([0.0])))  # an example of another task
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score / 100
    assert score("bleu", head, examples) == pytest.approx(expected, abs=1e-9)
    assert score("bleu", head, [(np.array([b"a b c d"]), np.array([b"a b c d"]), np.array([1.0]))]) == pytest.approx(
        1.0
    )


# Varied pairs for the merged-corpus check: punctuation, numbers (decimals, thousands, ranges),
# HTML entities, case, clipping of repeated words, empty sides, exact and partial matches.
PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("the cat sat on the mat", "The cat sat on the mat."),
    ("A dog barks!", "The dog is barking."),
    ("", "There is no hypothesis here."),
    ("Something out of nothing.", ""),
    ("It costs 3.50 euros.", "It costs 3.50 euros."),
    ("It costs 3,50 euros", "The price is 3.50 euros."),
    ("We sold 1,000,000 units in 2023.", "In 2023 we sold 1,000,000 units."),
    ("Pages 10-20 are missing.", "Pages 10-20 are missing!"),
    ("Call me at 555-1234, please.", "Please call me at 555-1234."),
    ('He said: "no way"', 'He said "no way".'),
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("x &lt; y &gt; z", "x < y > z"),
    ("Is it (really) true?", "Is it really true?"),
    ("the the the the the the", "the cat is on the mat"),
    ("¿Dónde está la estación?", "¿Dónde está la estación de tren?"),
    ("Me gusta leer libros.", "Me gustan los libros."),
    ("El gato negro duerme en la casa.", "El gato negro duerme en casa."),
    ("Tengo 3.5 euros - no más!", "Tengo 3.5 euros, no más."),
    ("Hola", "Hola, amigo."),
    ("OK", "ok"),
    ("WHAT A DAY", "What a day"),
    ("New York is big; London is bigger.", "London is bigger than New York."),
    ("e-mail me: a.b@example.com", "Email me at a.b@example.com"),
    ("50% off -- today only", "50 % off, today only"),
    ("It's 9:30 a.m. now.", "It is 9:30 a.m. now."),
    ("one two three four five six seven eight", "one two three four five six seven eight nine ten"),
    ("a b c d e f g h i j k l", "a b c d"),
    ("Trailing spaces   ", "Trailing spaces"),
    ("tabs\tand  double  spaces", "tabs and double spaces"),
    ("[bracketed] {braced} <angled>", "[bracketed] {braced} <angled>"),
    ("Numbers: 1.5, 2.25 and 3.", "Numbers: 1.5, 2.25, and 3."),
    ("", ""),
    ("Ünïcödé wörds ärë fïnë.", "Ünïcödé wörds ärë fïnë."),
    ("Year-end results: 2019-2020.", "Results at year end: 2019-2020."),
    ("Go!", "Go now!"),
]


def test_merged_bleu_scorers_give_sacrebleus_corpus_bleu():
    import sacrebleu

    hypotheses, references = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    head = TRANSLATION.heads[0]
    halves = []
    for part in (slice(0, len(PAIRS) // 2), slice(len(PAIRS) // 2, None)):
        scorer = make_scorer("bleu", head)
        for hypothesis, reference in PAIRS[part]:
            scorer.add(np.array([reference.encode()], object), np.array([hypothesis.encode()], object), np.ones([1]))
        scorer.add(np.array([b"skipped"], object), np.array([b"not scored"], object), np.zeros([1]))  # another task's
        halves.append(pickle.loads(pickle.dumps(scorer)))  # Beam ships accumulators pickled
    first, second = halves
    first.merge(second)
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score / 100
    assert 0 < expected < 1
    assert first.result() == pytest.approx(expected, abs=1e-9)
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected, abs=1e-9)


def test_corpus_bleu_edge_cases():
    assert corpus_bleu([], []) == 0.0
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        corpus_bleu(["one", "two"], ["one"])


def test_as_text_decodes_bytes_and_unwraps_single_values():
    assert as_text(b"caf\xc3\xa9") == "café"
    assert as_text("café") == "café"
    assert as_text(np.bytes_(b"abc")) == "abc"
    assert as_text(np.array(b"abc")) == "abc"  # 0-d
    assert as_text(np.array([b"abc"], object)) == "abc"
    assert as_text(np.array([["abc"]])) == "abc"
    assert as_text([b"abc"]) == "abc"
    assert as_text(3) == "3"
    assert type(as_text(np.array(["abc"]))) is str
    with pytest.raises(ValueError):
        as_text(np.array([b"a", b"b"], object))
    with pytest.raises(UnicodeDecodeError):
        as_text(b"\xff")


def test_importing_scoring_loads_neither_beam_nor_tfma_nor_tensorflow():
    code = """
import sys
heavy = ("apache_beam", "tensorflow_model_analysis", "tensorflow")
def loaded():
    return sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
import mtnlp.model.scoring
print("after import", loaded())
from mtnlp.model.tasks import all_heads
for head in all_heads():
    for metric in head.metrics:
        mtnlp.model.scoring.make_scorer(metric, head).result()
mtnlp.model.scoring.corpus_bleu(["a b c"], ["a b c"])
print("after scoring", loaded())
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["after import []", "after scoring []"]
