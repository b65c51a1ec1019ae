"""The pipeline's pushed model keeps answering while its files move or vanish (slow: needs `pipeline_run`).

A served version must never read its directory after loading (TF Serving's contract: a swap or a clean-up may move
or delete it at any time). These tests serve copies of the pushed model, take the served directory away, and check
that every signature still answers until the version is unloaded, then that a swap under load across good, broken
and deleted versions loses no request.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mtnlp.serving.client import RestClient, ServingClient
from tests.serving.toy_models import copy_version

from .conftest import LOCAL_ONLY, ServerProcess, version_states, wait_for

pytestmark = [pytest.mark.slow, LOCAL_ONLY]
SENTENCES = ["Apple sued Samsung in California.", "Where is the station?"]


def call_every_signature(c: ServingClient, rest: RestClient) -> None:
    """One call of each signature a client uses (each tokenises text with the model's vocabularies)."""
    out = c.predict({"text": SENTENCES})
    assert out["tokens"].shape[0] == 2
    rel = c.predict(
        {
            "text": ["The company makes chairs."],
            "e1_start": np.array([4], np.int64),
            "e1_end": np.array([11], np.int64),
            "e2_start": np.array([18], np.int64),
            "e2_end": np.array([24], np.int64),
        },
        "relation",
    )
    assert rel["relation_probabilities"].shape == (1, 19)
    assert c.predict({"tokens": out["tokens"]}, "analyze_tokens")["length"].tolist() == out["length"].tolist()
    assert c.predict({"text": SENTENCES}, "translate")["translation"].shape == (2,)
    assert len(rest.predict({"text": SENTENCES})["sentiment_label"]) == 2


def start(base: Path, logs: Path) -> ServerProcess:
    return ServerProcess(
        ["--model_name=mtnlp", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"], logs
    ).wait_ready(300)


def test_every_signature_answers_after_the_served_directory_moves_or_vanishes(pipeline_run, server_logs, tmp_path):
    base = tmp_path / "mtnlp"
    base.mkdir()
    copy_version(pipeline_run.pushed_model_dir, base / "1")
    p = start(base, server_logs)
    try:
        with ServingClient(p.grpc, model_name="mtnlp", timeout=120, retries=0) as c:
            rest = RestClient(p.rest, model_name="mtnlp", timeout=120, retries=0)
            call_every_signature(c, rest)
            moved = tmp_path / "moved"
            moved.mkdir()
            (base / "1").rename(moved / "1")  # what a swap or a clean-up does to an old version
            for _ in range(3):
                call_every_signature(c, rest)
            shutil.rmtree(moved)
            time.sleep(1.5)  # a poll later: the version has no directory, and it still serves
            for _ in range(3):
                call_every_signature(c, rest)
            assert version_states(c) == {1: "AVAILABLE"}
            copy_version(pipeline_run.pushed_model_dir, base / "2")  # until a new version replaces it
            # version 1 ends, and with its directory gone the next poll forgets it: either is "no longer served"
            wait_for(
                lambda: version_states(c) in ({2: "AVAILABLE", 1: "END"}, {2: "AVAILABLE"}),
                timeout=300,
                what="version 2 to serve",
            )
            call_every_signature(c, rest)
    finally:
        p.stop()


def test_swap_under_load_loses_no_request(pipeline_run, server_logs, tmp_path):
    """16 clients across v1 -> v2, a broken v3 and `rm -rf` of the serving version: every request answers."""
    base = tmp_path / "mtnlp"
    base.mkdir()
    copy_version(pipeline_run.pushed_model_dir, base / "1")
    p = start(base, server_logs)
    answered = [0] * 16
    errors: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with ServingClient(p.grpc, model_name="mtnlp", timeout=120, retries=0) as c:
            while not stop.is_set():
                try:
                    assert c.predict({"text": SENTENCES[i % 2 :][:1]})["tokens"].shape[0] == 1
                    answered[i] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e))

    def requests_go_on(what: str) -> None:
        before = sum(answered)
        wait_for(lambda: sum(answered) >= before + 32, timeout=120, what=f"32 more answers {what}")

    clients = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in clients:
        t.start()
    try:
        with ServingClient(p.grpc, model_name="mtnlp", timeout=30) as c:
            requests_go_on("on version 1")
            copy_version(pipeline_run.pushed_model_dir, base / "2")
            wait_for(lambda: version_states(c) == {2: "AVAILABLE", 1: "END"}, timeout=300, what="the swap to version 2")
            shutil.rmtree(base / "1")
            requests_go_on("on version 2")
            broken = tmp_path / "broken"
            copy_version(pipeline_run.pushed_model_dir, broken)
            (broken / "saved_model.pb").write_bytes((broken / "saved_model.pb").read_bytes()[:4000])
            copy_version(broken, base / "3")
            wait_for(lambda: version_states(c).get(3) == "END", timeout=120, what="version 3 to fail")
            assert version_states(c)[2] == "AVAILABLE"
            requests_go_on("after the broken version 3")
            shutil.rmtree(base / "2")  # the serving version's files vanish
            time.sleep(1.5)
            requests_go_on("with version 2's directory deleted")
            assert version_states(c)[2] == "AVAILABLE"
    finally:
        stop.set()
        for t in clients:
            t.join(150)
        p.stop()
    assert errors == [], errors[:5]
    assert all(answered), answered
