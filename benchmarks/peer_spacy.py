"""The peer, side by side: spaCy's tagger + ner + textcat trained from scratch on our train splits, against our model,
both scored with our metric definitions on the same validation records.

    python benchmarks/peer_spacy.py --model-dir workdir/serving_model/mtnlp            # 30 min of spaCy training
    python benchmarks/peer_spacy.py --model-dir workdir/serving_model/mtnlp --max-minutes 5
    python benchmarks/peer_spacy.py --model-dir /tmp/w/serving_model/mtnlp --quick     # smoke test: minutes
    python benchmarks/peer_spacy.py --model-dir W/serving_model/mtnlp --spacy-from benchmarks/peer_spacy_results.json

``--spacy-from`` takes the spaCy side (its figures, training time and throughput) from an earlier results file
instead of training spaCy again, after checking that it used the same records per task and split and the same caps:
a new model of ours meets the same peer without another 30 minutes of spaCy.

spaCy is not a dependency of the project: the script installs ``spacy>=3.8,<3.9`` from PyPI into its own virtual
environment (``--venv``, default ~/.cache/mtnlp/peer-spacy-venv; reused when it already has it) and runs the spaCy
side there, as a child process of this script (``--spacy-side``). The two sides meet in plain files under
``--work-dir`` (default ~/.cache/mtnlp/peer-spacy-run):

1. Here (the project's environment): the tagging (``pos``, ``ner``) and sentiment records of ``--data`` are read and
   checked with ``mtnlp evaluate``'s reader (``serving/evaluate.py``) and written as plain JSON examples
   (``spacy_examples``): gold words, UPOS tags and IOB2 entity tags (missing when the record has no ``ner``), or
   text with its sentiment category.
2. spaCy side: the examples become DocBin files (``Doc(vocab, words=tokens)``: spaCy gets our gold tokenization);
   the pipeline is ``spacy init config --pipeline tagger,ner,textcat_multilabel --optimize efficiency`` (CPU, no
   vectors: everything from scratch) with one change so that all three components listen to the one shared
   ``tok2vec``: the text classifier is spaCy's ``TextCatEnsemble.v2`` (a tok2vec listener plus the bag-of-words
   model the efficiency preset uses alone), as in spaCy's accuracy preset. The tagger predicts our 17 UPOS tags
   (into ``token.tag_``). The text classifier is ``textcat_multilabel`` over {negative, positive} because it is
   the one that treats a document without categories (every tagging sentence) as *missing* rather than as
   "neither" (spaCy's exclusive ``textcat`` would train those as all-zero targets); a sentiment prediction is the
   more probable of the two. Training runs spaCy's own loop (``train_while_improving``: its batcher, optimizer,
   dropout, console log) until ``--max-minutes`` of wall time (initialization included) or ``--max-steps`` steps,
   whichever comes first, without early stopping and without picking a checkpoint on validation: the final
   weights are scored (the dev figures in spaCy's log are on a small validation slice, for progress only). Then
   it tags the validation records and times ``nlp.pipe`` (batch 64, every component) over the validation
   sentences.
3. Here again: spaCy's answers are scored by ``serving/evaluate.py``'s ``evaluate_signatures`` — the code of
   ``mtnlp evaluate`` with the pipeline's scorers (``model/scoring.py``: token accuracy, conlleval entity F1/P/R,
   accuracy) — by presenting them as our signatures' outputs, so both systems go through the very same scoring.
   Our model (``--model-dir``: a pushed SavedModel, or a model base path: its newest version) is scored the same
   way through its real signatures, and its ``analyze_tokens`` is timed in process on the same sentences in
   batches of 64. Our training wall time is ``--our-train-seconds``, or the Trainer's seconds in the workdir's
   ``run_summary.json`` when that run trained and pushed this version.

Prints one table (POS token accuracy, NER entity F1/P/R, sentiment accuracy, training wall time, tagging
sentences/s) with the machine line, and writes benchmarks/peer_spacy_results.json (``--output``). Run it under
``nice`` on a shared machine; training time depends on the cores it gets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, quiet_tensorflow, table, write_json  # noqa: E402

SPACY_SERIES = (3, 8)
SPACY_REQUIREMENT = f"spacy>={SPACY_SERIES[0]}.{SPACY_SERIES[1]},<{SPACY_SERIES[0]}.{SPACY_SERIES[1] + 1}"
CACHE = Path.home() / ".cache" / "mtnlp"
DEFAULT_VENV = CACHE / "peer-spacy-venv"
DEFAULT_WORK_DIR = CACHE / "peer-spacy-run"
PEER_TASKS = ("tagging", "sentiment")
BATCH_SIZE = 64
TEXTCAT = "textcat_multilabel"
QUICK_RECORDS = 300


class PeerBenchmarkError(RuntimeError):
    """Something the user can fix (a model folder, the spaCy environment); the message says what."""


# -- our records as plain spaCy examples (no spaCy needed) -------------------------------------------------------


def spacy_examples(task_name: str, records: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Plain dicts the spaCy side turns into Docs: ``words``, ``tags`` (UPOS) and ``ents`` (IOB2; None when the
    record has no NER annotation, which spaCy treats as missing, not as "no entities") for tagging; ``text``
    and ``cats`` (1.0 for the gold label, 0.0 for the other) for sentiment."""
    from mtnlp.model.tasks import SENTIMENT_LABELS

    for record in records:
        if task_name == "tagging":
            yield {
                "task": task_name,
                "words": list(record["tokens"]),
                "tags": list(record["pos"]),
                "ents": None if record.get("ner") is None else list(record["ner"]),
            }
        elif task_name == "sentiment":
            cats = {label: float(label == record["label"]) for label in SENTIMENT_LABELS}
            yield {"task": task_name, "text": record["text"], "cats": cats}
        else:
            raise ValueError(f"the spaCy peer has no component for task {task_name!r}")


def words_key(words: Iterable[str]) -> tuple[str, ...]:
    """A sentence's words without the request's "" padding: how a tagging answer is found again."""
    words = list(words)
    while words and words[-1] == "":
        words.pop()
    return tuple(words)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- the spaCy environment -----------------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_spacy_version(python: Path) -> str | None:
    """spaCy's version in that interpreter if it is within SPACY_REQUIREMENT, else None."""
    if not python.exists():
        return None
    probe = (
        "import spacy, sys; major, minor = map(int, spacy.__version__.split('.')[:2]); "
        f"print(spacy.__version__); sys.exit(0 if (major, minor) == {SPACY_SERIES} else 1)"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_spacy_venv(venv: Path, base_python: str) -> tuple[Path, str]:
    """The virtual environment's interpreter and spaCy version, creating the environment and installing spaCy
    from PyPI when it lacks them."""
    python = venv_python(venv)
    version = installed_spacy_version(python)
    if version:
        print(f"spaCy {version} in {venv} (reused)", flush=True)
        return python, version
    if not python.exists():
        print(f"creating the spaCy environment {venv} with {base_python}", flush=True)
        created = subprocess.run([base_python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if created.returncode != 0:
            raise PeerBenchmarkError(
                f"cannot create a virtual environment in {venv} with {base_python} (--venv-python "
                f"picks another interpreter): {created.stderr.strip()}"
            )
    print(f"installing {SPACY_REQUIREMENT} into {venv} (pip, PyPI)", flush=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", SPACY_REQUIREMENT])
    version = installed_spacy_version(python)
    if installed.returncode != 0 or not version:
        raise PeerBenchmarkError(f"installing {SPACY_REQUIREMENT} into {venv} failed (see pip's output above)")
    return python, version


# -- spaCy side (runs in the spaCy environment) --------------------------------------------------------------------


def spacy_docs(vocab, examples: Iterable[Mapping[str, Any]], make_doc: Callable[[str], Any]) -> Iterator[Any]:
    """Gold Docs: tagging on our words (identical tokenization), sentiment through spaCy's tokenizer."""
    from spacy.tokens import Doc

    for example in examples:
        if "words" in example:
            yield Doc(vocab, words=example["words"], tags=example["tags"], ents=example["ents"])
        else:
            doc = make_doc(example["text"])
            doc.cats = dict(example["cats"])
            yield doc


def peer_config(train_path: Path, dev_path: Path, max_steps: int, eval_frequency: int):
    """spaCy's efficiency preset for tagger, ner and textcat_multilabel on CPU, with the text classifier
    listening to the shared tok2vec (TextCatEnsemble, as the accuracy preset has it)."""
    from spacy.cli.init_config import init_config

    config = init_config(lang="en", pipeline=["tagger", "ner", TEXTCAT], optimize="efficiency", gpu=False, silent=True)
    bag_of_words = dict(config["components"][TEXTCAT]["model"])
    width = "${components.tok2vec.model.encode.width}"
    config["components"][TEXTCAT]["model"] = {
        "@architectures": "spacy.TextCatEnsemble.v2",
        "nO": None,
        "tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": width, "upstream": "*"},
        "linear_model": bag_of_words,
    }
    config["paths"]["train"], config["paths"]["dev"] = str(train_path), str(dev_path)
    # the caps decide when training ends; no early stopping on the validation slice
    config["training"].update(max_steps=max_steps, patience=0, eval_frequency=eval_frequency)
    return config


def train_with_caps(nlp, deadline: float) -> dict[str, Any]:
    """spaCy's training loop (as ``spacy train`` runs it), stopped at the ``time.perf_counter()`` deadline or
    by its max_steps."""
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.loop import create_evaluation_callback, create_train_batches, train_while_improving
    from spacy.util import registry, resolve_dot_names

    config = nlp.config.interpolate()
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer = T["optimizer"]
    steps = train_while_improving(
        nlp,
        optimizer,
        create_train_batches(nlp, train_corpus, T["batcher"], T["max_epochs"]),
        create_evaluation_callback(nlp, dev_corpus, T["score_weights"]),
        dropout=T["dropout"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=T["patience"],
        max_steps=T["max_steps"],
        eval_frequency=T["eval_frequency"],
        exclude=T["frozen_components"],
        annotating_components=T["annotating_components"],
        before_update=T["before_update"],
    )
    log_step, finalize_log = T["logger"](nlp, sys.stdout, sys.stderr)
    start, steps_done, epochs_done, stopped_by = time.perf_counter(), 0, 0, "max_steps"
    for _batch, info, is_checkpoint in steps:
        steps_done, epochs_done = info["step"] + 1, info["epoch"]
        log_step(info if is_checkpoint is not None else None)
        if time.perf_counter() >= deadline:
            stopped_by = "max_minutes"
            break
    finalize_log()
    if optimizer.averages:
        nlp.use_params(optimizer.averages)
    return {
        "loop_seconds": time.perf_counter() - start,
        "steps": steps_done,
        "epochs": epochs_done,
        "stopped_by": stopped_by,
    }


def predicted_ents(doc) -> list[str]:
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def pipe_throughput(nlp, sentences: Sequence[Sequence[str]], batch_size: int, repeats: int) -> dict[str, Any]:
    """Sentences/s of ``nlp.pipe`` over Docs built from the words (every component), median of the passes."""
    from spacy.tokens import Doc

    list(nlp.pipe((Doc(nlp.vocab, words=w) for w in sentences[:batch_size]), batch_size=batch_size))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        list(nlp.pipe((Doc(nlp.vocab, words=w) for w in sentences), batch_size=batch_size))
        seconds.append(time.perf_counter() - start)
    return {
        "sentences": len(sentences),
        "pass_seconds": seconds,
        "sentences_per_s": len(sentences) / statistics.median(seconds),
    }


def spacy_side(job_path: Path) -> None:
    """Builds the corpora and config, trains, answers the validation examples and times nlp.pipe; writes
    ``answers.json`` next to the job."""
    import spacy
    from spacy.tokens import Doc, DocBin
    from spacy.training.initialize import init_nlp

    job = json.loads(job_path.read_text())
    work = job_path.parent
    train, validation = read_jsonl(work / "train.jsonl"), read_jsonl(work / "validation.jsonl")
    blank = spacy.blank("en")
    paths = {"train": work / "train.spacy", "dev": work / "dev.spacy"}
    dev_slice = [e for task in PEER_TASKS for e in [x for x in validation if x["task"] == task][: job["dev_records"]]]
    for name, examples in (("train", train), ("dev", dev_slice)):
        DocBin(docs=spacy_docs(blank.vocab, examples, blank.make_doc)).to_disk(paths[name])
    config = peer_config(paths["train"], paths["dev"], job["max_steps"], job["eval_frequency"])
    config.to_disk(work / "config.cfg")
    print(f"spaCy {spacy.__version__}: {len(train)} training examples, config {work / 'config.cfg'}", flush=True)

    # the wall-time cap counts initialization too (reading the corpus for the label sets: minutes on full data)
    start = time.perf_counter()
    nlp = init_nlp(config, use_gpu=-1)
    init_seconds = time.perf_counter() - start
    training = train_with_caps(nlp, deadline=start + job["max_minutes"] * 60)
    training.update(init_seconds=init_seconds, train_seconds=time.perf_counter() - start)
    nlp.to_disk(work / "model-last")

    tagging = [e for e in validation if e["task"] == "tagging"]
    sentiment = [e for e in validation if e["task"] == "sentiment"]
    answers: dict[str, Any] = {"tagging": [], "sentiment": []}
    for doc in nlp.pipe((Doc(nlp.vocab, words=e["words"]) for e in tagging), batch_size=job["batch_size"]):
        answers["tagging"].append(
            {"words": [t.text for t in doc], "pos_tags": [t.tag_ for t in doc], "ner_tags": predicted_ents(doc)}
        )
    for example, doc in zip(sentiment, nlp.pipe((e["text"] for e in sentiment), batch_size=job["batch_size"])):
        answers["sentiment"].append({"text": example["text"], "cats": dict(doc.cats)})
    throughput = pipe_throughput(nlp, [e["words"] for e in tagging], job["batch_size"], job["repeats"])
    print(
        f"spaCy: trained {training['steps']} steps in {training['train_seconds']:.0f} s (stopped by "
        f"{training['stopped_by']}); nlp.pipe {throughput['sentences_per_s']:.0f} sentences/s",
        flush=True,
    )
    about = {
        "version": spacy.__version__,
        "pipeline": nlp.pipe_names,
        "config": str(work / "config.cfg"),
        "model": str(work / "model-last"),
        "training": training,
        "tagging_throughput": throughput,
    }
    (work / "answers.json").write_text(json.dumps({"about": about, **answers}, ensure_ascii=False))


# -- here: scoring both systems the same way ------------------------------------------------------------------------


class RecordedSignature:
    """Answers computed elsewhere (by spaCy), presented as one of our serving signatures: called with the
    request ``evaluate_signatures`` builds, it returns the recorded answer of each row, looked up by the row's
    words or text. This is what lets the peer go through exactly the scoring our model goes through."""

    def __init__(
        self,
        input_name: str,
        key: Callable[[Any], Any],
        answers: Mapping[Any, Mapping[str, Any]],
        outputs: Sequence[str],
    ) -> None:
        self.input_name, self.key, self.answers = input_name, key, answers
        self.structured_outputs = {name: None for name in outputs}

    def __call__(self, **request: Any) -> dict[str, Any]:
        import tensorflow as tf

        rows = [self.answers[self.key(row)] for row in request[self.input_name].numpy()]
        outputs = {}
        for name in self.structured_outputs:
            values = [row[name] for row in rows]
            if values and isinstance(values[0], list) and isinstance(values[0][0], str):  # tags: pad like ours
                longest = max(len(v) for v in values)
                values = [v + [""] * (longest - len(v)) for v in values]
            outputs[name] = tf.constant(values)
        return outputs


def spacy_signatures(answers: Mapping[str, Any]) -> dict[str, RecordedSignature]:
    from mtnlp.model.scoring import as_text as text
    from mtnlp.model.tasks import SENTIMENT_LABELS

    tagged = {words_key(a["words"]): a for a in answers["tagging"]}
    # the sentiment head is scored on probabilities in our label order
    classified = {
        a["text"]: {"sentiment_probabilities": [float(a["cats"][label]) for label in SENTIMENT_LABELS]}
        for a in answers["sentiment"]
    }
    return {
        "analyze_tokens": RecordedSignature(
            "tokens", lambda row: words_key(text(w) for w in row), tagged, ["pos_tags", "ner_tags"]
        ),
        "analyze": RecordedSignature("text", text, classified, ["sentiment_probabilities"]),
    }


def head_metrics(results) -> dict[str, dict[str, float]]:
    return {r.head: {**r.metrics, "examples": r.examples} for r in results}


def our_tagging_throughput(signatures, tagging_data, batch_size: int, repeats: int) -> dict[str, Any]:
    """Sentences/s of our ``analyze_tokens`` in process on the validation sentences, median of the passes; the
    requests are built as ``mtnlp evaluate`` builds them (the words padded with "")."""
    from mtnlp.serving.evaluate import _request

    function, records = signatures["analyze_tokens"], tagging_data.records
    batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]

    def one_pass(some_batches) -> None:
        for batch in some_batches:
            answer = function(**_request(tagging_data.task, batch))
            answer["pos_tags"].numpy(), answer["ner_tags"].numpy()

    one_pass(batches[:1])  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass(batches)
        seconds.append(time.perf_counter() - start)
    return {
        "sentences": len(records),
        "pass_seconds": seconds,
        "sentences_per_s": len(records) / statistics.median(seconds),
    }


def our_training_seconds(model_path: Path, given: float | None) -> tuple[float | None, str]:
    """(seconds, where they come from): ``--our-train-seconds``, or the Trainer's time in run_summary.json of
    the workdir the model was pushed from (workdir/serving_model/<name>/<version>) when that run trained and
    pushed this very version (a later run that did not push, or a cached Trainer, says nothing about it)."""
    if given is not None:
        return given, "--our-train-seconds"
    summary_path = model_path.parents[2] / "run_summary.json" if len(model_path.parents) > 2 else None
    if summary_path is None or not summary_path.exists():
        return None, "unknown: no run_summary.json beside the model's serving_model folder (--our-train-seconds)"
    summary = json.loads(summary_path.read_text())
    trainer = [c for c in summary.get("components", []) if c["component"] == "Trainer"]
    if str(summary.get("pushed_version")) != model_path.name or not trainer or trainer[0]["state"] != "COMPLETE":
        return None, f"unknown: {summary_path}'s run did not train and push version {model_path.name}"
    return float(trainer[0]["seconds"]), f"Trainer in {summary_path} ({summary.get('train_steps')} steps)"


def describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {task} records" for task, n in counts.items())


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def train_spacy_side(ns: argparse.Namespace, python: Path, train, validation, counts) -> tuple[dict, dict] | None:
    """Train and run spaCy in its own environment (a child process), then score its answers: (what the spaCy
    side reports about itself, its head metrics), or None when the child failed (its output says why)."""
    from mtnlp.serving.evaluate import evaluate_signatures

    # spaCy first, with our model not loaded yet: the two systems never compete for the cores
    ns.work_dir.mkdir(parents=True, exist_ok=True)
    (ns.work_dir / "answers.json").unlink(missing_ok=True)  # never score an earlier run's answers
    for split, data in (("train", train), ("validation", validation)):
        write_jsonl(
            ns.work_dir / f"{split}.jsonl", (e for name in PEER_TASKS for e in spacy_examples(name, data[name].records))
        )
    job = {
        "max_minutes": ns.max_minutes,
        "max_steps": ns.max_steps,
        "batch_size": BATCH_SIZE,
        "repeats": ns.repeats,
        "dev_records": 50 if ns.quick else 300,
        "eval_frequency": 10 if ns.quick else 200,
    }
    (ns.work_dir / "job.json").write_text(json.dumps(job))
    print(
        f"spaCy side: training on {describe(counts['train'])}, at most {ns.max_minutes:g} min / {ns.max_steps} steps",
        flush=True,
    )
    child = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--spacy-side", str(ns.work_dir / "job.json")], cwd=REPO
    )
    if child.returncode != 0:
        print(f"error: the spaCy side failed (exit {child.returncode}); its output is above", file=sys.stderr)
        return None
    spacy_answers = json.loads((ns.work_dir / "answers.json").read_text())
    print(f"scoring spaCy's answers on {describe(counts['validation'])} (validation)", flush=True)
    spacy_results, _ = evaluate_signatures(spacy_signatures(spacy_answers), validation, BATCH_SIZE)
    return spacy_answers["about"], head_metrics(spacy_results)


def recorded_spacy_side(path: Path, counts: Mapping[str, Mapping[str, int]], ns: argparse.Namespace):
    """The spaCy side of an earlier results file of this script: (about, head metrics), after checking that it was
    trained and scored on as many records per task and split, with the same caps, as this run would use."""
    try:
        recorded = json.loads(path.read_text())
        about = dict(recorded["systems"]["spacy"])
        settings, recorded_counts = recorded["settings"], recorded["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PeerBenchmarkError(f"{path} is not a results file of this script ({type(e).__name__}: {e})") from e
    wanted = {
        "quick": ns.quick,
        "max_minutes": ns.max_minutes,
        "max_steps": ns.max_steps,
        "max_records": ns.max_records,
    }
    differ = [f"{k}: recorded {settings.get(k)!r}, now {v!r}" for k, v in wanted.items() if settings.get(k) != v]
    if recorded_counts != counts:
        differ.append(f"records: recorded {recorded_counts}, now {counts}")
    if differ:
        raise PeerBenchmarkError(f"{path} was run with other settings; train spaCy again ({'; '.join(differ)})")
    metrics = about.pop("metrics")
    about.pop("train_seconds", None)
    return about, metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, help="our pushed SavedModel, or a model base path (its newest version)")
    ap.add_argument(
        "--data", type=Path, default=REPO / "data", help="folder with tagging/ and sentiment/ (default data/)"
    )
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=30.0,
        help="spaCy training wall-time cap, initialization included (default 30)",
    )
    ap.add_argument("--max-steps", type=int, default=20000, help="spaCy training step cap (default 20000, spaCy's)")
    ap.add_argument("--max-records", type=int, help="at most this many records per task and split")
    ap.add_argument("--our-train-seconds", type=float, help="our training wall time (else from run_summary.json)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the sentences (median reported)")
    ap.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help=f"spaCy's virtual environment (default {DEFAULT_VENV})"
    )
    ap.add_argument("--venv-python", default=sys.executable, help="the interpreter that creates it (default: this one)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"corpora, config, trained spaCy pipeline, answers (default {DEFAULT_WORK_DIR})",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_RECORDS} records per task and split, 20 steps, 1 timed pass",
    )
    ap.add_argument("--output", type=Path, default=default_output("peer_spacy"))
    ap.add_argument(
        "--spacy-from",
        type=Path,
        help="take the spaCy side from an earlier results file (same data, caps and records) instead of training it",
    )
    ap.add_argument("--spacy-side", type=Path, help=argparse.SUPPRESS)  # the child process in spaCy's environment
    ns = ap.parse_args()

    if ns.spacy_side:
        spacy_side(ns.spacy_side)
        return 0
    if ns.model_dir is None:
        ap.error("--model-dir is required: our pushed model, e.g. workdir/serving_model/mtnlp (run `mtnlp run`)")
    if not ns.model_dir.exists():  # before the heavy imports; resolve_saved_model checks what is in it
        print(
            f"error: model folder {ns.model_dir} does not exist: pass our pushed model, e.g. "
            "workdir/serving_model/mtnlp (run `mtnlp run` first)",
            file=sys.stderr,
        )
        return 2
    if ns.quick:
        ns.max_records, ns.max_steps, ns.repeats = ns.max_records or QUICK_RECORDS, min(ns.max_steps, 20), 1
    machine = Machine()
    quiet_tensorflow()
    from mtnlp.model.tasks import get_task
    from mtnlp.serving.evaluate import (
        EvaluationError,
        evaluate_signatures,
        load_signatures,
        read_task_data,
        resolve_saved_model,
    )

    try:
        model_path = Path(resolve_saved_model(str(ns.model_dir)))
        tasks = [get_task(name) for name in PEER_TASKS]
        train = read_task_data(str(ns.data), tasks, ns.max_records, ["train"])
        validation = read_task_data(str(ns.data), tasks, ns.max_records, ["validation"])
        missing = [name for name in PEER_TASKS if name not in train or name not in validation]
        if missing:
            raise EvaluationError(f"{ns.data} lacks train and validation files of {', '.join(missing)}")
        counts = {
            split: {name: len(data[name].records) for name in PEER_TASKS}
            for split, data in (("train", train), ("validation", validation))
        }
        if ns.spacy_from:
            spacy_side_results = recorded_spacy_side(ns.spacy_from, counts, ns)
            print(f"spaCy side: recorded in {ns.spacy_from} (not trained again)", flush=True)
        else:
            python, _ = ensure_spacy_venv(ns.venv, ns.venv_python)
    except (EvaluationError, PeerBenchmarkError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if not ns.spacy_from:
        spacy_side_results = train_spacy_side(ns, python, train, validation, counts)
        if spacy_side_results is None:
            return 1
    spacy_about, peer = spacy_side_results
    print(f"scoring our model on {describe(counts['validation'])} (validation): {model_path}", flush=True)
    try:
        signatures = load_signatures(str(model_path))
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    our_results, skipped = evaluate_signatures(signatures, validation, BATCH_SIZE)
    if skipped:
        print(f"our model lacks: {skipped}", file=sys.stderr)
    our_throughput = our_tagging_throughput(signatures, validation["tagging"], BATCH_SIZE, ns.repeats)
    our_seconds, our_seconds_source = our_training_seconds(model_path, ns.our_train_seconds)

    ours = head_metrics(our_results)
    training = spacy_about["training"]

    def metric(system: Mapping[str, Mapping[str, float]], head: str, name: str) -> str:
        return fmt(system.get(head, {}).get(name))

    rows = [
        ("POS token accuracy", metric(ours, "pos", "token_accuracy"), metric(peer, "pos", "token_accuracy")),
        ("NER entity F1", metric(ours, "ner", "entity_f1"), metric(peer, "ner", "entity_f1")),
        ("NER entity precision", metric(ours, "ner", "entity_precision"), metric(peer, "ner", "entity_precision")),
        ("NER entity recall", metric(ours, "ner", "entity_recall"), metric(peer, "ner", "entity_recall")),
        ("sentiment accuracy", metric(ours, "sentiment", "accuracy"), metric(peer, "sentiment", "accuracy")),
        ("training wall time, s", fmt(our_seconds, 0), fmt(training["train_seconds"], 0)),
        (
            f"tagging sentences/s (batch {BATCH_SIZE})",
            fmt(our_throughput["sentences_per_s"], 0),
            fmt(spacy_about["tagging_throughput"]["sentences_per_s"], 0),
        ),
    ]
    print()
    print(table(["validation", f"mtnlp ({model_path.name})", f"spaCy {spacy_about['version']}"], rows))
    print(f"mtnlp training time: {our_seconds_source}")
    print(
        f"spaCy training: initialization {training['init_seconds']:.0f} s, then {training['steps']} steps in "
        f"{training['loop_seconds']:.0f} s ({training['epochs']} full epochs), stopped by "
        f"{training['stopped_by']} (caps {ns.max_minutes:g} min, {ns.max_steps} steps); "
        f"tagging throughput: {our_throughput['sentences']} sentences, every head/component, "
        f"median of {ns.repeats}"
    )
    print(machine.line())
    write_json(
        ns.output,
        machine,
        {
            "settings": {
                "quick": ns.quick,
                "max_minutes": ns.max_minutes,
                "max_steps": ns.max_steps,
                "max_records": ns.max_records,
                "batch_size": BATCH_SIZE,
                "repeats": ns.repeats,
                "data": str(ns.data),
            },
            "records": counts,
            "systems": {
                "mtnlp": {
                    "model": str(model_path),
                    "metrics": ours,
                    "train_seconds": our_seconds,
                    "train_seconds_source": our_seconds_source,
                    "tagging_throughput": our_throughput,
                },
                "spacy": {**spacy_about, "metrics": peer, "train_seconds": training["train_seconds"]},
                **({"spacy_from": str(ns.spacy_from)} if ns.spacy_from else {}),
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
