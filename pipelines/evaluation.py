"""The Evaluator's TFMA configuration, derived from the task heads and the blessing gates.

TFMA runs the candidate's ``serving_tf_example`` signature on the raw evaluation examples and reads
labels and per-head weights from the ``transform_features`` signature, so it scores exactly what
the Trainer optimised. Each head gets its metrics from ``model/tfma_metrics.py``; its primary metric
carries the gate: an absolute lower bound, and once a blessed model exists, at most ``tolerance``
below that baseline.
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from mtnlp.model.signatures import EXAMPLES_SIGNATURE, TRANSFORM_SIGNATURE
from mtnlp.model.tasks import all_heads, select_tasks
from mtnlp.model.tfma_metrics import tfma_metric_config, tfma_overall_metric_config
from mtnlp.pipelines.config import PipelineConfig
from mtnlp.sections import HeadGate


def _threshold(gate: HeadGate) -> tfma.MetricThreshold:
    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gate.lower_bound}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -gate.tolerance}
        ),
    )


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    heads = all_heads(select_tasks(config.tasks))
    metrics_specs = []
    for head in heads:
        metric_configs = []
        for metric in head.metrics:
            gate = config.heads[head.name].gate if metric == head.primary_metric else None
            metric_configs.append(
                tfma.MetricConfig(**tfma_metric_config(metric), threshold=_threshold(gate) if gate else None)
            )
        metrics_specs.append(tfma.MetricsSpec(output_names=[head.name], metrics=metric_configs))
    overall = tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": config.min_overall_improvement}
        )
    )
    metrics_specs.append(
        tfma.MetricsSpec(metrics=[tfma.MetricConfig(**tfma_overall_metric_config(heads), threshold=overall)])
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=EXAMPLES_SIGNATURE,
                preprocessing_function_names=[TRANSFORM_SIGNATURE],
                label_keys={h.name: h.eval_label_key for h in heads},
                example_weight_keys={h.name: h.eval_weight_key for h in heads},
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=metrics_specs,
    )
