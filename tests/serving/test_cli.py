"""`mtnlp serve` and `mtnlp predict` end to end on a stand-in for the pushed model (same signature contract).

The real pushed model is covered by test_project_model.py (slow: it needs the pipeline run).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from mtnlp import cli as mtnlp_cli
from mtnlp.model.heads import align_words
from mtnlp.model.scoring import iob2_chunks
from mtnlp.serving.analysis import entity_pair_spans, head_choices, parse_markers, select_heads
from mtnlp.serving.cli import PredictInputError, read_sentences

from .conftest import LOCAL_ONLY, REPO, ServerProcess, free_port


# ----- pure helpers -------------------------------------------------------------------------------------------
def test_parse_markers_offsets_on_clean_text():
    m = parse_markers("The [[company]] makes [[chairs]].")
    assert m.text == "The company makes chairs."
    assert [m.text[s:e] for s, e in m.spans] == ["company", "chairs"]
    assert m.spans == [(4, 11), (18, 24)]
    assert parse_markers("no markers").spans == []
    with pytest.raises(ValueError, match="unbalanced"):
        parse_markers("broken [[marker")
    with pytest.raises(ValueError, match="unbalanced"):
        parse_markers("broken marker]] here")
    with pytest.raises(ValueError, match=r"an empty \[\[\]\] entity marker at character 4"):
        parse_markers("The [[ ]] makes [[chairs]].")
    with pytest.raises(ValueError, match="nested"):
        parse_markers("The [[big [[company]] makes [[chairs]].")


def test_relation_needs_exactly_two_marked_entities():
    assert entity_pair_spans(parse_markers("The [[company]] makes [[chairs]].")) == ((4, 11), (18, 24))
    assert entity_pair_spans(parse_markers("no markers")) is None
    with pytest.raises(ValueError, match="exactly two entities.*found 0: none"):
        entity_pair_spans(parse_markers("no markers"), required=True)
    with pytest.raises(ValueError, match=r"found 1: \[\[company\]\]"):
        entity_pair_spans(parse_markers("The [[company]] makes chairs."))
    with pytest.raises(ValueError, match=r"found 3: \[\[a\]\], \[\[b\]\], \[\[c\]\]"):
        entity_pair_spans(parse_markers("[[a]] [[b]] [[c]]"))


def test_read_sentences_from_arguments_stdin_and_files(tmp_path):
    (tmp_path / "in.txt").write_text("First line.\n\n   \nSecond line.  \n", encoding="utf-8")
    stdin = io.StringIO("From stdin.\n\nAnd more.\n")
    got = read_sentences(["One.", "-", "Two."], [str(tmp_path / "in.txt")], stdin=stdin)
    assert [(s.text, s.origin) for s in got] == [
        ("One.", "argument 1"),
        ("From stdin.", "line 1 of stdin"),
        ("And more.", "line 3 of stdin"),
        ("Two.", "argument 3"),
        ("First line.", f"line 1 of {tmp_path / 'in.txt'}"),
        ("Second line.", f"line 4 of {tmp_path / 'in.txt'}"),
    ]
    with pytest.raises(PredictInputError, match="no sentences"):
        read_sentences([], [])
    with pytest.raises(PredictInputError, match="cannot read .*missing.txt"):
        read_sentences([], [str(tmp_path / "missing.txt")])


def test_iob2_chunks_as_predict_reads_them():
    tags = ["B-PER", "I-PER", "O", "B-ORG", "B-LOC", "I-LOC", "I-PER", "O"]
    assert iob2_chunks(tags) == {("PER", 0, 2), ("ORG", 3, 4), ("LOC", 4, 6), ("PER", 6, 7)}
    assert iob2_chunks(["O", "O"]) == set()


def test_align_words_case_insensitive():
    assert align_words("Apple sued Samsung.", ["apple", "sued", "samsung", "."]) == [
        (0, 5),
        (6, 10),
        (11, 18),
        (18, 19),
    ]


def test_task_choices_come_from_the_registry():
    assert set(head_choices()) == {"pos", "ner", "sentiment", "relation", "translation", "translate"}
    assert [h.name for h in select_heads(None)] == ["pos", "ner", "sentiment", "relation"]  # translate on request
    assert [h.name for h in select_heads(["translate"])] == ["translation"]
    with pytest.raises(ValueError, match="unknown task.*choose from"):
        select_heads(["chunking"])


# ----- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_workdir(tmp_path_factory):
    from tests.serving.fake_project_model import build

    wd = tmp_path_factory.mktemp("fake_workdir")
    build(wd / "serving_model" / "mtnlp", 1)
    return wd


@pytest.fixture(scope="module")
def mtnlp_serve(fake_workdir, server_logs):
    """`mtnlp serve` as a user starts it (a subprocess), on free ports."""
    if os.environ.get("MTNLP_SERVING_GRPC"):
        pytest.skip("starts its own server")
    grpc_port, rest_port = free_port(), free_port()
    log = open(server_logs / "mtnlp-serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtnlp.cli",
            "serve",
            "--workdir",
            str(fake_workdir),
            "--port",
            str(grpc_port),
            "--rest-port",
            str(rest_port),
        ],
        cwd=str(REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    holder = ServerProcess.__new__(ServerProcess)  # reuse its readiness logic on this process
    holder.proc, holder.grpc_port, holder.rest_port, holder._log = proc, grpc_port, rest_port, log
    holder.log_path = server_logs / "mtnlp-serve.log"
    holder.wait_ready()
    yield holder
    holder.stop()


def predict(capsys, *args: str) -> str:
    rc = mtnlp_cli.main(["predict", *args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def test_serve_binds_loopback_and_logs_equivalent_command(mtnlp_serve):
    text = mtnlp_serve.log()
    assert "--bind_address=127.0.0.1" in text and f"127.0.0.1:{mtnlp_serve.grpc_port}" in text


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_human(mtnlp_serve, capsys, transport):
    server = mtnlp_serve.grpc if transport == "grpc" else mtnlp_serve.rest
    extra = ["--rest"] if transport == "rest" else []
    out = predict(capsys, "Apple sued Samsung in California.", "--server", server, *extra)
    assert "Sentiment: negative (p=0.900)" in out
    assert "[Apple]ORG sued [Samsung]ORG in [California]LOC." in out
    assert "LOC  'California' (chars 22-32)" in out
    assert "Apple/PROPN sued/VERB Samsung/PROPN" in out


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_json_with_relation(mtnlp_serve, capsys, transport):
    server = mtnlp_serve.grpc if transport == "grpc" else mtnlp_serve.rest
    extra = ["--rest"] if transport == "rest" else []
    doc = json.loads(predict(capsys, "The [[company]] makes [[chairs]].", "--server", server, "--json", *extra))
    assert doc["text"] == "The company makes chairs."
    assert doc["tokens"] == ["The", "company", "makes", "chairs", "."]
    assert doc["sentiment"]["label"] == "positive"
    assert doc["sentiment"]["probabilities"]["positive"] == pytest.approx(0.8)
    assert doc["relation"]["label"] == "Product-Producer(e1,e2)"
    assert doc["relation"]["probability"] == pytest.approx(0.82)
    assert doc["relation"]["e1"] == {"text": "company", "start": 4, "end": 11}
    assert doc["relation"]["e2"] == {"text": "chairs", "start": 18, "end": 24}
    assert [p["tag"] for p in doc["pos"]][-1] == "PUNCT"


def test_predict_task_selection(mtnlp_serve, capsys):
    out = predict(capsys, "Apple sued Samsung.", "--server", mtnlp_serve.grpc, "--task", "sentiment")
    assert "Sentiment:" in out and "Entities:" not in out and "POS:" not in out


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_says_nothing_is_listening(capsys, transport):
    target = f"127.0.0.1:{free_port()}"
    extra = ["--rest"] if transport == "rest" else []
    rc = mtnlp_cli.main(["predict", "x", "--server", target, "--timeout", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 1 and f"nothing is listening on {target}" in err and "UNAVAILABLE" not in err


def test_predict_wrong_model_name(mtnlp_serve, capsys):
    rc = mtnlp_cli.main(["predict", "x", "--server", mtnlp_serve.grpc, "--model-name", "nope"])
    err = capsys.readouterr().err
    assert rc == 1 and "NOT_FOUND" in err and "nope" in err


def test_serve_without_pushed_model(tmp_path, capsys):
    rc = mtnlp_cli.main(["serve", "--workdir", str(tmp_path)])
    assert rc == 2 and "no pushed model" in capsys.readouterr().err


@LOCAL_ONLY
def test_console_entry_predict_subprocess(mtnlp_serve):
    r = subprocess.run(
        [sys.executable, "-m", "mtnlp.cli", "predict", "Apple sued Samsung.", "--server", mtnlp_serve.grpc, "--json"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ner"]["entities"][0]["text"] == "Apple"


# ----- several sentences, stdin, files, JSON Lines -------------------------------------------------------------
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_several_sentences_as_json_lines(mtnlp_serve, capsys, transport):
    server = mtnlp_serve.grpc if transport == "grpc" else mtnlp_serve.rest
    extra = ["--rest"] if transport == "rest" else []
    sentences = ["Apple sued Samsung in California.", "The [[company]] makes [[chairs]].", "Great film!"]
    out = predict(capsys, *sentences, "--server", server, "--json", *extra)
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["text"] for d in docs] == [
        "Apple sued Samsung in California.",
        "The company makes chairs.",
        "Great film!",
    ]
    # each row of the batched answer is that sentence's own: lengths, tags, and a relation only where marked
    assert [len(d["tokens"]) for d in docs] == [6, 5, 3]
    assert [e["text"] for e in docs[0]["ner"]["entities"]] == ["Apple", "Samsung", "California"]
    assert [d["sentiment"]["label"] for d in docs] == ["negative", "positive", "positive"]
    assert "relation" not in docs[0] and "relation" not in docs[2]
    assert docs[1]["relation"]["label"] == "Product-Producer(e1,e2)"
    alone = json.loads(predict(capsys, sentences[1], "--server", server, "--json", *extra))
    assert alone == docs[1]


def test_predict_batches_give_the_same_answers(mtnlp_serve, capsys):
    sentences = ["Apple sued Samsung.", "[[Paris]] loves [[Berlin]].", "Google is in California.", "Nice."]
    one_request = predict(capsys, *sentences, "--server", mtnlp_serve.grpc, "--json")
    one_by_one = predict(capsys, *sentences, "--server", mtnlp_serve.grpc, "--json", "--batch-size", "1")
    assert one_request == one_by_one and len(one_request.splitlines()) == 4


def test_predict_human_output_separates_sentences(mtnlp_serve, capsys):
    out = predict(capsys, "Apple sued Samsung.", "Paris is nice.", "--server", mtnlp_serve.grpc)
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("Text:      Apple sued") and "[Paris]LOC" in blocks[1]


def test_predict_reads_stdin_and_files(mtnlp_serve, tmp_path):
    (tmp_path / "sentences.txt").write_text("Google sued Apple.\n\nThe [[company]] makes [[chairs]].\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtnlp.cli",
            "predict",
            "-",
            "--file",
            str(tmp_path / "sentences.txt"),
            "--server",
            mtnlp_serve.grpc,
            "--json",
        ],
        input="Apple sued Samsung.\n\nParis is nice.\n",
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["text"] for d in docs] == [
        "Apple sued Samsung.",
        "Paris is nice.",
        "Google sued Apple.",
        "The company makes chairs.",
    ]
    assert docs[3]["relation"]["e2"]["text"] == "chairs"


def test_predict_only_relation(mtnlp_serve, capsys):
    doc = json.loads(
        predict(
            capsys, "The [[company]] makes [[chairs]].", "--task", "relation", "--json", "--server", mtnlp_serve.grpc
        )
    )
    assert set(doc) == {"text", "relation"} and doc["relation"]["label"] == "Product-Producer(e1,e2)"


# ----- bad input: refused before any request (the server below does not exist) ----------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["The [[company]] makes chairs."],
            r"argument 1 \('The \[\[company\]\] makes chairs.'\): a relation needs "
            r"exactly two entities marked with \[\[...\]\].*found 1: \[\[company\]\]",
        ),
        (["Fine.", "[[a]] [[b]] [[c]]"], r"argument 2 .*found 3"),
        (["Plain sentence.", "--task", "relation"], r"argument 1 .*a relation needs exactly two entities.*found 0"),
        (["The [[company makes chairs."], r"argument 1 .*unbalanced \[\[ \]\] entity markers"),
        (["The [[]] makes [[chairs]]."], r"argument 1 .*an empty \[\[\]\] entity marker"),
        (["Fine.", "  "], r"argument 2 is empty: give a sentence"),
        ([], r"no sentences: give them as arguments, '-' to read stdin \(one per line\), or --file FILE"),
    ],
)
def test_predict_refuses_bad_input_before_calling(capsys, args, message):
    rc = mtnlp_cli.main(["predict", *args, "--server", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(message, err), err


def test_predict_refuses_a_file_of_blank_lines(capsys, tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n")
    rc = mtnlp_cli.main(["predict", "--file", str(tmp_path / "blank.txt"), "--server", f"127.0.0.1:{free_port()}"])
    assert rc == 2 and "no sentences" in capsys.readouterr().err


def test_markers_are_not_checked_when_relation_is_not_asked_for(mtnlp_serve, capsys):
    doc = json.loads(
        predict(capsys, "The [[company]] makes chairs.", "--task", "sentiment", "--json", "--server", mtnlp_serve.grpc)
    )
    assert doc["text"] == "The company makes chairs." and "relation" not in doc


# ----- the gRPC client does not import TensorFlow --------------------------------------------------------------
def run_python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python process of this repository (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


@LOCAL_ONLY
def test_grpc_predict_does_not_import_tensorflow(mtnlp_serve):
    code = (
        "import sys, json\n"
        "from mtnlp import cli\n"
        f"rc = cli.main(['predict', 'Apple sued Samsung.', 'The [[company]] makes [[chairs]].', '--server', "
        f"'{mtnlp_serve.grpc}', '--json'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.python'))\n"
        "print(json.dumps({'rc': rc, 'tensorflow_modules': loaded}))\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert json.loads(lines[0])["ner"]["entities"][0]["text"] == "Apple"
    assert json.loads(lines[-1]) == {"rc": 0, "tensorflow_modules": []}


def test_serving_protos_stay_compatible_with_tensorflow_imported_later():
    code = (
        "import sys\n"
        "from mtnlp.serving.client import import_serving_protos, to_tensor_proto\n"
        "import_serving_protos()\n"
        "assert 'tensorflow' not in sys.modules\n"
        "from tensorflow.core.framework import tensor_pb2\n"
        "proto = to_tensor_proto([[1.5, 2.5]])\n"
        "import tensorflow as tf\n"
        "assert type(tf.make_tensor_proto([1.0])) is tensor_pb2.TensorProto\n"
        "assert tf.make_ndarray(proto).tolist() == [[1.5, 2.5]]\n"
        "assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0\n"
        "print('ok')\n"
    )
    r = run_python(code, timeout=300, TF_CPP_MIN_LOG_LEVEL="3")
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_serve_bounds_one_request_to_a_few_normal_batches(mtnlp_serve):
    """`mtnlp serve` derives its request limits from the model: a request of one sentence repeated 10,000 times (a
    few bytes on the wire; at [100000] the project model spent 8 CPU-seconds and 1.5 GB on it) and one 50 MB sentence
    are refused before the model runs; a normal batch still answers."""
    from tensorflow_serving.apis import predict_pb2

    from mtnlp.serving.client import RestClient, ServingClient, ServingClientError
    from mtnlp.serving.model_server.limits import BATCHES_PER_REQUEST, NORMAL_BATCH

    assert f"--max_request_batch_size={BATCHES_PER_REQUEST * NORMAL_BATCH}" in mtnlp_serve.log()
    with ServingClient(mtnlp_serve.grpc, model_name="mtnlp", retries=0) as c:
        assert (
            c.predict({"text": ["Apple sued Samsung."] * BATCHES_PER_REQUEST * NORMAL_BATCH})["tokens"].shape[0]
            == BATCHES_PER_REQUEST * NORMAL_BATCH
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mtnlp"
        text = request.inputs["text"]
        text.dtype = 7
        text.tensor_shape.dim.add(size=10_000)
        text.string_val.append(b"Apple sued Samsung in California and lost the case in a week.")
        with pytest.raises(ServingClientError) as e:
            c.predict_request(request)
        assert e.value.code == "RESOURCE_EXHAUSTED" and "--max_request_batch_size" in e.value.message
        with pytest.raises(ServingClientError) as e:
            c.predict({"text": ["word " * 10_000_000]})
        assert e.value.code == "RESOURCE_EXHAUSTED" and "--max_request_string_bytes" in e.value.message
    with pytest.raises(ServingClientError) as e:
        RestClient(mtnlp_serve.rest, model_name="mtnlp", retries=0).predict({"text": ["word " * 1000] * 2})
    assert e.value.code == "RESOURCE_EXHAUSTED" or e.value.http_status == 429, e.value


def test_clients_in_many_threads_import_the_serving_protos_at_once():
    """16 client threads of a fresh process (the swap-under-load test's clients) import TF Serving's protos at the
    same moment: none sees the bare placeholder package that stands in for TensorFlow meanwhile
    (``importlib.util.find_spec`` raised "tensorflow.__spec__ is None" in one of them), and none is left behind."""
    code = (
        "import importlib.util, sys, threading\n"
        "from mtnlp.serving.client import _model_spec\n"
        "errors, start = [], threading.Barrier(16)\n"
        "def client():\n"
        "    start.wait()\n"
        "    try:\n"
        "        for _ in range(20):\n"
        "            assert _model_spec('mtnlp', version=3).version.value == 3\n"
        "            importlib.util.find_spec('tensorflow')\n"
        "    except Exception as e:\n"
        "        errors.append(repr(e))\n"
        "threads = [threading.Thread(target=client) for _ in range(16)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "assert errors == [], errors[:3]\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    for _ in range(3):  # a fresh process each time: the first imports are the race
        r = run_python(code)
        assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
