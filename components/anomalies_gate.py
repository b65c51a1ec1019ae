"""Stops the pipeline when ExampleValidator found anomalies, saying which feature and why.

TFX's ExampleValidator records anomalies but lets the pipeline go on; training on data that breaks
the schema (a new label value, a missing feature) is exactly what the schema is there to prevent.
"""

import os

from tensorflow_data_validation.utils import anomalies_util
from tfx import v1 as tfx
from tfx.types import artifact_utils


class DataAnomaliesError(RuntimeError):
    pass


def describe_anomalies(anomalies_uri: str, split_names: "list[str]") -> "list[str]":
    problems = []
    for split in split_names:
        anomalies = anomalies_util.load_anomalies_binary(os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb"))
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(r.description or r.short_description for r in info.reason) or info.description
            problems.append(f"  split {split!r}, feature {feature!r}: {reasons}")
        if anomalies.HasField("dataset_anomaly_info"):
            reasons = "; ".join(r.description for r in anomalies.dataset_anomaly_info.reason)
            problems.append(f"  split {split!r}, dataset: {reasons}")
    return problems


def check_anomalies(anomalies_uri: str, split_names: "list[str]") -> None:
    problems = describe_anomalies(anomalies_uri, split_names)
    if problems:
        raise DataAnomaliesError(
            "The data does not match the schema (pipelines/schema/schema.pbtxt); training stopped:\n"
            + "\n".join(problems)
        )


@tfx.dsl.components.component
def AnomaliesGate(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]) -> None:
    """Fails if the ExampleValidator's anomalies are not empty."""
    check_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
