"""`mtnlp predict`, `mtnlp serve` and `mtnlp evaluate` (registered into the `mtnlp` command by mtnlp/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .analysis import (PREDICT_TASKS, TASKS, TRANSLATE, analyze_outputs, format_human, parse_markers,
                       relation_outputs, translation_output)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="Query a served model (TF Serving or mtnlp serve) for one sentence",
                              description="Print each task's result for a sentence. Mark two entities with "
                                          "[[...]] to also get their relation, e.g. "
                                          "\"The [[company]] makes [[chairs]].\"")
    p.add_argument("text", help="the sentence")
    p.add_argument("--server", default=None,
                   help="host:port of the gRPC API (default $MTNLP_SERVING_GRPC or localhost:8500); with --rest, of "
                        "the REST API (default $MTNLP_SERVING_REST or localhost:8501)")
    p.add_argument("--model-name", default="mtnlp")
    p.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    p.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    p.add_argument("--task", action="append", choices=PREDICT_TASKS,
                   help="only these tasks (repeatable; default all but translate, which is only run when named)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    p.add_argument("--tls", action="store_true", help="gRPC over TLS (system roots)")
    p.set_defaults(func=cmd_predict)

    s = subparsers.add_parser("serve", help="Serve the latest pushed model of a workdir locally (gRPC + REST)",
                              description="Start mtnlp-model-server on <workdir>/serving_model/<model-name>. Binds "
                                          "127.0.0.1 unless --host says otherwise (see serving/README.md).")
    s.add_argument("--workdir", default="./workdir")
    s.add_argument("--model-name", default="mtnlp")
    s.add_argument("--port", type=int, default=8500, help="gRPC port")
    s.add_argument("--rest-port", type=int, default=8501, help="REST port (0: no REST API)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all interfaces, like TF Serving)")
    s.add_argument("--enable-batching", action="store_true")
    s.add_argument("--batching-parameters-file", default="")
    s.add_argument("--monitoring-config-file", default="")
    s.add_argument("--no-warmup", action="store_true", help="skip replaying assets.extra warmup requests")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_serve)

    e = subparsers.add_parser("evaluate", help="Score a SavedModel on labelled data through its serving signatures",
                              description="Score a pushed SavedModel (a version folder, or a model base path: its "
                                          "newest version) on a folder laid out like data/ (one sub-folder per task, "
                                          "JSON Lines of any split name) with the pipeline's metrics, through the "
                                          "signatures a client calls. Prints a per-task table.")
    e.add_argument("model_dir", metavar="MODEL_DIR")
    e.add_argument("--data", required=True, help="folder with one sub-folder per task")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    e.add_argument("--split", action="append", dest="splits", metavar="NAME",
                   help="only <task>/NAME.jsonl[.gz] files (repeatable; default: every file)")
    e.add_argument("--max-records", type=int, help="at most this many records per task")
    e.add_argument("--batch-size", type=int, default=64, help="records per signature call")
    e.set_defaults(func=cmd_evaluate)


# ----- predict ------------------------------------------------------------------------------------------------
def _to_arrays(outputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    return {k: np.asarray(v, dtype=object if _is_text(v) else None) for k, v in outputs.items()}


def _is_text(v: Any) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, (str, dict))


def run_predict(text: str, *, server: str | None = None, model_name: str = "mtnlp", rest: bool = False,
                tasks: tuple[str, ...] = TASKS, timeout: float = 30.0, tls: bool = False) -> dict[str, Any]:
    """Query the model for one sentence; the JSON-able result `mtnlp predict --json` prints."""
    import numpy as np

    from .client import RestClient, ServingClient

    marked = parse_markers(text)
    want_relation = "relation" in tasks and len(marked.spans) >= 2
    want_analysis = any(t in TASKS for t in tasks)  # `--task translate` alone needs no analyze call
    out, translated = {}, None
    if rest:
        rc = RestClient(server, model_name=model_name, timeout=timeout)
        if want_analysis:
            out = _to_arrays(rc.predict({"text": [marked.text]}, "serving_default"))
        if TRANSLATE in tasks:
            answer = rc.predict({"text": [marked.text]}, TRANSLATE)
            # a columnar REST answer is the bare value when the signature has a single output
            translated = _to_arrays(answer if isinstance(answer, dict) else {"translation": answer})
        rel = None
        if want_relation:
            (s1, e1), (s2, e2) = marked.spans[:2]
            rel = _to_arrays(rc.predict({"text": [marked.text], "e1_start": [s1], "e1_end": [e1],
                                         "e2_start": [s2], "e2_end": [e2]}, "relation"))
            # columnar REST returns per-output lists; make them batch-shaped like gRPC's
            rel = {k: np.atleast_1d(v) for k, v in rel.items()}
    else:
        with ServingClient(server, model_name=model_name, timeout=timeout, tls=tls) as gc:
            if want_analysis:
                out = gc.predict({"text": [marked.text]}, "serving_default")
            if TRANSLATE in tasks:
                translated = gc.predict({"text": [marked.text]}, TRANSLATE)
            rel = None
            if want_relation:
                (s1, e1), (s2, e2) = marked.spans[:2]
                i64 = np.int64
                rel = gc.predict({"text": [marked.text], "e1_start": np.array([s1], i64),
                                  "e1_end": np.array([e1], i64), "e2_start": np.array([s2], i64),
                                  "e2_end": np.array([e2], i64)}, "relation")
    result = analyze_outputs(out, marked.text) if want_analysis else {"text": marked.text}
    if translated is not None:
        result["translation"] = translation_output(translated)
    for task in ("sentiment", "pos"):
        if task not in tasks:
            result.pop(task, None)
    if "ner" not in tasks:
        result.pop("ner", None)
    if rel is not None:
        result["relation"] = relation_outputs(rel, marked)
    elif "relation" in tasks and marked.spans:
        result["relation"] = None
        result["relation_note"] = "mark exactly two entities with [[...]] to get their relation"
    return result


def cmd_predict(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import warnings

    warnings.filterwarnings("ignore")
    from .client import ServingClientError

    tasks = tuple(args.task) if args.task else TASKS
    try:
        result = run_predict(args.text, server=args.server, model_name=args.model_name, rest=args.rest,
                             tasks=tasks, timeout=args.timeout, tls=args.tls)
    except ValueError as e:
        print(f"mtnlp predict: {e}", file=sys.stderr)
        return 2
    except ServingClientError as e:
        where = args.server or ("REST" if args.rest else "gRPC") + " default"
        print(f"mtnlp predict: the server ({where}) answered {e.code}: {e.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_human(result, tasks))
        if result.get("relation_note"):
            print(f"Relation:  ({result['relation_note']})")
    return 0


# ----- serve --------------------------------------------------------------------------------------------------
def serve_flags(args: argparse.Namespace) -> list[str]:
    """The mtnlp-model-server command line `mtnlp serve` amounts to."""
    base = Path(args.workdir).resolve() / "serving_model" / args.model_name
    flags = [f"--model_name={args.model_name}", f"--model_base_path={base}", f"--port={args.port}",
             f"--rest_api_port={args.rest_port}", f"--bind_address={args.host}"]
    if args.enable_batching:
        flags.append("--enable_batching")
    if args.batching_parameters_file:
        flags.append(f"--batching_parameters_file={args.batching_parameters_file}")
    if args.monitoring_config_file:
        flags.append(f"--monitoring_config_file={args.monitoring_config_file}")
    if args.no_warmup:
        flags.append("--enable_model_warmup=false")
    if args.verbose:
        flags.append("--verbose")
    return flags


def cmd_serve(args: argparse.Namespace) -> int:
    base = Path(args.workdir).resolve() / "serving_model" / args.model_name
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
    if not versions:
        print(f"mtnlp serve: no pushed model under {base} (expected numeric version directories). Run the pipeline "
              f"first (`mtnlp run --workdir {args.workdir}`) or pass --workdir.", file=sys.stderr)
        return 2
    flags = serve_flags(args)
    print(f"Serving {args.model_name} (latest of versions {versions}) from {base}\n"
          f"  gRPC {args.host}:{args.port}" + (f", REST http://{args.host}:{args.rest_port}" if args.rest_port else "")
          + "\n  equivalent: mtnlp-model-server " + " ".join(flags), file=sys.stderr)
    from .model_server.main import main as server_main

    return server_main(flags)


# ----- evaluate -----------------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment()
    from .evaluate import EvaluationError, evaluate_signatures, format_table, load_signatures, read_task_data, \
        resolve_saved_model, to_json

    logs.configure_logging()
    try:
        data = read_task_data(args.data, max_records=args.max_records, splits=args.splits)
        path = resolve_saved_model(args.model_dir)
        results, skipped = evaluate_signatures(load_signatures(path), data, batch_size=args.batch_size)
    except EvaluationError as e:
        print(f"mtnlp evaluate: {e}", file=sys.stderr)
        return 2
    print(f"Model {path} on {os.path.abspath(args.data)}")
    print(format_table(results, skipped, data))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(results, skipped, data, model=path, data_dir=os.path.abspath(args.data)), f, indent=2)
        print(f"  results: {args.json}")
    return 0 if results else 1
