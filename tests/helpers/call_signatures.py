"""Run in a fresh interpreter: loads a pushed SavedModel with Keras imports blocked, calls every
signature on raw sentences and prints the outputs as JSON. Usage: python call_signatures.py MODEL_DIR [--move-away]

With ``--move-away`` the model's directory is renamed right after loading (what a version swap or a
cleanup does to a served model), so every call proves that nothing is read from its files after loading;
the output then also says how many bytes the process read per request (``/proc/self/io``'s rchar)."""

import json
import os
import sys

# tensorflow_text's Python package too (it imports Keras): the graph's one TF Text op is registered
# from its kernel library alone, as stock TF Serving links it.
BLOCKED = ("keras", "keras_nlp", "keras_hub", "tf_keras", "tensorflow_text")
# None in sys.modules makes `import keras` raise ImportError and find_spec() report it missing,
# exactly as if it were not installed (TensorFlow itself copes with that).
for _name in BLOCKED:
    sys.modules[_name] = None
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf  # noqa: E402

from mtnlp.model.serving_ops import load_text_ops  # noqa: E402

MODEL_DIR, MOVE_AWAY = sys.argv[1], "--move-away" in sys.argv[2:]
load_text_ops()
model = tf.saved_model.load(MODEL_DIR)
sentences = tf.constant(["Apple sued Samsung in California.", "I really love this wonderful movie!"])


def plain(outputs):
    return {k: decoded(v.numpy().tolist()) for k, v in outputs.items()}


def decoded(value):
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def translate():
    # mixed lengths, so that short rows are padded inside the batch
    sentences = ["Where is the station?", "Go.", "I think that Tom doesn't like to read books at night.", "Thank you."]
    signature = model.signatures["translate"]
    return {
        "sentences": sentences,
        "batch": decoded(signature(text=tf.constant(sentences))["translation"].numpy().tolist()),
        "alone": [decoded(signature(text=tf.constant([s]))["translation"].numpy().tolist())[0] for s in sentences],
    }


def target_vocabulary():
    # the words the translation head can output: Transform's vocabulary file, an asset of the model
    path = [
        os.path.join(root, f)
        for root, _, files in os.walk(os.path.join(MODEL_DIR, "assets"))
        for f in files
        if f == "translation_words"
    ]
    with open(path[0], encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def bytes_read_per_request(calls: int = 20) -> float:
    """Bytes this process reads per request of the plain and the translation signature (after a first call)."""
    requests = [
        lambda: model.signatures["serving_default"](text=sentences),
        lambda: model.signatures["translate"](text=sentences),
    ]
    for request in requests:
        request()
    before = bytes_read()
    for _ in range(calls):
        for request in requests:
            request()
    return (bytes_read() - before) / (calls * len(requests))


vocabulary = target_vocabulary()
if MOVE_AWAY:
    os.rename(MODEL_DIR, MODEL_DIR.rstrip("/") + ".moved")
result = {
    "signatures": sorted(model.signatures.keys()),
    "analyze": (plain(model.signatures["serving_default"](text=sentences))),
    "analyze_tokens": (
        plain(
            model.signatures["analyze_tokens"](
                tokens=tf.constant([["Apple", "sued", "Samsung", "in", "California", "."], ["Hi", "!", "", "", "", ""]])
            )
        )
    ),
    "relation": (
        plain(
            model.signatures["relation"](
                text=tf.constant(["The company fabricates plastic chairs.", "Smoke came from the fire."]),
                e1_start=tf.constant([4, 0], tf.int64),
                e1_end=tf.constant([11, 5], tf.int64),
                e2_start=tf.constant([31, 20], tf.int64),
                e2_end=tf.constant([37, 24], tf.int64),
            )
        )
    ),
    "translate": translate(),
    "target_vocabulary": vocabulary,
    "bytes_read_per_request": bytes_read_per_request() if MOVE_AWAY else None,
    "blocked_modules_loaded": sorted(m for m, v in sys.modules.items() if m.split(".")[0] in BLOCKED and v is not None),
}
print(json.dumps(result))
