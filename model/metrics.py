"""Per-head metrics, defined once and used by the Evaluator (through TFMA) and by tests.

Each metric is a small *scorer* that accumulates one example at a time and merges with others, so
it runs as a Beam combiner in TFMA and as a plain loop anywhere else:

- ``accuracy`` / ``token_accuracy``: weighted share of correct argmax predictions (token heads count
  only real, labelled words: the weights are 0 on padding);
- ``auc``: ROC AUC of the last class's probability (binary heads), exact (Mann-Whitney);
- ``entity_f1`` / ``entity_precision`` / ``entity_recall``: exact-span, exact-type entity matching
  over IOB2 tags, as conlleval computes it (an ``I-X`` that does not continue an ``X`` starts one);
- ``bleu``: corpus BLEU of a sequence head's decoded text against the reference, computed as
  sacreBLEU's default ``corpus_bleu`` does (13a tokenization, case kept, n-grams up to 4 clipped
  and summed over the corpus, exponential brevity penalty, ``exp`` smoothing of zero precisions),
  reported as a fraction (sacreBLEU's score / 100) like every other metric here;
- ``semeval_macro_f1``: the official SemEval-2010 Task 8 score, macro-averaged F1 over the 9
  relation types with direction taken into account and ``Other`` excluded. Per type R: correct = gold
  and prediction are the same directed label; precision = correct / predictions of R in either
  direction; recall = correct / gold examples of R in either direction.
"""

from __future__ import annotations

import collections
import json
import math
import re
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from model.tasks import SEMEVAL_RELATIONS, Head, all_heads

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


def semeval_macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    # the official scorer averages over all 9 types of the task, also over one absent from the data
    types = sorted({relation_type(label) for label in SEMEVAL_RELATIONS} - {"Other"})
    scores = []
    for kind in types:
        correct = sum(g == p and relation_type(g) == kind for g, p in zip(gold, predicted))
        n_predicted = sum(relation_type(p) == kind for p in predicted)
        n_gold = sum(relation_type(g) == kind for g in gold)
        scores.append(precision_recall_f1(correct, n_predicted, n_gold)[2])
    return float(np.mean(scores))


# -- BLEU (sacreBLEU's corpus BLEU) ----------------------------------------------------------------

# mteval-v13a's tokenization, in the order sacreBLEU applies it: split off most ASCII symbols, then
# periods and commas unless inside a number, then a dash after a digit.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)
BLEU_MAX_ORDER = 4


def tokenize_13a(line: str) -> list[str]:
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngrams(words: list[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_statistics(hypothesis: str, reference: str) -> np.ndarray:
    """Sufficient statistics of one sentence pair: [hyp length, ref length, correct_1..4, total_1..4]."""
    hyp, ref = tokenize_13a(hypothesis), tokenize_13a(reference)
    stats = [len(hyp), len(ref)]
    correct, total = [], []
    for n in range(1, BLEU_MAX_ORDER + 1):
        hyp_ngrams, ref_ngrams = _ngrams(hyp, n), _ngrams(ref, n)
        correct.append(sum(min(count, ref_ngrams[g]) for g, count in hyp_ngrams.items()))
        total.append(max(0, len(hyp) - n + 1))
    return np.asarray(stats + correct + total, np.int64)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU in [0, 1] from summed statistics (sacreBLEU's score / 100)."""
    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct, total = stats[2 : 2 + BLEU_MAX_ORDER], stats[2 + BLEU_MAX_ORDER :]
    if not correct.any():
        return 0.0
    brevity = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len else 0.0)
    log_precisions, smoothing = [], 1.0
    for n in range(BLEU_MAX_ORDER):
        if total[n] == 0:  # no n-grams of this order at all: it counts as precision 0
            log_precisions += [-9999999999.0] * (BLEU_MAX_ORDER - n)
            break
        if correct[n] == 0:  # "exp" smoothing: 1 / 2^k for the k-th order without a match
            smoothing *= 2
            log_precisions.append(math.log(1.0 / (smoothing * total[n])))
        else:
            log_precisions.append(math.log(correct[n] / total[n]))
    return brevity * math.exp(sum(log_precisions) / BLEU_MAX_ORDER)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    return bleu_from_statistics(sum((bleu_statistics(h, r) for h, r in zip(hypotheses, references)),
                                    np.zeros(2 + 2 * BLEU_MAX_ORDER, np.int64)))  # fmt: skip


# -- scorers ------------------------------------------------------------------------------------


class Scorer:
    """Accumulates one example at a time: ``add(label_ids, probabilities, weights)``."""

    def __init__(self, head: Head):
        self.head = head

    def add(self, labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> None:
        raise NotImplementedError

    def merge(self, other: "Scorer") -> None:
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
        return semeval_macro_f1(self.gold, self.predicted)


class BleuScorer(Scorer):
    """Corpus BLEU; ``labels`` is the reference text, ``probabilities`` the decoded text (bytes or str)."""

    def __init__(self, head: Head):
        super().__init__(head)
        self.stats = np.zeros(2 + 2 * BLEU_MAX_ORDER, np.int64)

    def add(self, labels, probabilities, weights):
        if float(np.sum(weights)) > 0:
            self.stats += bleu_statistics(_text(probabilities), _text(labels))

    def merge(self, other):
        self.stats += other.stats

    def result(self):
        return bleu_from_statistics(self.stats)


def _text(value) -> str:
    value = np.reshape(np.asarray(value, dtype=object), [-1])[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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


def _head(name: str) -> Head:
    for head in all_heads():
        if head.name == name:
            return head
    raise KeyError(f"unknown head {name!r}")


def score(metric: str, head: Head, examples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The metric over (label_ids, probabilities, weights) examples, outside of TFMA."""
    scorer = make_scorer(metric, head)
    for labels, probabilities, weights in examples:
        scorer.add(np.asarray(labels), np.asarray(probabilities), np.asarray(weights))
    return scorer.result()


# -- TFMA ---------------------------------------------------------------------------------------


def _add_example(scorer: Scorer, element: metric_types.StandardMetricInputs, model_name: str, head: str) -> None:
    labels = element.get_labels(model_name, head)
    if labels is None:  # TFMA hands over some elements without labels for a head: nothing to score
        return
    labels = np.asarray(labels)
    probabilities = np.asarray(element.get_predictions(model_name, head))
    weights = element.get_example_weights(model_name, head)
    weights = np.ones(labels.shape) if weights is None else np.reshape(np.asarray(weights), labels.shape)
    scorer.add(labels, probabilities, weights)


class _ScorersCombiner(beam.CombineFn):
    """Accumulates (head, metric) scorers; ``reduce`` turns their results into the metric value."""

    def __init__(self, key: metric_types.MetricKey, scored: list[tuple[str, str]], reduce=None):
        self._key, self._scored, self._reduce = key, scored, reduce

    def create_accumulator(self) -> list[Scorer]:
        return [make_scorer(metric, _head(head)) for head, metric in self._scored]

    def add_input(self, scorers: list[Scorer], element: metric_types.StandardMetricInputs) -> list[Scorer]:
        for scorer, (head, _) in zip(scorers, self._scored):
            _add_example(scorer, element, self._key.model_name, head)
        return scorers

    def merge_accumulators(self, accumulators: Iterable[list[Scorer]]) -> list[Scorer]:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for other in accumulators:
            for mine, theirs in zip(result, other):
                mine.merge(theirs)
        return result

    def extract_output(self, scorers: list[Scorer]) -> dict[metric_types.MetricKey, float]:
        values = [s.result() for s in scorers]
        return {self._key: float(np.mean(values)) if self._reduce == "mean" else values[0]}


def _keys(name: str, model_names, output_names, example_weighted: bool):
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            yield metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)  # fmt: skip


class HeadMetric(metric_types.Metric):
    """A ``model.metrics`` scorer as a TFMA metric, for the head given as the spec's output name."""

    def __init__(self, name: str = "accuracy", metric: str | None = None):
        super().__init__(self._computations, name=name, metric=metric or name)

    @staticmethod
    def _computations(name: str, metric: str, eval_config=None, model_names=None, output_names=None,
                      sub_keys=None, aggregation_type=None, class_weights=None, example_weighted=False,
                      query_key=None) -> metric_types.MetricComputations:  # fmt: skip
        return [metric_types.MetricComputation(keys=[key], preprocessors=None,
                                               combiner=_ScorersCombiner(key, [(key.output_name, metric)]))
                for key in _keys(name, model_names, output_names, example_weighted)]  # fmt: skip


class MeanPrimaryMetric(metric_types.Metric):
    """The mean of several heads' primary metrics: the overall criterion a retrained model must improve.

    ``heads`` maps head name to its primary metric; the spec must not name outputs (it reads them all).
    """

    def __init__(self, name: str = "mean_primary_metric", heads: dict[str, str] | None = None):
        super().__init__(self._computations, name=name, heads=heads or {})

    @staticmethod
    def _computations(name: str, heads: dict[str, str], eval_config=None, model_names=None, output_names=None,
                      sub_keys=None, aggregation_type=None, class_weights=None, example_weighted=False,
                      query_key=None) -> metric_types.MetricComputations:  # fmt: skip
        return [metric_types.MetricComputation(keys=[key], preprocessors=None,
                                               combiner=_ScorersCombiner(key, sorted(heads.items()), "mean"))
                for key in _keys(name, model_names, None, example_weighted)]  # fmt: skip


metric_types.register_metric(HeadMetric)
metric_types.register_metric(MeanPrimaryMetric)
OVERALL_METRIC = "mean_primary_metric"


def tfma_metric_config(metric: str) -> dict[str, Any]:
    """Keyword arguments of ``tfma.MetricConfig`` for one of our per-head metrics."""
    return {"class_name": "HeadMetric", "module": __name__, "config": json.dumps({"name": metric, "metric": metric})}


def tfma_overall_metric_config(heads: Sequence[Head]) -> dict[str, Any]:
    config = {"name": OVERALL_METRIC, "heads": {h.name: h.primary_metric for h in heads}}
    return {"class_name": "MeanPrimaryMetric", "module": __name__, "config": json.dumps(config)}
