"""Run in a fresh interpreter: loads a pushed SavedModel with Keras imports blocked, calls every
signature on raw sentences and prints the outputs as JSON. Usage: python call_signatures.py MODEL_DIR"""

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

load_text_ops()
model = tf.saved_model.load(sys.argv[1])
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
    path = [os.path.join(root, f) for root, _, files in os.walk(os.path.join(sys.argv[1], "assets"))
            for f in files if f == "translation_words"]  # fmt: skip
    with open(path[0], encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


result = {
    "signatures": sorted(model.signatures.keys()),
    "analyze": (plain(model.signatures["serving_default"](text=sentences))),
    "analyze_tokens": (plain(model.signatures["analyze_tokens"](
        tokens=tf.constant([["Apple", "sued", "Samsung", "in", "California", "."], ["Hi", "!", "", "", "", ""]])))),
    "relation": (plain(model.signatures["relation"](
        text=tf.constant(["The company fabricates plastic chairs.", "Smoke came from the fire."]),
        e1_start=tf.constant([4, 0], tf.int64), e1_end=tf.constant([11, 5], tf.int64),
        e2_start=tf.constant([31, 20], tf.int64), e2_end=tf.constant([37, 24], tf.int64)))),
    "translate": translate(),
    "target_vocabulary": target_vocabulary(),
    "blocked_modules_loaded": sorted(m for m, v in sys.modules.items() if m.split(".")[0] in BLOCKED and v is not None),
}
print(json.dumps(result))
