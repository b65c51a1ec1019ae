"""Retraining on new data, end to end: span 0 -> serve -> add span 1 -> run -> the running server
answers with version 2, with zero failed requests in between; a rerun with nothing new is cached;
a bad new span stops the run and leaves the serving model and the earlier spans untouched."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tests.conftest import DATA, FIXTURE_RECORDS, FIXTURE_STEPS, run_cli
from tests.serving.conftest import ServerProcess, wait_for

pytestmark = pytest.mark.slow


# With 200 validation records a head's accuracy moves by +-0.05 between two trainings on noise alone, so
# the quick gates' tolerances would bless or block the retrained model by chance (CI failed once on
# sentiment -0.055). This test is about the swap; blocking a regressing candidate has its own e2e test.
_LENIENT_GATES = [f"--set=heads.{head}.gate.tolerance=1" for head in ("sentiment", "pos", "ner", "relation")]
_LENIENT_GATES.append("--set=min_overall_improvement=-1")
# Translation (vocabulary learning, beam search in the Evaluator) would double the time of each run and
# adds nothing to what retraining does; the other e2e tests run it.
_TASKS = ("tagging", "sentiment", "relation")


def _run(workdir, data):
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--workdir",
        str(workdir),
        "--data",
        str(data),
        "--max-records",
        str(FIXTURE_RECORDS),
        "--train-steps",
        str(FIXTURE_STEPS),
        "--tasks",
        *_TASKS,
        *_LENIENT_GATES,
    )
    summary = json.loads((workdir / "run_summary.json").read_text())
    return result, summary


class _Traffic(threading.Thread):
    """Queries the server continuously (bounded in time) and records every answer's version or error."""

    def __init__(self, target: str, seconds: float):
        super().__init__(daemon=True)
        from mtnlp.serving.client import ServingClient

        self.client = ServingClient(target, model_name="mtnlp", timeout=20)
        self.deadline = time.monotonic() + seconds
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mtnlp"
        request.model_spec.signature_name = "serving_default"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(["Apple sued Samsung in California."]))
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                response = self.client.predict_request(request)
                self.versions.append(response.model_spec.version.value)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                self.failures.append(repr(e)[:300])
            time.sleep(0.05)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("retrain") / "data"
    shutil.copytree(DATA, data)
    return data


def test_retrain_on_a_new_span_swaps_the_served_model_without_failed_requests(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("retrain_workdir") / "workdir"
    first, summary = _run(workdir, data_dir)
    assert first.returncode == 0, first.stderr[-4000:]
    assert summary["pushed_version"] == 1 and summary["spans"] == [0]
    assert summary["warm_start"] is None and summary["baseline_version"] is None  # nothing served yet

    server = ServerProcess(
        [
            f"--model_base_path={workdir / 'serving_model' / 'mtnlp'}",
            "--model_name=mtnlp",
            "--file_system_poll_wait_seconds=1",
        ],
        workdir.parent,
    ).wait_ready()
    traffic = _Traffic(server.grpc, seconds=600)
    try:
        traffic.start()
        wait_for(lambda: traffic.versions, timeout=60, what="first answers")

        # new NER data: sentences of the bundled train file that the capped first run did not read
        with gzip.open(DATA / "tagging" / "train.jsonl.gz", "rt") as f:
            lines = f.readlines()[FIXTURE_RECORDS : FIXTURE_RECORDS + 400]
        new = data_dir.parent / "new_ner.jsonl"
        new.write_text("".join(lines))
        added = run_cli("add-data", "--task", "ner", "--data", str(data_dir), str(new), timeout=120)
        assert added.returncode == 0 and "Added span 1" in added.stdout, added.stdout + added.stderr

        second, summary = _run(workdir, data_dir)
        assert second.returncode == 0, second.stderr[-4000:]
        assert summary["spans"] == [0, 1]
        # the baseline is the served version, found by an ordinary component (as on Kubeflow: no resolver)
        assert summary["baseline_version"] == 1
        assert summary["baseline_from"] == str(workdir / "serving_model" / "mtnlp" / "1")
        assert "warm-started from" in summary["warm_start"] and "/ServedBaseline/" in summary["warm_start"]
        assert set(summary["metric_deltas"]) >= {"pos", "ner", "sentiment", "relation", "overall"}
        assert summary["blessed"] and summary["pushed_version"] == 2, summary.get("blessing_failures")
        wait_for(lambda: traffic.versions[-1] == 2, timeout=120, what="the server to answer with version 2")
    finally:
        traffic.stop.set()
        traffic.join(30)
        server.stop()
    assert traffic.failures == []
    first_v2 = traffic.versions.index(2)
    assert set(traffic.versions[:first_v2]) == {1} and set(traffic.versions[first_v2:]) == {2}

    rerun, summary = _run(workdir, data_dir)
    assert rerun.returncode == 0
    states = {c["component"]: c["state"] for c in summary["components"]}
    assert set(states.values()) == {"CACHED"}, states
    assert "nothing new" in rerun.stdout
    assert sorted(p.name for p in (workdir / "serving_model" / "mtnlp").iterdir()) == ["1", "2"]

    # a bad span: unknown labels everywhere. The run stops at ingest, before training.
    bad = data_dir.parent / "bad.jsonl"
    bad.write_text(
        "".join(json.dumps({"id": f"b{i}", "text": f"text {i}", "label": "ecstatic"}) + "\n" for i in range(30))
    )
    refused = run_cli("add-data", "--task", "sentiment", "--data", str(data_dir), str(bad), timeout=120)
    assert refused.returncode == 1 and "unknown label 'ecstatic'" in refused.stdout
    forced = run_cli("add-data", "--task", "sentiment", "--data", str(data_dir), str(bad), "--force", timeout=120)
    assert forced.returncode == 0
    failed, summary = _run(workdir, data_dir)
    assert failed.returncode == 1
    assert "TooManyRejectedRecords" in summary["error"] and "spans/2/sentiment/train.jsonl" in summary["error"]
    assert "unknown label 'ecstatic'" in summary["error"]
    assert "Trainer" not in {c["component"] for c in summary["components"]}
    assert sorted(p.name for p in (workdir / "serving_model" / "mtnlp").iterdir()) == ["1", "2"]
    assert (data_dir / "spans" / "1" / "tagging" / "train.jsonl").exists()
