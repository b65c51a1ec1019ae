"""The TFMA adapter of model/tfma_metrics.py: how it feeds TFMA's elements to the scorers of model/scoring.py,
and the names saved TFMA configs rely on. The scorers themselves are tested in tests/test_scoring.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

import mtnlp.model.tfma_metrics
from mtnlp.model.scoring import make_scorer
from mtnlp.model.tasks import NER_TAGS, TAGGING, all_heads
from mtnlp.model.tfma_metrics import _add_example, tfma_metric_config, tfma_overall_metric_config

NER = TAGGING.heads[1]


def test_a_tfma_element_without_labels_for_a_head_is_not_scored():
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


def test_saved_tfma_configs_keep_naming_model_metrics():
    assert tfma_metric_config("entity_f1") == {
        "class_name": "HeadMetric",
        "module": "mtnlp.model.tfma_metrics",
        "config": json.dumps({"name": "entity_f1", "metric": "entity_f1"}),
    }
    heads = all_heads()
    overall = tfma_overall_metric_config(heads)
    assert (overall["class_name"], overall["module"]) == ("MeanPrimaryMetric", "mtnlp.model.tfma_metrics")
    assert json.loads(overall["config"]) == {
        "name": "mean_primary_metric",
        "heads": {h.name: h.primary_metric for h in heads},
    }
    assert (
        mtnlp.model.tfma_metrics.HeadMetric.__module__
        == mtnlp.model.tfma_metrics.MeanPrimaryMetric.__module__
        == "mtnlp.model.tfma_metrics"
    )


def test_the_combiner_merges_scorers_like_one_pass():
    class Element:
        def __init__(self, labels, predicted):
            self.labels, self.predicted = labels, predicted

        def get_labels(self, model_name, head):
            return np.array(self.labels)

        def get_predictions(self, model_name, head):
            return np.eye(len(NER_TAGS))[self.predicted]

        def get_example_weights(self, model_name, head):
            return None

    key = metric_types.MetricKey(name="entity_f1", output_name="ner")
    combiner = mtnlp.model.tfma_metrics._ScorersCombiner(key, [("ner", "entity_f1")])
    elements = [Element([1, 2, 0], [1, 2, 0]), Element([1, 0, 1], [1, 0, 0]), Element([0, 1, 2], [0, 3, 4])]
    halves = [combiner.create_accumulator(), combiner.create_accumulator()]
    for i, element in enumerate(elements):
        combiner.add_input(halves[i % 2], element)
    merged = combiner.extract_output(combiner.merge_accumulators(halves))
    single = combiner.create_accumulator()
    for element in elements:
        combiner.add_input(single, element)
    assert merged == combiner.extract_output(single)
    # gold PER[0:2] | PER[0:1], PER[2:3] | PER[1:3]; predicted PER[0:2] | PER[0:1] | ORG[1:3]:
    # correct 2, predicted 3, gold 4 -> P = 2/3, R = 1/2, F1 = 4/7
    assert merged[key] == pytest.approx(4 / 7)
