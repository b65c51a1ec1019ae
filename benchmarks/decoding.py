"""What beam search buys and costs: BLEU, decoding latency and example translations of a trained model at
several beam widths.

    python benchmarks/decoding.py --workdir workdir                 # after `mtnlp run`
    python benchmarks/decoding.py --workdir /tmp/w --beams 1 2 4 8 --pairs 1000

The beam width is a property of the exported graph (``serving.beam_width``), so the script rebuilds the
serving signatures of the workdir's newest trained model (the Trainer's ``Format-Keras`` model over the
newest Transform graph) once per width, exactly as the Trainer exports them, and for each width:

- corpus BLEU (sacreBLEU's, as the Evaluator and ``mtnlp evaluate`` compute it) of the ``translate``
  signature on the first ``--pairs`` validation pairs of ``<data>/translation``;
- latency of ``translate`` in process: one sentence per call (p50, p90 over ``--requests`` sentences) and
  per sentence in batches of 64;
- the first ``--examples`` validation pairs with reference and output (not chosen: the first ones).

Prints the tables with the machine line and writes benchmarks/decoding_results.json (``--output``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, percentile, quiet_tensorflow, table, write_json  # noqa: E402
from benchmarks.inference import MissingRunError, newest_transform_graph  # noqa: E402

quiet_tensorflow()


def newest_keras_model(workdir: Path) -> Path:
    """The Keras model the workdir's newest Trainer run saved beside its SavedModel (for warm starts)."""
    candidates = sorted(
        (workdir / "pipeline_root" / "Trainer" / "model").glob("*/Format-Keras/model.keras"),
        key=lambda p: int(p.parts[-3]),
    )
    if not candidates:
        raise MissingRunError(
            f"no trained model in {workdir}/pipeline_root/Trainer: run `mtnlp run --workdir {workdir}` first"
        )
    return candidates[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--workdir", type=Path, default=Path("workdir"), help="a workdir of a finished `mtnlp run` (default ./workdir)"
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO / "data",
        help="data folder with translation/validation.jsonl.gz (default: the bundled data)",
    )
    ap.add_argument(
        "--beams", type=int, nargs="+", default=[1, 4], help="beam widths to compare (default 1 4; 1 is greedy)"
    )
    ap.add_argument(
        "--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha of the beams (default 0.6)"
    )
    ap.add_argument("--pairs", type=int, default=1000, help="validation pairs scored for BLEU (default 1000)")
    ap.add_argument("--requests", type=int, default=100, help="one-sentence calls timed per width (default 100)")
    ap.add_argument(
        "--examples", type=int, default=10, help="first validation pairs shown with their outputs (default 10)"
    )
    ap.add_argument(
        "--output",
        type=Path,
        default=default_output("decoding"),
        help="JSON results file (default benchmarks/decoding_results.json)",
    )
    ns = ap.parse_args()
    try:
        transform_graph, keras_path = newest_transform_graph(ns.workdir), newest_keras_model(ns.workdir)
    except MissingRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    import mtnlp.model.layers  # noqa: F401 - registers the custom layers for loading
    from mtnlp.model.signatures import ServingModule
    from mtnlp.model.tasks import TRANSLATION, registered_tasks
    from mtnlp.serving.evaluate import evaluate_signatures, read_task_data

    machine = Machine()
    trained = keras.saving.load_model(str(keras_path), compile=False)
    tft_output = tft.TFTransformOutput(str(transform_graph))
    tasks = [t for t in registered_tasks() if all(h.name in trained.output for h in t.heads)]
    data = read_task_data(str(ns.data), [TRANSLATION], max_records=ns.pairs, splits=["validation"])
    pairs = data[TRANSLATION.name].records
    sources = [r["source"] for r in pairs]
    print(f"{machine.line()}\nmodel {keras_path}; {len(pairs)} validation pairs", flush=True)

    results = {}
    for width in ns.beams:
        signatures = ServingModule(
            trained, tft_output, tasks, beam_width=width, length_penalty=ns.length_penalty
        ).signatures()
        translate = signatures[TRANSLATION.heads[0].signature]
        translate(text=tf.constant(sources[:2]))  # warm up
        scored, _ = evaluate_signatures(signatures, data)
        one = []
        for source in (sources * (ns.requests // max(len(sources), 1) + 1))[: ns.requests]:
            start = time.perf_counter()
            translate(text=tf.constant([source]))
            one.append((time.perf_counter() - start) * 1000)
        batch = sources[:64]
        start = time.perf_counter()
        outputs = translate(text=tf.constant(batch))["translation"].numpy()
        per_sentence_in_batch = (time.perf_counter() - start) * 1000 / len(batch)
        examples = translate(text=tf.constant(sources[: ns.examples]))["translation"].numpy()
        results[width] = {
            "bleu": scored[0].metrics["bleu"],
            "pairs": scored[0].examples,
            "decode_seconds": round(scored[0].seconds, 1),
            "ms_one_sentence_p50": statistics.median(one),
            "ms_one_sentence_p90": percentile(one, 90),
            "ms_per_sentence_in_batch_of_64": per_sentence_in_batch,
            "examples": [
                {"source": s, "reference": r["target"], "output": o.decode()}
                for s, r, o in zip(sources, pairs, examples)
            ],
        }
        del outputs
        print(f"beam {width}: BLEU {results[width]['bleu']:.4f}", flush=True)

    print(
        table(
            ["beam", "BLEU (sacreBLEU/100)", "pairs", "one sentence p50 ms", "p90 ms", "ms/sentence in batch of 64"],
            [
                [
                    w,
                    f"{r['bleu']:.4f}",
                    r["pairs"],
                    f"{r['ms_one_sentence_p50']:.1f}",
                    f"{r['ms_one_sentence_p90']:.1f}",
                    f"{r['ms_per_sentence_in_batch_of_64']:.2f}",
                ]
                for w, r in results.items()
            ],
        )
    )
    widest = max(results)
    print(
        table(
            ["source", "reference", f"beam {widest}"],
            [[e["source"], e["reference"], e["output"]] for e in results[widest]["examples"]],
        )
    )
    write_json(
        ns.output,
        machine,
        {
            "model": str(keras_path),
            "transform_graph": str(transform_graph),
            "length_penalty": ns.length_penalty,
            "beams": results,
        },
    )
    print(f"wrote {ns.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
