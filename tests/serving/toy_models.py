"""Small SavedModels for the serving conformance suite (also usable to point the suite at real TF Serving).

    python -m tests.serving.toy_models OUT_DIR [--serving-root /models]

writes, under OUT_DIR:
  half_plus_two/{1,2}     TF2 format. v1: y = 0.5x + 2, v2: y = 0.5x + 3. Signatures: serving_default (x -> y,
                          batch_size), classify and regress (tf.Example with float feature "x"), strings (UTF-8 text
                          -> length), two_inputs, matrix ([B,3]), seq ([B,T]).
  tf1_half_plus_two/1     TF1 format (tf.compat.v1 SavedModelBuilder): predict, classify, regress signatures.
  tf2_padded/00000123     TF2 format written by tf.saved_model.save into a zero-padded version directory (version
                          123); y = 2x - 1. Every signature keeps tf.saved_model.save's `predict` method name:
                          serving_default (x [-1, 1] -> y), classify (tf.Example "x" -> scores [B, 2]) and regress
                          (tf.Example "x" -> outputs), as TF Serving serves them on Classify/Regress.
  tf1_half_plus_three/1   TF1 format like TF Serving's testdata saved_model_half_plus_three: a ParseExample over a
                          shapeless string placeholder, signature TensorInfos without shapes (old exporters);
                          serving_default (x [-1, 1] -> y = 0.5x + 3), regress and classify over tf.Examples.
  warmup_counter/1        TF2 model counting its calls, with assets.extra/tf_serving_warmup_requests (3 records).
  broken/3                a version directory that cannot load (copied in by tests).
  models.config           ModelServerConfig for half_plus_two (all versions, labels stable=1, canary=2),
                          tf1_half_plus_two, tf2_padded and tf1_half_plus_three.
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

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.float32, name="a"), tf.TensorSpec([None], tf.float32, name="b")]
        )
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
    sigs = {
        "serving_default": m.predict,
        "classify": m.classify,
        "regress": m.regress,
        "strings": m.strings,
        "two_inputs": m.two_inputs,
        "matrix": m.matrix,
        "seq": m.seq,
    }
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


def build_tf2_padded(out: Path) -> Path:
    """tf.saved_model.save into `00000123`, method names left as written (predict) on the classify/regress ones."""
    import tensorflow as tf

    class TwiceMinusOne(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(2.0)
            self.b = tf.Variable(-1.0)

        def _parse(self, inputs):
            return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            p = tf.sigmoid(self.a * self._parse(inputs) + self.b)
            return {"scores": tf.stack([1.0 - p, p], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self.a * self._parse(inputs) + self.b}

    m = TwiceMinusOne()
    path = out / "tf2_padded" / "00000123"
    tf.saved_model.save(
        m,
        str(path),
        signatures={
            "serving_default": m.predict.get_concrete_function(),
            "classify": m.classify.get_concrete_function(),
            "regress": m.regress.get_concrete_function(),
        },
    )
    return path


def build_tf1_half_plus_three(out: Path) -> Path:
    """Like TF Serving's saved_model_half_plus_three: ParseExample over a placeholder of unknown shape, and signature
    TensorInfos that carry no shape at all (which TF2's loader reads as scalars)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    v1 = tf.compat.v1
    path = out / "tf1_half_plus_three" / "1"

    def info(tensor) -> meta_graph_pb2.TensorInfo:
        return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=tensor.dtype.as_datatype_enum)

    with tf.Graph().as_default():
        a = v1.get_variable("a", initializer=0.5)
        c = v1.get_variable("c", initializer=3.0)
        serialized = v1.placeholder(tf.string, name="tf_example")  # no shape, as the original
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        y_examples = tf.add(a * parsed["x"], c, name="y_from_examples")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(a * x, c, name="y")
        p = tf.sigmoid(y_examples - 3.0)
        scores = tf.concat([1.0 - p, p], axis=1, name="scores")
        build = v1.saved_model.signature_def_utils.build_signature_def
        sig_map = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "regress": build({"inputs": info(serialized)}, {"outputs": info(y_examples)}, REGRESS),
            "classify": build({"inputs": info(serialized)}, {"scores": info(scores)}, CLASSIFY),
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
            w.write(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=req)
                ).SerializeToString()
            )
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
  config {{
    name: "tf2_padded"
    base_path: "{root}/tf2_padded"
    model_platform: "tensorflow"
  }}
  config {{
    name: "tf1_half_plus_three"
    base_path: "{root}/tf1_half_plus_three"
    model_platform: "tensorflow"
  }}
}}
"""


def build_all(out: Path, serving_root: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    build_half_plus_two(out, 1, 2.0)
    build_half_plus_two(out, 2, 3.0)
    build_tf1(out)
    build_tf2_padded(out)
    build_tf1_half_plus_three(out)
    build_warmup_counter(out)
    build_broken(out)
    (out / "models.config").write_text(models_config(serving_root or str(out)))
    (out / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    )
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
