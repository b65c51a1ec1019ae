"""`mtnlp predict`, `mtnlp serve` and `mtnlp evaluate` (registered into the `mtnlp` command by mtnlp/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mtnlp.model import contract
from mtnlp.model.heads import Head
from mtnlp.model.scoring import as_text
from mtnlp.model.tasks import registered_tasks

from .analysis import (
    Marked,
    entity_pair_spans,
    format_human,
    head_choices,
    needs_marked_entities,
    parse_markers,
    select_heads,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="Query a served model (TF Serving or mtnlp serve) for sentences",
        description="Print each task's result for each sentence (one request per batch of "
        "sentences). Sentences come from the arguments ('-' reads stdin, one per "
        "line) and then from each --file (one per line; blank lines are skipped). "
        "Mark two entities with [[...]] to also get their relation, e.g. "
        '"The [[company]] makes [[chairs]]."',
    )
    p.add_argument(
        "sentences",
        nargs="*",
        metavar="SENTENCE",
        help="sentences to analyze; '-' reads them from stdin, one per line (default: none; then --file)",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        dest="files",
        metavar="FILE",
        help="a UTF-8 text file with one sentence per line; repeatable (default: none)",
    )
    p.add_argument(
        "--server",
        default=None,
        help="host:port of the gRPC API (default $MTNLP_SERVING_GRPC or localhost:8500); with --rest, of "
        "the REST API (default $MTNLP_SERVING_REST or localhost:8501)",
    )
    p.add_argument("--model-name", default="mtnlp", help="the served model's name")
    p.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    p.add_argument("--json", action="store_true", help="print JSON Lines: one JSON object per sentence (for machines)")
    p.add_argument(
        "--task",
        action="append",
        choices=list(head_choices()),
        help="only these heads (repeatable; default all but translate, which is only run when named; "
        "relation runs for sentences with two [[...]] entities, and named, needs them in every one)",
    )
    p.add_argument("--batch-size", type=positive_integer, default=32, help="sentences per request")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    p.add_argument("--tls", action="store_true", help="gRPC over TLS (system roots)")
    p.set_defaults(func=cmd_predict)

    s = subparsers.add_parser(
        "serve",
        help="Serve the latest pushed model of a workdir locally (gRPC + REST)",
        description="Start mtnlp-model-server on <workdir>/serving_model/<model-name>. Binds "
        "loopback (127.0.0.1 and ::1) unless --host says otherwise, refuses the "
        "ReloadConfig RPC and serves only models under the workdir's serving_model "
        "folder (see serving/README.md, Security).",
    )
    s.add_argument("--workdir", default="./workdir", help="the pipeline's workdir (its serving_model/ is served)")
    s.add_argument("--model-name", default="mtnlp", help="the model's name (serving_model/<name>/, the API's name)")
    s.add_argument("--port", type=int, default=8500, help="gRPC port")
    s.add_argument("--rest-port", type=int, default=8501, help="REST port (0: no REST API)")
    s.add_argument(
        "--host",
        default=LOOPBACK,
        help="comma-separated addresses to bind (default: IPv4 and IPv6 loopback; 0.0.0.0: all "
        "interfaces, like TF Serving)",
    )
    s.add_argument(
        "--allow-reload-config-rpc",
        action="store_true",
        help="accept ModelService/HandleReloadConfigRequest (TF Serving's default; off here)",
    )
    s.add_argument(
        "--model-root",
        action="append",
        dest="model_roots",
        metavar="DIR",
        help="directory model base paths must lie in (repeatable; default <workdir>/serving_model)",
    )
    s.add_argument("--enable-batching", action="store_true", help="batch concurrent requests (TF Serving's flag)")
    s.add_argument(
        "--batching-parameters-file",
        default="",
        help="BatchingParameters text proto for --enable-batching (default: built-in parameters)",
    )
    s.add_argument(
        "--monitoring-config-file",
        default="",
        help="MonitoringConfig text proto, e.g. Prometheus metrics on the REST port (default: none)",
    )
    s.add_argument("--no-warmup", action="store_true", help="skip replaying assets.extra warmup requests")
    s.add_argument("--verbose", action="store_true", help="show TensorFlow's and the server's detailed logs")
    s.set_defaults(func=cmd_serve)

    e = subparsers.add_parser(
        "evaluate",
        help="Score a SavedModel on labelled data through its serving signatures",
        description="Score a pushed SavedModel (a version folder, or a model base path: its "
        "newest version) on a folder laid out like data/ (one sub-folder per task, "
        "JSON Lines of any split name) with the pipeline's metrics, through the "
        "signatures a client calls. Prints a per-task table.",
    )
    e.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a SavedModel version folder, or a model base path (its newest version)"
    )
    e.add_argument("--data", required=True, help="folder with one sub-folder per task (required)")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE (default: no file)")
    e.add_argument(
        "--split",
        action="append",
        dest="splits",
        metavar="NAME",
        help="only <task>/NAME.jsonl[.gz] files (repeatable; default: every file)",
    )
    e.add_argument("--max-records", type=int, help="at most this many records per task (default: all)")
    e.add_argument("--batch-size", type=int, default=64, help="records per signature call")
    e.set_defaults(func=cmd_evaluate)


# ----- predict ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sentence:
    text: str  # as given, markers included
    origin: str  # where it came from, for messages: "argument 2", "line 3 of stdin", "line 4 of in.txt"


class PredictInputError(ValueError):
    """Input that cannot be sent (no sentences, an empty one, bad markers); the message says which and where."""


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_sentences(arguments: Sequence[str], files: Sequence[str] = (), stdin: TextIO | None = None) -> list[Sentence]:
    """Each argument ('-': every line of stdin), then every line of each file. Blank lines of stdin and files are
    skipped; an unreadable file or no sentences at all is a PredictInputError."""
    sentences: list[Sentence] = []
    for number, argument in enumerate(arguments, 1):
        if argument == "-":
            sentences += _lines((stdin or sys.stdin).read(), "stdin")
        else:
            sentences.append(Sentence(argument.strip(), f"argument {number}"))  # an empty one is refused later
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                sentences += _lines(f.read(), path)
        except (OSError, UnicodeDecodeError) as e:
            raise PredictInputError(f"cannot read {path}: {e}") from None
    if not sentences:
        blank = " (the input given had only blank lines)" if files or arguments else ""
        raise PredictInputError(
            f"no sentences{blank}: give them as arguments, '-' to read stdin (one per line), or --file FILE"
        )
    return sentences


def _lines(text: str, name: str) -> list[Sentence]:
    lines = enumerate(text.splitlines(), 1)
    return [Sentence(line.strip(), f"line {number} of {name}") for number, line in lines if line.strip()]


def mark_sentences(sentences: Sequence[Sentence], heads: Sequence[Head], spans_required: bool = False) -> list[Marked]:
    """Markers parsed and checked for each sentence: when a chosen head is asked through an input that marks
    spans (an entity pair), a sentence with markers needs exactly two (and every sentence does when
    `spans_required`). PredictInputError names the sentence."""
    marked = []
    for sentence in sentences:
        try:
            m = parse_markers(sentence.text)
            if needs_marked_entities(heads):
                entity_pair_spans(m, required=spans_required)
        except ValueError as e:
            raise PredictInputError(f"{sentence.origin} ({sentence.text!r}): {e}") from None
        marked.append(m)
    return marked


# (signature, inputs, the output's name should the answer be a bare value) -> outputs by name
SignatureCall = Callable[[str, Mapping[str, Any], str], Mapping[str, Any]]


def _to_arrays(outputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    return {k: np.atleast_1d(np.asarray(v, dtype=object if _is_text(v) else None)) for k, v in outputs.items()}


def _is_text(v: Any) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, (str, dict))


def _rest_call(client: Any) -> SignatureCall:
    def call(signature: str, inputs: Mapping[str, Any], single_output: str) -> Mapping[str, Any]:
        answer = client.predict(inputs, signature)
        # a columnar REST answer is the bare value when the signature has a single output (translate's)
        return _to_arrays(answer if isinstance(answer, dict) else {single_output: answer})

    return call


def analyze_batch(
    marked: Sequence[Marked], call: SignatureCall, heads: Sequence[Head] | None = None
) -> list[dict[str, Any]]:
    """One call per signature of the serving contract that answers a chosen head, for the whole batch: `analyze`
    (as serving_default) on every sentence, a signature that needs marked entities on the sentences that have
    them. The JSON-able results, in order."""
    import numpy as np

    heads = select_heads(None) if heads is None else heads
    results: list[dict[str, Any]] = [{"text": m.text} for m in marked]
    words: list[list[str]] = [[] for _ in marked]
    for signature in contract.signatures(registered_tasks()):
        wanted = [h for h in signature.heads if h in heads]
        if not wanted or (signature.plain and signature.name != contract.ANALYZE_SIGNATURE):
            continue  # predict reads text: analyze answers the plain heads
        records = [signature.input.record_from_text(m.text, m.spans) for m in marked]
        rows = [i for i, r in enumerate(records) if r is not None]
        if not rows:
            continue
        name = contract.DEFAULT_SIGNATURE if signature.plain else signature.name
        outputs = call(name, signature.input.request([records[i] for i in rows]), wanted[0].scored_output)
        for k, row in enumerate(rows):
            if signature.plain:
                length = int(np.asarray(outputs["length"]).reshape(-1)[k])
                words[row] = [as_text(w) for w in np.asarray(outputs["tokens"])[k][:length]]
                results[row]["tokens"] = words[row]
            for head in wanted:
                if head.scored_output not in outputs:
                    continue  # the served model was trained without this head
                answer = head.read_answer(outputs, k, words[row], marked[row].text)
                if signature.input.span_fields:  # the marked entities the answer is about
                    answer.update(
                        {
                            name: {"text": marked[row].text[s:e], "start": s, "end": e}
                            for name, (s, e) in zip(signature.input.REQUEST_SPANS, marked[row].spans)
                        }
                    )
                results[row][head.name] = answer
    return results


def predict_sentences(
    sentences: Sequence[Sentence | str],
    *,
    server: str | None = None,
    model_name: str = "mtnlp",
    rest: bool = False,
    heads: Sequence[Head] | None = None,
    spans_required: bool = False,
    timeout: float = 30.0,
    tls: bool = False,
    batch_size: int = 32,
) -> Iterator[dict[str, Any]]:
    """Query the model for the sentences, `batch_size` per request; yields what `mtnlp predict --json` prints for
    each, in order. Every sentence is checked (PredictInputError) before the first request."""
    from .client import RestClient, ServingClient

    heads = select_heads(None) if heads is None else heads
    sentences = [s if isinstance(s, Sentence) else Sentence(s, f"sentence {i}") for i, s in enumerate(sentences, 1)]
    for sentence in sentences:
        if not sentence.text.strip():
            raise PredictInputError(f"{sentence.origin} is empty: give a sentence")
    marked = mark_sentences(sentences, heads, spans_required)
    if rest:
        client: Any = RestClient(server, model_name=model_name, timeout=timeout)
        call = _rest_call(client)
    else:
        client = ServingClient(server, model_name=model_name, timeout=timeout, tls=tls)

        def call(signature: str, inputs: Mapping[str, Any], single_output: str) -> Mapping[str, Any]:
            return client.predict(inputs, signature)

    try:
        for start in range(0, len(marked), batch_size):
            yield from analyze_batch(marked[start : start + batch_size], call, heads)
    finally:
        if not rest:
            client.close()


def cmd_predict(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import warnings

    warnings.filterwarnings("ignore")
    from .client import DEFAULT_GRPC, DEFAULT_REST, ENV_GRPC, ENV_REST, ServingClientError

    heads = select_heads(args.task)
    target = args.server or (
        os.environ.get(ENV_REST) or DEFAULT_REST if args.rest else os.environ.get(ENV_GRPC) or DEFAULT_GRPC
    )
    try:
        sentences = read_sentences(args.sentences, args.files)
        results = predict_sentences(
            sentences,
            server=target,
            model_name=args.model_name,
            rest=args.rest,
            heads=heads,
            spans_required=bool(args.task) and needs_marked_entities(select_heads(args.task)),
            timeout=args.timeout,
            tls=args.tls,
            batch_size=args.batch_size,
        )
        for number, result in enumerate(results):
            if args.json:
                print(json.dumps(result, ensure_ascii=False), flush=True)
            else:
                print(("\n" if number else "") + format_human(result, heads), flush=True)
    except PredictInputError as e:
        print(f"mtnlp predict: {e}", file=sys.stderr)
        return 2
    except ServingClientError as e:
        api = "REST" if args.rest else "gRPC"
        if e.nothing_listening:
            print(
                f"mtnlp predict: nothing is listening on {target} ({api}). Start a server (`mtnlp serve`), or "
                f"pass --server HOST:PORT{'' if args.rest else ' (or --rest for the REST API)'}.",
                file=sys.stderr,
            )
        else:
            print(f"mtnlp predict: the server at {target} ({api}) answered {e.code}: {e.message}", file=sys.stderr)
        return 1
    return 0


# ----- serve --------------------------------------------------------------------------------------------------
LOOPBACK = "127.0.0.1,::1"


def serve_flags(args: argparse.Namespace) -> list[str]:
    """The mtnlp-model-server command line `mtnlp serve` amounts to: TF Serving's flags plus our security extensions,
    on by default here (model paths confined to the workdir's serving_model folder, no ReloadConfig RPC)."""
    serving_model = Path(args.workdir).resolve() / "serving_model"
    base = serving_model / args.model_name
    roots = [str(Path(r).resolve()) for r in (getattr(args, "model_roots", None) or [serving_model])]
    flags = [
        f"--model_name={args.model_name}",
        f"--model_base_path={base}",
        f"--port={args.port}",
        f"--rest_api_port={args.rest_port}",
        f"--bind_address={args.host}",
        f"--allowed_model_roots={','.join(roots)}",
    ]
    if not getattr(args, "allow_reload_config_rpc", False):
        flags.append("--disable_reload_config_rpc")
    # TensorFlow's profiler server listens on every interface (on a port of its own); loopback means loopback.
    flags.append("--enable_profiler=false")
    from .model_server.limits import latest_version_dir, request_limit_flags

    latest = latest_version_dir(str(base))
    if latest is not None:  # one request costs at most a few normal batches of this model (serving/README.md)
        flags += request_limit_flags(latest)
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
    from .model_server.manager import version_directories

    base = Path(args.workdir).resolve() / "serving_model" / args.model_name
    versions = sorted(version_directories(str(base))) if base.is_dir() else []
    if not versions:
        print(
            f"mtnlp serve: no pushed model under {base} (expected numeric version directories). Run the pipeline "
            f"first (`mtnlp run --workdir {args.workdir}`) or pass --workdir.",
            file=sys.stderr,
        )
        return 2
    flags = serve_flags(args)
    hosts = [f"[{h}]" if ":" in h else h for h in args.host.split(",") if h]
    print(
        f"Serving {args.model_name} (latest of versions {versions}) from {base}\n"
        "  gRPC "
        + ", ".join(f"{h}:{args.port}" for h in hosts)
        + ("; REST " + ", ".join(f"http://{h}:{args.rest_port}" for h in hosts) if args.rest_port else "")
        + "\n  equivalent: mtnlp-model-server "
        + " ".join(flags),
        file=sys.stderr,
    )
    from .model_server.main import main as server_main

    return server_main(flags)


# ----- evaluate -----------------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment()
    from .evaluate import (
        EvaluationError,
        evaluate_signatures,
        format_table,
        load_signatures,
        read_task_data,
        resolve_saved_model,
        to_json,
    )

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
