"""Inference latency as a client sees it: one sentence through every task of the multi-task model in one request,
against the single-task models of the sentence- and token-level tasks (sentiment, POS, NER) one after another.

    python benchmarks/inference.py                         # the Transform output of ./workdir (`mtnlp run` first)
    python benchmarks/inference.py --workdir /tmp/w --requests 500
    python benchmarks/inference.py --use-pushed            # the MTL model: the workdir's latest pushed model

Every model is a serving SavedModel exported with ``model.signatures.export_serving_model`` over the Transform
graph of the workdir's newest run (<workdir>/pipeline_root/Transform/transform_graph/<id>/), so each request
includes the in-graph tokenization, as it does in TF Serving. The MTL model has every head of every task; each
single-task (STL) model has one head (``sentiment``, ``pos``, ``ner``) on the same encoder (the profile's
ModelConfig). Weights are untrained (latency does not depend on them); with ``--use-pushed`` the MTL model is
the trained, pushed one (its own encoder size). All are loaded with ``tf.saved_model.load`` in this process,
warmed up, then called on one real sentence at a time (validation sentences of the sentiment data) through
their ``analyze`` signature: for each sentence the MTL call and the three STL calls, in alternating order.
Prints p50 and mean per model and the ratio MTL / (sum of the three STL) with its target (<= 0.45), states the
machine, and writes benchmarks/inference_results.json (``--output``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, percentile, quiet_tensorflow, table, write_json  # noqa: E402

quiet_tensorflow()

STL_HEADS = ("sentiment", "pos", "ner")
TARGET_RATIO = 0.45
SIGNATURE = "analyze"


class MissingRunError(RuntimeError):
    pass


def newest_transform_graph(workdir: Path) -> Path:
    """The Transform output of the workdir's newest pipeline run, as ML Metadata recorded it."""
    from mtnlp.pipelines.summary import latest_transform_outputs

    metadata = workdir / "metadata.sqlite"
    try:
        return Path(latest_transform_outputs(str(metadata))["transform_graph"])
    except (LookupError, OSError, RuntimeError) as e:
        raise MissingRunError(
            f"no Transform output recorded in {metadata} ({e}): run the pipeline first "
            f"(`mtnlp run --workdir {workdir}`), or pass --workdir of a finished run"
        ) from None


def latest_pushed_model(workdir: Path, model_name: str = "mtnlp") -> Path:
    base = workdir / "serving_model" / model_name
    versions = sorted(int(p.name) for p in base.glob("*") if p.name.isdigit()) if base.is_dir() else []
    if not versions:
        raise MissingRunError(f"no pushed model in {base}: run `mtnlp run --workdir {workdir}` first")
    return base / str(versions[-1])


def sample_sentences(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]


def export_untrained(tasks, tf_transform_output, model_config, transform_config, export_dir: Path) -> int:
    """Builds the model of ``tasks``' heads (untrained), exports its serving SavedModel; its parameter count."""
    from mtnlp.model.network import build_model
    from mtnlp.model.signatures import export_serving_model
    from mtnlp.model.tasks import all_heads
    from mtnlp.model.training import target_vocabulary_sizes, vocabulary_size

    heads = all_heads(tasks)
    oov = transform_config.num_oov_buckets
    model = build_model(
        heads,
        vocabulary_size=vocabulary_size(tf_transform_output, oov),
        max_length=transform_config.max_length,
        target_vocabulary_sizes=target_vocabulary_sizes(tf_transform_output, heads, oov),
        max_target_length=transform_config.max_target_length,
        subword_buckets=transform_config.subword_buckets,
        **dataclasses.asdict(model_config),
    )
    export_serving_model(model, tf_transform_output, tasks, str(export_dir))
    return model.count_params()


def with_vocabularies(tasks, tf_transform_output):
    """The tasks whose heads have the vocabularies they need in this Transform output (older runs lack some)."""

    def has_vocabulary(head) -> bool:
        try:
            head.output_vocabulary_size(tf_transform_output, 0)
            return True
        except (ValueError, KeyError):
            return False

    return tuple(t for t in tasks if all(has_vocabulary(h) for h in t.heads))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("workdir"), help="a finished pipeline run (default ./workdir)")
    ap.add_argument("--profile", choices=("quick", "full"), default="quick", help="whose ModelConfig (encoder size)")
    ap.add_argument("--use-pushed", action="store_true", help="MTL: the workdir's latest pushed (trained) model")
    ap.add_argument("--requests", type=int, default=300, help="timed sentences (each through MTL and the 3 STL)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls of each model first")
    ap.add_argument(
        "--sentences",
        type=Path,
        default=REPO / "data" / "sentiment" / "validation.jsonl.gz",
        help="JSON Lines (.gz) with a `text` field; the first 500 are cycled through",
    )
    ap.add_argument("--output", type=Path, default=default_output("inference"))
    ns = ap.parse_args()

    try:
        transform_graph = newest_transform_graph(ns.workdir.resolve())
        pushed = latest_pushed_model(ns.workdir.resolve()) if ns.use_pushed else None
    except MissingRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import tensorflow as tf
    import tensorflow_transform as tft

    from mtnlp.model.serving_ops import load_text_ops
    from mtnlp.model.tasks import all_heads, registered_tasks
    from mtnlp.pipelines.config import get_config

    machine = Machine()
    config = get_config(ns.profile)
    tf_transform_output = tft.TFTransformOutput(str(transform_graph))
    sentences = sample_sentences(ns.sentences, 500)
    scratch = Path(tempfile.mkdtemp(prefix="mtnlp-inference-"))
    models: dict[str, dict] = {}  # what each model is
    paths: dict[str, Path] = {}
    try:
        if pushed:
            models["mtl"], paths["mtl"] = {"pushed": str(pushed), "trained": True}, pushed
        else:
            mtl_tasks = with_vocabularies(registered_tasks(), tf_transform_output)
            params = export_untrained(mtl_tasks, tf_transform_output, config.model, config.transform, scratch / "mtl")
            models["mtl"] = {"trained": False, "parameters": params, "heads": [h.name for h in all_heads(mtl_tasks)]}
            paths["mtl"] = scratch / "mtl"
        for name in STL_HEADS:
            task = next(t for t in registered_tasks() if any(h.name == name for h in t.heads))
            single = dataclasses.replace(task, heads=tuple(h for h in task.heads if h.name == name))
            params = export_untrained((single,), tf_transform_output, config.model, config.transform, scratch / name)
            models[name], paths[name] = {"trained": False, "parameters": params, "heads": [name]}, scratch / name
        print(f"exported {len(models)} SavedModels", flush=True)

        load_text_ops()  # the WordPiece op of the translation target side
        calls = {name: tf.saved_model.load(str(path)).signatures[SIGNATURE] for name, path in paths.items()}
        inputs = [tf.constant([s]) for s in sentences]
        for fn in calls.values():
            for i in range(ns.warmup):
                fn(text=inputs[i % len(inputs)])
        ms: dict[str, list[float]] = {name: [] for name in calls}
        for i in range(ns.requests):
            x = inputs[i % len(inputs)]
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            for name in order:
                start = time.perf_counter()
                calls[name](text=x)
                ms[name].append((time.perf_counter() - start) * 1e3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ms["stl_sum"] = [sum(values) for values in zip(*(ms[name] for name in STL_HEADS))]
    latency = {
        name: {"p50_ms": percentile(v, 50), "mean_ms": statistics.fmean(v), "p99_ms": percentile(v, 99)}
        for name, v in ms.items()
    }
    summary = {
        "mtl_over_stl_sum_p50": latency["mtl"]["p50_ms"] / latency["stl_sum"]["p50_ms"],
        "mtl_over_stl_sum_mean": latency["mtl"]["mean_ms"] / latency["stl_sum"]["mean_ms"],
        "target": f"<= {TARGET_RATIO}",
    }
    summary["meets_target"] = summary["mtl_over_stl_sum_p50"] <= TARGET_RATIO

    m = config.model
    print(machine.line())
    print(
        f"Signature `{SIGNATURE}`, one sentence per call, in process (tf.saved_model.load); {ns.requests} "
        f"sentences after {ns.warmup} warmup calls per model; Transform graph {transform_graph}"
    )
    print(
        f"Encoder ({ns.profile} profile): d={m.embedding_dim} f={m.intermediate_dim} L={m.num_layers}; "
        + ("MTL: the pushed, trained model; STL: untrained" if pushed else "untrained weights (latency only)")
    )
    labels = {
        "mtl": "MTL (pushed)" if pushed else f"MTL ({', '.join(models['mtl']['heads'])})",
        "stl_sum": "STL sentiment + pos + ner",
    }
    rows = [
        [labels.get(name, f"STL {name}"), f"{r['p50_ms']:.2f}", f"{r['mean_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        for name, r in latency.items()
    ]
    print(table(["model", "p50 ms", "mean ms", "p99 ms"], rows))
    verdict = "meets" if summary["meets_target"] else "misses"
    print(
        f"MTL / sum of the three STL: {summary['mtl_over_stl_sum_p50']:.2f}x at p50, "
        f"{summary['mtl_over_stl_sum_mean']:.2f}x mean (target <= {TARGET_RATIO}: {verdict} it at p50)"
    )
    write_json(
        ns.output,
        machine,
        {
            "workdir": str(ns.workdir.resolve()),
            "transform_graph": str(transform_graph),
            "profile": ns.profile,
            "model_config": dataclasses.asdict(config.model),
            "signature": SIGNATURE,
            "requests": ns.requests,
            "warmup": ns.warmup,
            "models": models,
            "latency": latency,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
