"""The TFMA adapter of the per-head scorers of ``model/scoring.py``: the Evaluator's metrics.

``HeadMetric`` runs one scorer (``accuracy``, ``token_accuracy``, ``auc``, ``entity_f1`` /
``entity_precision`` / ``entity_recall``, ``bleu``, ``semeval_macro_f1``; what each means is told in
``model/scoring.py``) for the head named as the metric spec's output; ``MeanPrimaryMetric`` is the mean
of several heads' primary metrics, the overall criterion a retrained model must improve. Both run
the scorers as a Beam combiner (``_ScorersCombiner``: one accumulator of scorers, merged across
workers). The class names, this module's path and the registered names are what the Evaluator's TFMA
config names (``tfma_metric_config``, ``tfma_overall_metric_config``), and what an evaluation artifact
records: renaming them leaves older artifacts' configs pointing at the old names.

Scoring outside of TFMA needs only ``model.scoring``, which imports neither Beam, TFMA nor TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from mtnlp.model.scoring import Scorer, make_scorer
from mtnlp.model.tasks import Head, get_head

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
        return [make_scorer(metric, get_head(head)) for head, metric in self._scored]

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
            yield metric_types.MetricKey(
                name=name, model_name=model_name, output_name=output_name, example_weighted=example_weighted
            )


class HeadMetric(metric_types.Metric):
    """A ``model.scoring`` scorer as a TFMA metric, for the head given as the spec's output name."""

    def __init__(self, name: str = "accuracy", metric: str | None = None):
        super().__init__(self._computations, name=name, metric=metric or name)

    @staticmethod
    def _computations(
        name: str,
        metric: str,
        eval_config=None,
        model_names=None,
        output_names=None,
        sub_keys=None,
        aggregation_type=None,
        class_weights=None,
        example_weighted=False,
        query_key=None,
    ) -> metric_types.MetricComputations:
        return [
            metric_types.MetricComputation(
                keys=[key], preprocessors=None, combiner=_ScorersCombiner(key, [(key.output_name, metric)])
            )
            for key in _keys(name, model_names, output_names, example_weighted)
        ]


class MeanPrimaryMetric(metric_types.Metric):
    """The mean of several heads' primary metrics: the overall criterion a retrained model must improve.

    ``heads`` maps head name to its primary metric; the spec must not name outputs (it reads them all).
    """

    def __init__(self, name: str = "mean_primary_metric", heads: dict[str, str] | None = None):
        super().__init__(self._computations, name=name, heads=heads or {})

    @staticmethod
    def _computations(
        name: str,
        heads: dict[str, str],
        eval_config=None,
        model_names=None,
        output_names=None,
        sub_keys=None,
        aggregation_type=None,
        class_weights=None,
        example_weighted=False,
        query_key=None,
    ) -> metric_types.MetricComputations:
        return [
            metric_types.MetricComputation(
                keys=[key], preprocessors=None, combiner=_ScorersCombiner(key, sorted(heads.items()), "mean")
            )
            for key in _keys(name, model_names, None, example_weighted)
        ]


metric_types.register_metric(HeadMetric)
metric_types.register_metric(MeanPrimaryMetric)
OVERALL_METRIC = "mean_primary_metric"


def tfma_metric_config(metric: str) -> dict[str, Any]:
    """Keyword arguments of ``tfma.MetricConfig`` for one of our per-head metrics."""
    return {"class_name": "HeadMetric", "module": __name__, "config": json.dumps({"name": metric, "metric": metric})}


def tfma_overall_metric_config(heads: Sequence[Head]) -> dict[str, Any]:
    config = {"name": OVERALL_METRIC, "heads": {h.name: h.primary_metric for h in heads}}
    return {"class_name": "MeanPrimaryMetric", "module": __name__, "config": json.dumps(config)}
