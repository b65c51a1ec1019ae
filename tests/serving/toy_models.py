"""Small SavedModels for the serving conformance suite (also usable to point the suite at real TF Serving).

    python -m tests.serving.toy_models OUT_DIR [--serving-root /models]

writes, under OUT_DIR:
  half_plus_two/{1,2}     TF2 format. v1: y = 0.5x + 2, v2: y = 0.5x + 3. Signatures: serving_default (x -> y,
                          batch_size), classify and regress (tf.Example with float feature "x"), strings (UTF-8 text
                          -> length), two_inputs, matrix ([B,3]), seq ([B,T]).
  tf1_half_plus_two/1     TF1 format (tf.compat.v1 SavedModelBuilder): predict, classify, regress signatures.
  warmup_counter/1        TF2 model counting its calls, with assets.extra/tf_serving_warmup_requests (3 records).
  broken/3                a version directory that cannot load (copied in by tests).
  models.config           ModelServerConfig for half_plus_two (all versions, labels stable=1, canary=2) and
                          tf1_half_plus_two.
  monitoring.config       MonitoringConfig enabling Prometheus at /monitoring/prometheus/metrics.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
WARMUP_RECORDS = 3


def _set_method_names(version_dir: Path, methods: dict[str, str]) -> None:
    """tf.saved_model.save marks every signature `predict`; classify/regress need their method names."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = version_dir / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    for mg in sm.meta_graphs:
        for key, method in methods.items():
            mg.signature_def[key].method_name = method
    pb.write_bytes(sm.SerializeToString())


def build_half_plus_two(out: Path, version: int, offset: float) -> Path:
    import tensorflow as tf

    class HalfPlus(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(offset)

        def _y(self, x):
            return self.a * x + self.b

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            n = tf.shape(x)[0]
            return {"y": self._y(x), "batch_size": tf.fill([n], n)}

        def _parse(self, inputs):
            return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            y = self._y(self._parse(inputs))
            p = tf.sigmoid(y - 3.0)
            n = tf.shape(y)[0]
            classes = tf.tile(tf.constant([["negative", "positive"]]), [n, 1])
            return {"classes": classes, "scores": tf.stack([1.0 - p, p], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._y(self._parse(inputs))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def strings(self, text):
            chars = tf.strings.unicode_decode(text, "UTF-8", errors="strict")
            return {"length": tf.cast(chars.row_lengths(), tf.int32), "upper": tf.strings.upper(text)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def two_inputs(self, a, b):
            return {"sum": a + b}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def matrix(self, x):
            return {"row_sum": tf.reduce_sum(x, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def seq(self, x):
            n, t = tf.shape(x)[0], tf.shape(x)[1]
            return {"total": tf.reduce_sum(x, axis=1), "width": tf.fill([n], t), "batch_size": tf.fill([n], n)}

    m = HalfPlus()
    path = out / "half_plus_two" / str(version)
    sigs = {"serving_default": m.predict, "classify": m.classify, "regress": m.regress, "strings": m.strings,
            "two_inputs": m.two_inputs, "matrix": m.matrix, "seq": m.seq}
    tf.saved_model.save(m, str(path), signatures={k: f.get_concrete_function() for k, f in sigs.items()})
    _set_method_names(path, {"classify": CLASSIFY, "regress": REGRESS})
    return path


def build_tf1(out: Path) -> Path:
    import tensorflow as tf

    v1 = tf.compat.v1
    path = out / "tf1_half_plus_two" / "1"
    with tf.Graph().as_default():
        a = v1.get_variable("a", initializer=0.5)
        b = v1.get_variable("b", initializer=2.0)
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        y = tf.identity(a * x + b, name="y")
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        fx = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([], tf.float32)})["x"]
        ye = a * fx + b
        p = tf.sigmoid(ye - 3.0)
        scores = tf.stack([1.0 - p, p], axis=1)
        classes = tf.tile(tf.constant([["negative", "positive"]]), [tf.shape(ye)[0], 1])
        utils = v1.saved_model.signature_def_utils
        sig_map = {
            "serving_default": utils.predict_signature_def({"x": x}, {"y": y}),
            "classify": utils.classification_signature_def(serialized, classes, scores),
            "regress": utils.regression_signature_def(serialized, ye),
        }
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=sig_map)
            builder.save()
    return path


def build_warmup_counter(out: Path) -> Path:
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    class Counter(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            c = self.calls.assign_add(1)
            return {"calls": tf.fill(tf.shape(x), c), "y": x}

    m = Counter()
    path = out / "warmup_counter" / "1"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.predict.get_concrete_function()})
    extra = path / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as w:
        for i in range(WARMUP_RECORDS):
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="warmup_counter"))
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([float(i)], dtype=tf.float32))
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())
    return path


def build_broken(out: Path) -> Path:
    path = out / "broken" / "3"
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(b"this is not a SavedModel protobuf")
    return path


def models_config(root: str) -> str:
    return f"""model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{root}/half_plus_two"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "tf1_half_plus_two"
    base_path: "{root}/tf1_half_plus_two"
    model_platform: "tensorflow"
  }}
}}
"""


def build_all(out: Path, serving_root: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    build_half_plus_two(out, 1, 2.0)
    build_half_plus_two(out, 2, 3.0)
    build_tf1(out)
    build_warmup_counter(out)
    build_broken(out)
    (out / "models.config").write_text(models_config(serving_root or str(out)))
    (out / "monitoring.config").write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    return out


def copy_version(src: Path, dst: Path) -> None:
    """Publish a version directory atomically (copy aside, then rename), as the Pusher does."""
    tmp = dst.parent / f".tmp-{dst.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, dst)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--serving-root", help="base path the server sees OUT_DIR as (e.g. /models in a container)")
    ns = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(build_all(ns.out, ns.serving_root))
