"""A servable (TF Serving's word for one loaded model version): ``LoadedModel``, the SavedModel's signature defs
(what clients see) and what runs them, and ``Servable``, that model as requests reach it (batching, limits).

TF1-format SavedModels (`SavedModelBuilder`) are loaded as TF Serving's SavedModelBundle loads them: into a TF1
`Session` with the MetaGraph's restore and init ops, and a signature runs as one `Session::Run` feeding its input
tensors by name. So graphs whose signature inputs carry no shape (old exports with a `ParseExample` over serialized
examples) load, and a request deadline becomes the run's `timeout_in_ms`.

TF2-format SavedModels (`tf.saved_model.save`, with an object graph) are loaded with `tf.saved_model.load`: the
session restore of their TF1 compatibility graph misses variables of Keras 3 exports such as the project model
(observed: "Could not find variable sentiment/bias" at the first run). Their signature functions are called through
the flat-argument path, which skips the Python-side TensorSpec check.

Either way shape compatibility is TensorFlow's business, as in TF Serving: a [3] vector fed to a [-1, 1] signature
runs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import BatchScheduler
from .errors import (
    ServingError,
    data_loss,
    deadline_exceeded,
    failed_precondition,
    from_exception,
    invalid_argument,
    not_found,
    unimplemented,
)
from .tensors import RequestLimits, dtype_name, numpy_dtype, numpy_dtype_enum, shape_of

INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"


@dataclass(frozen=True)
class TensorInfo:
    alias: str
    dtype: int
    shape: list[int] | None  # None: unknown rank; -1: unknown dimension
    name: str  # the graph tensor, e.g. "serving_default_x:0" ("" for sparse/composite encodings)


@dataclass(frozen=True)
class Signature:
    key: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def read_meta_graph(path: str, tags: list[str]):
    """The MetaGraphDef whose tag set equals `tags`, read from saved_model.pb (or .pbtxt), with TF Serving's
    messages for a missing SavedModel or tag set."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as f:
                saved.ParseFromString(f.read())
        elif os.path.exists(pbtxt):
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved)
        else:
            raise not_found(f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    except ServingError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a data loss on that version
        raise data_loss(f"Can't parse {pb} as binary proto: {e}") from e
    wanted = set(tags)
    for mg in saved.meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            return mg
    available = [sorted(mg.meta_info_def.tags) for mg in saved.meta_graphs]
    raise not_found(
        f"Could not find meta graph def matching supplied tags: {{ {', '.join(tags)} }}. "
        f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli` (available: {available})"
    )


def _signatures(meta_graph) -> dict[str, Signature]:
    out = {}
    for key, sd in meta_graph.signature_def.items():

        def infos(m):
            return {a: TensorInfo(a, t.dtype, shape_of(t.tensor_shape), t.name) for a, t in m.items()}

        out[key] = Signature(key, sd.method_name, infos(sd.inputs), infos(sd.outputs))
    return out


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """The ConfigProto every model's session gets (TF Serving's session_config from the parallelism flags)."""
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
        allow_soft_placement=True,
    )


class LoadedModel:
    """A SavedModel loaded for serving. Thread-safe: concurrent runs share the session, as in TF Serving."""

    def __init__(self, path: str, tags: list[str], config: Any = None) -> None:
        import tensorflow as tf
        from tensorflow.python.client import pywrap_tf_session

        self.path = path
        self.meta_graph = read_meta_graph(path, tags)
        # The init op's entry (TF2 exports) names an operation, not tensors: it is not a signature to serve.
        self.signatures = {k: v for k, v in _signatures(self.meta_graph).items() if k != INIT_OP_SIGNATURE_KEY}
        self._session = None
        self._functions: dict[str, Any] = {}
        if self.meta_graph.object_graph_def.nodes:  # TF2 format
            try:
                self._functions = dict(tf.saved_model.load(path, tags=tags).signatures)
            except Exception as e:  # noqa: BLE001 - any failure is this version's load error
                raise from_exception(e) from e
        else:
            self._graph = tf.Graph()
            self._session = tf.compat.v1.Session(graph=self._graph, config=config)
            try:
                with self._graph.as_default():
                    tf.compat.v1.saved_model.loader.load(self._session, tags, path)
                # Graph tensors are resolved once; a signature naming a tensor the graph lacks fails the load.
                self._endpoints = {
                    info.name: self._graph.get_tensor_by_name(info.name)._as_tf_output()  # noqa: SLF001
                    for sig in self.signatures.values()
                    for info in (*sig.inputs.values(), *sig.outputs.values())
                    if info.name
                }
            except Exception as e:  # noqa: BLE001
                self._session.close()
                raise from_exception(e) from e
        self._tf = tf
        self._tf_session = pywrap_tf_session
        self._run_options = tf.compat.v1.RunOptions
        self._closed = threading.Event()

    def signature(self, key: str) -> Signature:
        try:
            return self.signatures[key]
        except KeyError:
            raise failed_precondition(f'Serving signature key "{key}" not found.') from None

    def validate_inputs(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names and dtypes against the signature (INVALID_ARGUMENT naming the culprit); shapes are left to
        TensorFlow, as TF Serving leaves them to Session::Run."""
        extra = sorted(set(inputs) - set(sig.inputs))
        missing = sorted(set(sig.inputs) - set(inputs))
        if extra or missing:
            if len(inputs) == len(sig.inputs) and extra:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {extra[0]}. Inputs expected to be in the set "
                    f"{{{','.join(sorted(sig.inputs))}}}."
                )
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(sig.inputs)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(sig.inputs))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        checked = {}
        for i, (alias, info) in enumerate(sorted(sig.inputs.items())):
            arr = inputs[alias]
            got = numpy_dtype_enum(arr)
            if got != info.dtype:
                raise invalid_argument(
                    f"Expects arg[{i}] to be {dtype_name(info.dtype)} but {dtype_name(got)} is provided "
                    f"(input '{alias}')"
                )
            want = numpy_dtype(info.dtype)
            checked[alias] = arr if want is None or want is object else arr.astype(want, copy=False)
        return checked

    def run(
        self,
        sig: Signature,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...] | None = None,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One Session::Run of `sig` (only the `outputs` aliases, default all); `deadline` (time.monotonic()) becomes
        the run's timeout, so TensorFlow abandons work nobody waits for any more (DEADLINE_EXCEEDED)."""
        aliases = tuple(sorted(sig.outputs)) if outputs is None else outputs
        if self._session is None:
            return self._run_function(sig, inputs, aliases)
        try:
            feeds = {self._endpoint(sig, sig.inputs[alias]): arr for alias, arr in inputs.items()}
            fetches = [self._endpoint(sig, sig.outputs[alias]) for alias in aliases]
        except KeyError as e:
            raise invalid_argument(f"Unknown tensor alias {e} for signature {sig.key}") from None
        options = None
        if deadline is not None:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise deadline_exceeded("Deadline exceeded before the model ran")
            options = self._tf_session.TF_NewBufferFromString(
                self._run_options(timeout_in_ms=remaining_ms).SerializeToString()
            )
        try:
            values = self._session._call_tf_sessionrun(options, feeds, fetches, [], None)  # noqa: SLF001
        except Exception as e:  # noqa: BLE001 - the model's own error, with TF's code
            raise from_exception(e) from e
        finally:
            if options is not None:
                self._tf_session.TF_DeleteBuffer(options)
        return dict(zip(aliases, (np.asarray(v) for v in values)))

    def _run_function(
        self, sig: Signature, inputs: dict[str, np.ndarray], aliases: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """A TF2 signature function, called with flat arguments (no TensorSpec shape check, as a Session feed)."""
        fn = self._functions.get(sig.key)
        if fn is None:
            raise failed_precondition(f'Serving signature key "{sig.key}" not found.')
        tf = self._tf
        try:
            args = [
                tf.constant(inputs[name], dtype=tf.dtypes.as_dtype(sig.inputs[name].dtype)) for name in fn._arg_keywords
            ]  # noqa: SLF001 - the function's own argument order
            result = fn._call_flat(args, fn.captured_inputs)  # noqa: SLF001
        except ServingError:
            raise
        except Exception as e:  # noqa: BLE001 - the model's own error, with TF's code
            raise from_exception(e) from e
        return {alias: result[alias].numpy() for alias in aliases}

    def _endpoint(self, sig: Signature, info: TensorInfo) -> Any:
        if not info.name:
            raise unimplemented(
                f"Signature {sig.key}: tensor '{info.alias}' is not a dense tensor; only dense tensors are served"
            )
        return self._endpoints[info.name]

    def close(self) -> None:
        """Release the session (the version's memory); called once no request uses this version any more."""
        if not self._closed.is_set():
            self._closed.set()
            if self._session is not None:
                self._session.close()
            self._functions = {}


@dataclass
class Servable:
    """What a request runs on: a model version, optionally behind a batch scheduler, with the server's per-request
    limits and TF Serving's `--enable_signature_method_name_check` setting."""

    name: str
    version: int
    model: LoadedModel
    batcher: BatchScheduler | None = None
    limits: RequestLimits = RequestLimits()
    method_name_check: bool = False

    def run(
        self,
        sig: Signature,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...] | None = None,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        checked = self.model.validate_inputs(sig, inputs)
        if self.batcher is not None:
            return self.batcher.run(sig.key, checked, outputs, deadline)
        return self.model.run(sig, checked, outputs, deadline)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.model.close()
