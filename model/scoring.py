"""Per-head metrics as pure scorers, defined once and used by the Evaluator (through the TFMA adapter
in ``model/tfma_metrics.py``), by ``mtnlp evaluate``, by the benchmarks and by tests.

Each metric is a small *scorer* that accumulates one example at a time and merges with others, so
it runs as a Beam combiner in TFMA and as a plain loop anywhere else:

- ``accuracy`` / ``token_accuracy``: weighted share of correct argmax predictions (token heads count
  only real, labelled words: the weights are 0 on padding);
- ``auc``: ROC AUC of the last class's probability (binary heads), exact (Mann-Whitney);
- ``entity_f1`` / ``entity_precision`` / ``entity_recall``: exact-span, exact-type entity matching
  over IOB2 tags, as conlleval computes it (an ``I-X`` that does not continue an ``X`` starts one);
- ``bleu``: corpus BLEU of a sequence head's decoded text against the reference, computed by
  sacreBLEU with its defaults (13a tokenization, case kept, n-grams up to 4 clipped and summed over
  the corpus, exponential brevity penalty, ``exp`` smoothing of zero precisions): each sentence pair
  gives sacreBLEU's sufficient statistics, the scorer sums them, and the corpus score is computed
  from the sums, so merged partial corpora score exactly as the whole corpus does. It is reported as
  a fraction (sacreBLEU's score / 100) like every other metric here;
- ``semeval_macro_f1``: the official SemEval-2010 Task 8 score, macro-averaged F1 over the 9
  relation types with direction taken into account and ``Other`` excluded. Per type R: correct = gold
  and prediction are the same directed label; precision = correct / predictions of R in either
  direction; recall = correct / gold examples of R in either direction.

This module imports numpy and the standard library only (sacreBLEU is imported when BLEU is first
computed), never Beam, TFMA or TensorFlow: scoring needs none of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mtnlp.model.heads import Head

__all__ = [
    "BLEU_MAX_ORDER",
    "SCORERS",
    "Accuracy",
    "BinaryAUC",
    "BleuScorer",
    "EntityScorer",
    "Scorer",
    "SemEvalScorer",
    "as_text",
    "bleu_from_statistics",
    "bleu_statistics",
    "corpus_bleu",
    "iob2_chunks",
    "make_scorer",
    "precision_recall_f1",
    "relation_type",
    "score",
    "semeval_macro_f1",
]


def as_text(value: Any) -> str:
    """One text value as ``str``: bytes are decoded as UTF-8, anything else goes through ``str``.

    A numpy array (or list) holding exactly one value, of any shape (0-d, ``[1]``, ``[1, 1]``), is
    that value: TFMA and the serving signatures hand one example's text over that way.
    """
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value, dtype=object)
        if array.size != 1:
            raise ValueError(f"expected one text value, got an array of shape {array.shape}")
        value = array.reshape(-1)[0]
    if isinstance(value, (bytes, bytearray)):  # numpy's bytes_ is a bytes
        return bytes(value).decode("utf-8")
    return str(value)


# -- entity chunks (conlleval) ------------------------------------------------------------------


def iob2_chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities of an IOB2 tag sequence as (type, start, end) with end exclusive."""
    chunks, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and tag_kind == kind
        if start is not None and not continues:
            chunks.add((kind, start, i))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, tag_kind
    return chunks


def precision_recall_f1(correct: float, predicted: float, gold: float) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def relation_type(label: str) -> str:
    return label.split("(")[0]


def semeval_macro_f1(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """``labels``: the head's label set (default: SemEval-2010 Task 8's, ``model.tasks.SEMEVAL_RELATIONS``)."""
    if labels is None:
        from mtnlp.model.tasks import SEMEVAL_RELATIONS as labels
    # the official scorer averages over all 9 types of the task, also over one absent from the data
    types = sorted({relation_type(label) for label in labels} - {"Other"})
    scores = []
    for kind in types:
        correct = sum(g == p and relation_type(g) == kind for g, p in zip(gold, predicted))
        n_predicted = sum(relation_type(p) == kind for p in predicted)
        n_gold = sum(relation_type(g) == kind for g in gold)
        scores.append(precision_recall_f1(correct, n_predicted, n_gold)[2])
    return float(np.mean(scores))


# -- BLEU (sacreBLEU's corpus BLEU, from summed sentence statistics) --------------------------------

BLEU_MAX_ORDER = 4
_BLEU_STATISTICS = 2 + 2 * BLEU_MAX_ORDER  # sacreBLEU's layout: [hyp len, ref len, correct_1..4, total_1..4]


@functools.cache
def _sacrebleu():
    """sacreBLEU's BLEU with its defaults (what ``sacrebleu.corpus_bleu`` uses), imported on first use."""
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=BLEU_MAX_ORDER)


def bleu_statistics(hypothesis: str, reference: str) -> np.ndarray:
    """sacreBLEU's sufficient statistics of one sentence pair: [hyp length, ref length, correct_1..4, total_1..4]."""
    one = _sacrebleu().corpus_score([hypothesis], [[reference]])
    return np.asarray([one.sys_len, one.ref_len, *one.counts, *one.totals], np.int64)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU in [0, 1] from summed statistics (sacreBLEU's score / 100)."""
    from sacrebleu.metrics import BLEU

    stats = [int(s) for s in np.asarray(stats).reshape(-1)]
    bleu = BLEU.compute_bleu(
        stats[2 : 2 + BLEU_MAX_ORDER],
        stats[2 + BLEU_MAX_ORDER :],
        stats[0],
        stats[1],
        smooth_method="exp",
        max_ngram_order=BLEU_MAX_ORDER,
    )
    return bleu.score / 100


def corpus_bleu(hypotheses: Iterable[str], references: Iterable[str]) -> float:
    """Corpus BLEU in [0, 1] of hypotheses against one reference each (sacreBLEU's score / 100)."""
    stats = np.zeros(_BLEU_STATISTICS, np.int64)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        stats += bleu_statistics(as_text(hypothesis), as_text(reference))
    return bleu_from_statistics(stats)


# -- scorers ------------------------------------------------------------------------------------


class Scorer:
    """Accumulates one example at a time: ``add(label_ids, probabilities, weights)``."""

    def __init__(self, head: Head):
        self.head = head

    def add(self, labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> None:
        raise NotImplementedError

    def merge(self, other: Scorer) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class Accuracy(Scorer):
    def __init__(self, head: Head):
        super().__init__(head)
        self.correct = self.total = 0.0

    def add(self, labels, probabilities, weights):
        hits = np.argmax(probabilities, axis=-1) == labels
        self.correct += float(np.sum(hits * weights))
        self.total += float(np.sum(weights))

    def merge(self, other):
        self.correct += other.correct
        self.total += other.total

    def result(self):
        return self.correct / self.total if self.total else 0.0


class BinaryAUC(Scorer):
    def __init__(self, head: Head):
        super().__init__(head)
        self.scores: list[float] = []
        self.positives: list[bool] = []

    def add(self, labels, probabilities, weights):
        if float(np.sum(weights)) > 0:
            self.scores.append(float(np.reshape(probabilities, [-1])[-1]))
            self.positives.append(int(np.reshape(labels, [-1])[0]) == self.head.num_labels - 1)

    def merge(self, other):
        self.scores += other.scores
        self.positives += other.positives

    def result(self):
        scores, positives = np.asarray(self.scores), np.asarray(self.positives, bool)
        n_pos, n_neg = positives.sum(), (~positives).sum()
        if not n_pos or not n_neg:
            return 0.0
        order = np.argsort(scores, kind="mergesort")
        ranks = np.empty(len(scores))
        ranks[order] = np.arange(1, len(scores) + 1)
        for value in np.unique(scores):  # average ranks of ties
            tied = scores == value
            ranks[tied] = ranks[tied].mean()
        return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class EntityScorer(Scorer):
    def __init__(self, head: Head, which: str = "f1"):
        super().__init__(head)
        self.which = which
        self.correct = self.predicted = self.gold = 0

    def add(self, labels, probabilities, weights):
        real = np.asarray(weights) > 0
        names = np.asarray(self.head.labels)
        gold = iob2_chunks(names[np.asarray(labels)[real]])
        predicted = iob2_chunks(names[np.argmax(probabilities, axis=-1)[real]])
        self.correct += len(gold & predicted)
        self.predicted += len(predicted)
        self.gold += len(gold)

    def merge(self, other):
        self.correct += other.correct
        self.predicted += other.predicted
        self.gold += other.gold

    def result(self):
        precision, recall, f1 = precision_recall_f1(self.correct, self.predicted, self.gold)
        return {"precision": precision, "recall": recall, "f1": f1}[self.which]


class SemEvalScorer(Scorer):
    def __init__(self, head: Head):
        super().__init__(head)
        self.gold: list[str] = []
        self.predicted: list[str] = []

    def add(self, labels, probabilities, weights):
        if float(np.sum(weights)) > 0:
            self.gold.append(self.head.labels[int(np.reshape(labels, [-1])[0])])
            self.predicted.append(self.head.labels[int(np.argmax(probabilities))])

    def merge(self, other):
        self.gold += other.gold
        self.predicted += other.predicted

    def result(self):
        return semeval_macro_f1(self.gold, self.predicted, self.head.labels)


class BleuScorer(Scorer):
    """Corpus BLEU; ``labels`` is the reference text, ``probabilities`` the decoded text (bytes or str).

    It keeps only the summed sentence statistics (a small int array), so it pickles and merges cheaply.
    """

    def __init__(self, head: Head):
        super().__init__(head)
        self.stats = np.zeros(_BLEU_STATISTICS, np.int64)

    def add(self, labels, probabilities, weights):
        if float(np.sum(weights)) > 0:
            self.stats += bleu_statistics(as_text(probabilities), as_text(labels))

    def merge(self, other):
        self.stats += other.stats

    def result(self):
        return bleu_from_statistics(self.stats)


SCORERS = {
    "bleu": BleuScorer,
    "accuracy": Accuracy,
    "token_accuracy": Accuracy,
    "auc": BinaryAUC,
    "entity_f1": lambda head: EntityScorer(head, "f1"),
    "entity_precision": lambda head: EntityScorer(head, "precision"),
    "entity_recall": lambda head: EntityScorer(head, "recall"),
    "semeval_macro_f1": SemEvalScorer,
}


def make_scorer(metric: str, head: Head) -> Scorer:
    if metric not in SCORERS:
        raise KeyError(f"unknown metric {metric!r} for head {head.name!r}; known: {sorted(SCORERS)}")
    return SCORERS[metric](head)


def score(metric: str, head: Head, examples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The metric over (label_ids, probabilities, weights) examples, outside of TFMA."""
    scorer = make_scorer(metric, head)
    for labels, probabilities, weights in examples:
        scorer.add(np.asarray(labels), np.asarray(probabilities), np.asarray(weights))
    return scorer.result()
