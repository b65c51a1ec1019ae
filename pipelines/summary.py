"""The run summary: what each component did, the new model's per-head metrics, blessing and push.

Everything is read back from ML Metadata and the run's artifacts, so the summary describes what the
orchestrator recorded (cached components included), not what the runner believes it ran.
"""

from __future__ import annotations

import json
from typing import Any

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


# The custom property of a run's ``pipeline_run`` context that holds its effective settings (JSON).
CONFIG_PROPERTY = "mtnlp_config"


def _store(metadata_path: str, writable: bool = False) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
        if writable
        else metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    )
    return mlmd.MetadataStore(config)


def _latest_run(store: mlmd.MetadataStore) -> metadata_store_pb2.Context | None:
    runs = store.get_contexts_by_type("pipeline_run")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)) if runs else None


def record_config(metadata_path: str, config: dict[str, Any], started: float | None = None) -> bool:
    """Store the effective settings on the latest run's ``pipeline_run`` context (custom property
    ``mtnlp_config``, JSON). False when the store has no run, or none created since ``started`` (a time.time();
    a run that failed before it reached the orchestrator). The Trainer's execution also holds them, as its
    ``custom_config`` property (absent from runs that stopped before the Trainer)."""
    store = _store(metadata_path, writable=True)
    run = _latest_run(store)
    if run is None or (started is not None and run.create_time_since_epoch < int(started * 1000) - 1000):
        return False
    run.custom_properties[CONFIG_PROPERTY].string_value = json.dumps(config, sort_keys=True)
    store.put_contexts([run])
    return True


def recorded_config(metadata_path: str, run_id: str | None = None) -> dict[str, Any] | None:
    """The effective settings of a run (the latest, or the ``pipeline_run`` context named ``run_id``) as
    ``record_config`` stored them; None for a run recorded without them."""
    store = _store(metadata_path)
    run = store.get_context_by_type_and_name("pipeline_run", run_id) if run_id else _latest_run(store)
    if run is None or CONFIG_PROPERTY not in run.custom_properties:
        return None
    return json.loads(run.custom_properties[CONFIG_PROPERTY].string_value)


def _property(artifact: metadata_store_pb2.Artifact, name: str) -> Any:
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    return getattr(value, value.WhichOneof("value"))


def _metrics(evaluation_uri: str) -> tuple[dict, dict]:
    """({head: {metric: value}}, {head: {metric: change vs baseline}}) from a TFMA evaluation."""
    import tensorflow_model_analysis as tfma

    values: dict[str, dict[str, float]] = {}
    deltas: dict[str, dict[str, float]] = {}
    for metrics_for_slice in tfma.load_metrics(evaluation_uri):
        if metrics_for_slice.slice_key.single_slice_keys:
            continue  # the overall slice only
        for entry in metrics_for_slice.metric_keys_and_values:
            key = entry.key
            if key.model_name == "baseline" or not entry.value.HasField("double_value"):
                continue
            target = deltas if key.is_diff else values
            target.setdefault(key.output_name or "overall", {})[key.name] = round(entry.value.double_value.value, 4)
    return values, deltas


def _validation_failures(evaluation_uri: str) -> list[str]:
    import tensorflow_model_analysis as tfma

    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception:  # noqa: BLE001 - no validation result when the Evaluator had no thresholds
        return []
    failures = []
    for slice_failures in result.metric_validations_per_slice:
        for failure in slice_failures.failures:
            failures.append(_describe_failure(failure))
    return failures


def _describe_failure(failure) -> str:
    """e.g. "overall/mean_primary_metric: change -0.0003 vs baseline, needs >= +0.0000" (TFMA's own
    message is often empty)."""
    key, threshold = failure.metric_key, failure.metric_threshold
    name = f"{key.output_name or 'overall'}/{key.name}"
    value = failure.metric_value.double_value.value
    if key.is_diff or threshold.HasField("change_threshold"):
        bound = threshold.change_threshold.absolute.value
        return f"{name}: change {value:+.5f} vs baseline, needs >= {bound:+.5f}"
    if threshold.value_threshold.HasField("lower_bound"):
        return f"{name}: {value:.4f}, needs >= {threshold.value_threshold.lower_bound.value:.4f}"
    return f"{name}: {value:.4f} {failure.message}".strip()


def _training_facts(model_run_uri: str) -> dict[str, Any]:
    import tensorflow as tf

    path = f"{model_run_uri}/training_config.json"
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        facts = json.load(f)
    return {"train_steps": facts.get("train_steps"), "warm_start": facts.get("warm_start")}


def summarize_latest_run(metadata_path: str) -> dict[str, Any]:
    store = _store(metadata_path)
    run = _latest_run(store)
    if run is None:
        return {"components": []}
    node_type = store.get_context_type("node").id
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}

    summary: dict[str, Any] = {"run_id": run.name, "components": []}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
        component = nodes[0].split(".", 1)[-1] if nodes else execution.type
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        summary["components"].append({"component": component, "state": state, "seconds": round(seconds, 1)})

        events = store.get_events_by_execution_ids([execution.id])
        outputs = store.get_artifacts_by_id([e.artifact_id for e in events if e.type in _OUTPUT_EVENTS])
        for artifact in outputs:
            kind = artifact_types.get(artifact.type_id)
            if kind == "ModelEvaluation":
                summary["metrics"], deltas = _metrics(artifact.uri)
                if deltas:
                    summary["metric_deltas"] = deltas
                summary["evaluation_uri"] = artifact.uri
            elif kind == "ModelBlessing":
                summary["blessed"] = bool(_property(artifact, "blessed"))
            elif kind == "PushedModel":
                summary["pushed"] = bool(_property(artifact, "pushed"))
                if summary["pushed"]:
                    summary["pushed_to"] = _property(artifact, "pushed_destination")
                    summary["pushed_version"] = int(_property(artifact, "pushed_version"))
            elif kind == "ModelRun":
                summary["tensorboard_logdir"] = artifact.uri
                summary.update(_training_facts(artifact.uri))
            elif kind == "Model" and component == "ServedBaseline":
                from mtnlp.components.served_baseline import BASELINE_FROM, SERVED_VERSION

                summary["baseline_version"] = _property(artifact, SERVED_VERSION) or None
                summary["baseline_from"] = _property(artifact, BASELINE_FROM) or None
            elif kind == "Examples" and component == "JsonlExampleGen":
                from mtnlp.components.jsonl_example_gen.executor import SPANS_PROPERTY

                spans = _property(artifact, SPANS_PROPERTY)
                summary["spans"] = [int(s) for s in spans.split(",")] if spans else []
            elif kind == "mtnlp.RejectedRecords":
                from mtnlp.components.jsonl_example_gen.executor import read_rejected_summary

                summary["ingest"] = read_rejected_summary(artifact.uri)
                summary["rejected_records_uri"] = artifact.uri
    if summary.get("blessed") is False and "evaluation_uri" in summary:
        summary["blessing_failures"] = _validation_failures(summary["evaluation_uri"])
    return summary


def latest_transform_outputs(metadata_path: str) -> dict[str, str]:
    """URIs of the newest Transform execution's outputs, by output key ("transform_graph",
    "transformed_examples", ...), as ML Metadata recorded them (a cached run's included)."""
    store = _store(metadata_path)
    graphs = store.get_artifacts_by_type("TransformGraph")
    if not graphs:
        raise LookupError(f"{metadata_path} records no Transform output")
    newest = max(graphs, key=lambda a: a.id)
    producers = [e.execution_id for e in store.get_events_by_artifact_ids([newest.id]) if e.type in _OUTPUT_EVENTS]
    events = [e for e in store.get_events_by_execution_ids(producers[-1:]) if e.type in _OUTPUT_EVENTS]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    return {e.path.steps[0].key: artifacts[e.artifact_id].uri for e in events if e.path.steps}


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        "",
        f"Pipeline run {summary.get('run_id', '?')} ({summary.get('status', '?')}, "
        f"{summary.get('wall_seconds', 0):.0f} s wall)",
    ]
    lines.append(f"  {'component':<32} {'state':<10} {'seconds':>8}")
    for c in summary["components"]:
        lines.append(f"  {c['component']:<32} {c['state']:<10} {c['seconds']:>8.1f}")
    changes = summary.get("config_changes")
    if changes:
        shown = ", ".join(f"{key}={json.dumps(change['effective'])}" for key, change in changes.items())
        lines.append(f"  settings changed from the {summary.get('profile', '?')} profile: {shown}")
    if summary.get("spans"):
        lines.append(f"  spans read: {', '.join(map(str, summary['spans']))} (0 = the data folder's own files)")
    if summary.get("baseline_version"):
        lines.append(f"  baseline: served version {summary['baseline_version']} ({summary['baseline_from']})")
    elif summary.get("baseline_from"):
        lines.append(
            f"  baseline: nothing served; the newest blessed model in ML Metadata ({summary['baseline_from']})"
        )
    elif "baseline_version" in summary:
        lines.append("  baseline: none (nothing served or blessed yet, or the model does not fit the tasks)")
    if "warm_start" in summary:
        lines.append(f"  trainer: {summary['warm_start'] or 'trained from scratch'} ({summary['train_steps']} steps)")
    for split, files in summary.get("ingest", {}).items():
        total = sum(f["records"] for f in files.values())
        rejected = sum(f["rejected"] for f in files.values())
        lines.append(f"  ingest {split}: {total - rejected} records, {rejected} rejected")
    if summary.get("metrics"):
        lines.append("  metrics of the new model (validation split):")
        deltas = summary.get("metric_deltas", {})
        for head, metrics in sorted(summary["metrics"].items()):
            shown = []
            for name, value in metrics.items():
                if name.startswith("example_count") or name.startswith("weighted_example_count"):
                    continue
                delta = deltas.get(head, {}).get(name)
                shown.append(f"{name}={value:.4f}" + (f" ({delta:+.4f} vs baseline)" if delta is not None else ""))
            lines.append(f"    {head:<11} " + "  ".join(shown))
    if "blessed" in summary:
        lines.append(f"  blessed: {'yes' if summary['blessed'] else 'no'}")
        for failure in summary.get("blessing_failures", []):
            lines.append(f"    failed: {failure}")
    states = {c["component"]: c["state"] for c in summary["components"]}
    if states and all(state == "CACHED" for state in states.values()):
        lines.append("  nothing new: every component was served from the cache")
    if summary.get("pushed"):
        cached = " (cached: pushed by an earlier run)" if states.get("VersionedPusher") == "CACHED" else ""
        lines.append(f"  pushed: version {summary['pushed_version']} -> {summary['pushed_to']}{cached}")
    elif "pushed" in summary:
        lines.append("  pushed: no (not blessed); the serving model is unchanged")
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
