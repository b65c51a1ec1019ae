"""Serving latency/throughput: gRPC to mtnlp-model-server (with and without batching) vs the same model in-process.

    python benchmarks/serving.py                # the pushed model in ./workdir if there is one, else a dense stand-in
    python benchmarks/serving.py --model-base-path workdir/serving_model/mtnlp --model-name mtnlp
    python benchmarks/serving.py --builtin      # the stand-in (x: float32 [B, 64]) even when a pushed model exists

For each concurrency (1, 8, 32 client threads, each sending one example per request, back to back for --seconds),
prints p50/p99 latency and throughput, states the machine, and writes the figures as JSON next to this script
(serving_results.json). "in_process" calls the model through the server's own runtime (a TF1 Session, as TF Serving)
in this process; "in_process_eager" through TF2's `tf.saved_model.load` signatures, for reference. Targets: p50
gRPC overhead over in-process <= 0.3 ms at concurrency 1; batching >= 3x throughput at 32 clients (issue #24).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, percentile, quiet_tensorflow, table, write_json  # noqa: E402

quiet_tensorflow()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_mlp(base: Path) -> Path:
    """A dense model whose per-call cost is mostly fixed (weight reads), like a real encoder's on one sentence."""
    import tensorflow as tf

    class Mlp(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            g = tf.random.Generator.from_seed(0)
            self.w = [
                tf.Variable(g.normal([a, b]) * 0.05) for a, b in ((64, 1024), (1024, 1024), (1024, 1024), (1024, 2))
            ]

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def predict(self, x):
            h = x
            for w in self.w[:-1]:
                h = tf.nn.relu(h @ w)
            logits = h @ self.w[-1]
            return {"probabilities": tf.nn.softmax(logits), "batch_size": tf.fill([tf.shape(x)[0]], tf.shape(x)[0])}

    m = Mlp()
    path = base / "1"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.predict.get_concrete_function()})
    return base


def drive(call, concurrency: int, seconds: float) -> dict:
    """`concurrency` threads call `call()` back to back; latencies in ms, throughput in requests/s."""
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0]
    stop = threading.Event()
    start_gate = threading.Barrier(concurrency + 1)

    def worker(i: int) -> None:
        start_gate.wait()
        out = lat[i]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                call()
            except Exception:  # noqa: BLE001 - counted, reported
                errors[0] += 1
                continue
            out.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for _ in range(3):  # warm the path before timing
        call()
    start_gate.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    all_lat = [x for xs in lat for x in xs]
    return {
        "requests": len(all_lat),
        "errors": errors[0],
        "throughput_rps": len(all_lat) / elapsed,
        "p50_ms": percentile(all_lat, 50),
        "p99_ms": percentile(all_lat, 99),
        "mean_ms": statistics.fmean(all_lat) if all_lat else float("nan"),
    }


def drive_grpc_async(target: str, request_bytes: bytes, concurrency: int, seconds: float) -> dict:
    """Like drive(), over gRPC, with `concurrency` asyncio clients on one channel: one client thread instead of 32,
    so that the client process takes as little of the machine's CPU from the server as it can."""
    import asyncio

    import grpc
    from tensorflow_serving.apis import predict_pb2

    async def run() -> dict:
        async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as ch:
            predict = ch.unary_unary(
                "/tensorflow.serving.PredictionService/Predict",
                request_serializer=lambda b: b,
                response_deserializer=predict_pb2.PredictResponse.FromString,
            )
            for _ in range(3):
                await predict(request_bytes, timeout=60)
            lat: list[float] = []
            errors = 0
            stop_at = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop_at:
                    t0 = time.perf_counter()
                    try:
                        await predict(request_bytes, timeout=60)
                    except grpc.RpcError:
                        errors += 1
                        continue
                    lat.append((time.perf_counter() - t0) * 1e3)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - t0
            return {
                "requests": len(lat),
                "errors": errors,
                "throughput_rps": len(lat) / elapsed,
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "mean_ms": statistics.fmean(lat) if lat else float("nan"),
            }

    return asyncio.run(run())


def start_server(base: Path, name: str, batching_file: Path | None, grpc_threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "mtnlp.serving.model_server.main",
        f"--port={port}",
        f"--model_name={name}",
        f"--model_base_path={base}",
        "--bind_address=127.0.0.1",
        "--enable_model_warmup=false",
        # Enough handler threads for every client to be in flight at once (the default is 4 per core), so
        # that batches can actually fill up; the same setting for both modes.
        f"--grpc_max_threads={grpc_threads}",
    ]
    if batching_file is not None:
        args += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    proc = subprocess.Popen(
        args,
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model-base-path",
        type=Path,
        help="a served model's base path (default: workdir/serving_model/mtnlp if it holds a version, "
        "else a built-in dense model)",
    )
    ap.add_argument("--builtin", action="store_true", help="use the built-in dense model")
    ap.add_argument("--model-name", default="mtnlp")
    ap.add_argument(
        "--text",
        default="Apple sued Samsung in California.",
        help="input sentence when the model takes `text` (the project model)",
    )
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout-micros", type=int, default=1000)
    ap.add_argument("--num-batch-threads", type=int, default=1)
    ap.add_argument("--output", "--out", type=Path, default=default_output("serving"))
    ns = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    try:
        import tensorflow_text  # noqa: F401 - the project model uses TF Text ops
    except ImportError:
        pass
    from tensorflow_serving.apis import model_pb2, predict_pb2

    from mtnlp.serving.client import ServingClient, to_tensor_proto

    tmp = Path(tempfile.mkdtemp(prefix="mtnlp-bench-"))
    pushed = REPO / "workdir" / "serving_model" / "mtnlp"
    if (
        ns.model_base_path is None
        and not ns.builtin
        and pushed.is_dir()
        and any(p.name.isdigit() for p in pushed.iterdir())
    ):
        ns.model_base_path = pushed
    base = ns.model_base_path.resolve() if ns.model_base_path and not ns.builtin else build_mlp(tmp / "mtnlp")
    from mtnlp.serving.model_server.manager import version_directories
    from mtnlp.serving.model_server.servable import LoadedModel

    versions = version_directories(str(base))
    version_dir = str(base / versions[max(versions)])
    # The server's own runtime (a Session, as TF Serving's) in this process: the baseline the server adds to.
    model = LoadedModel(version_dir, ["serve"])
    signature = model.signature("serving_default")
    (input_name,) = signature.inputs
    fn = tf.saved_model.load(version_dir).signatures["serving_default"]  # TF2's eager runtime, for reference
    if input_name == "text":
        example = np.array([ns.text.encode()], dtype=object)
        feed = {"text": tf.constant([ns.text])}
    else:
        example = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
        feed = {input_name: tf.constant(example)}
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=ns.model_name))
    request.inputs[input_name].CopyFrom(to_tensor_proto(example))

    levels = [int(c) for c in ns.concurrency.split(",")]
    machine = Machine()
    results: dict[str, dict[int, dict]] = {"in_process": {}, "in_process_eager": {}, "grpc": {}, "grpc_batching": {}}
    for c in levels:
        results["in_process"][c] = drive(lambda: model.run(signature, {input_name: example}), c, ns.seconds)
        results["in_process_eager"][c] = drive(lambda: fn(**feed), c, ns.seconds)

    batching = tmp / "batching_parameters.txt"
    sizes = [s for s in (1, 2, 4, 8, 16, 32, 64, 128) if s < ns.max_batch_size] + [ns.max_batch_size]
    batching.write_text(
        f"max_batch_size {{ value: {ns.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {ns.batch_timeout_micros} }}\n"
        f"max_enqueued_batches {{ value: 1000 }}\n"
        f"num_batch_threads {{ value: {ns.num_batch_threads} }}\n"
        + "".join(f"allowed_batch_sizes: {s}\n" for s in sizes)
    )
    for mode, bfile in (("grpc", None), ("grpc_batching", batching)):
        proc, port = start_server(base, ns.model_name, bfile, max(levels) * 2)
        try:
            with ServingClient(f"127.0.0.1:{port}", model_name=ns.model_name, retries=0, timeout=60) as client:
                client.predict_request(request)  # the server is up and the model answers
            for c in levels:
                results[mode][c] = drive_grpc_async(f"127.0.0.1:{port}", request.SerializeToString(), c, ns.seconds)
        finally:
            proc.terminate()
            proc.wait(30)

    overhead = results["grpc"][levels[0]]["p50_ms"] - results["in_process"][levels[0]]["p50_ms"]
    top = levels[-1]
    speedup = results["grpc_batching"][top]["throughput_rps"] / results["grpc"][top]["throughput_rps"]
    summary = {
        "p50_overhead_ms_at_c1": overhead,
        "batching_speedup_at_max_concurrency": speedup,
        "targets": {"p50_overhead_ms_at_c1": "<= 0.3", "batching_speedup": ">= 3"},
    }

    print(machine.line())
    print(
        f"Model: {base} (input '{input_name}', one example per request); {ns.seconds:.0f}s per cell; batching: "
        f"max_batch_size={ns.max_batch_size} batch_timeout_micros={ns.batch_timeout_micros} "
        f"num_batch_threads={ns.num_batch_threads}"
    )
    print(
        table(
            ["mode", "clients", "p50 ms", "p99 ms", "req/s", "errors"],
            [
                [mode, c, f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['throughput_rps']:.0f}", r["errors"]]
                for mode, rows in results.items()
                for c, r in rows.items()
            ],
        )
    )
    print(f"p50 overhead of gRPC over in-process at {levels[0]} client(s): {overhead:.3f} ms (target <= 0.3)")
    print(f"batching throughput gain at {top} clients: {speedup:.2f}x (target >= 3)")
    write_json(
        ns.output,
        machine,
        {
            "model": str(base),
            "input": input_name,
            "seconds_per_cell": ns.seconds,
            "results": results,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
