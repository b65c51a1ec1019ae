"""The PredictionService semantics (Predict, Classify, Regress, MultiInference, GetModelMetadata) on one servable.

Front ends (gRPC, REST, warmup) resolve the servable, then call these with the request protos.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.python.saved_model import signature_constants
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from .errors import ServingError, failed_precondition, invalid_argument
from .servable import Servable, Signature
from .tensors import RequestBudget, fill_proto, to_numpy

# TF Serving's signature when a request names none (tensorflow/python/saved_model/signature_constants.py).
DEFAULT_SIGNATURE = signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _fill_spec(spec, name: str, version: int, signature_name: str | None) -> None:
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name


def predict(
    servable: Servable, request: predict_pb2.PredictRequest, deadline: float | None = None
) -> predict_pb2.PredictResponse:
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = servable.model.signature(key)
    budget = RequestBudget(servable.limits)
    inputs = {alias: to_numpy(t, alias, budget) for alias, t in request.inputs.items()}
    aliases = _output_filter(sig, list(request.output_filter))
    outputs = servable.run(sig, inputs, aliases, deadline)
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, request.model_spec.name, servable.version, key)
    for alias in aliases:
        fill_proto(response.outputs[alias], outputs[alias], sig.outputs[alias].dtype)
    return response


def predict_arrays(
    servable: Servable,
    signature_name: str,
    inputs: dict[str, np.ndarray],
    output_filter: list[str] | None = None,
    deadline: float | None = None,
) -> dict[str, np.ndarray]:
    """Predict on numpy inputs (the REST path): same validation and limits, no proto round trip."""
    sig = servable.model.signature(signature_name or DEFAULT_SIGNATURE)
    budget = RequestBudget(servable.limits)
    for alias, arr in inputs.items():
        budget.charge_array(alias, arr)
    aliases = _output_filter(sig, output_filter or [])
    return servable.run(sig, inputs, aliases, deadline)


def _output_filter(sig: Signature, wanted: list[str]) -> tuple[str, ...]:
    if not wanted:
        return tuple(sorted(sig.outputs))
    seen: set[str] = set()
    for alias in wanted:
        if alias not in sig.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(sig.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(wanted)


def serialize_examples(inp) -> np.ndarray:
    """Input (ExampleList or ExampleListWithContext) -> serialized tf.Examples; context features merged in."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        examples = list(inp.example_list.examples)
        serialized = [e.SerializeToString() for e in examples]
    elif kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        examples = list(inp.example_list_with_context.examples)
        serialized = []
        for e in examples:
            merged = example_pb2.Example()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)  # per-example features win over the context's
            serialized.append(merged.SerializeToString())
    else:
        raise invalid_argument("Input is empty.")
    if not serialized:
        raise invalid_argument("Input is empty.")
    arr = np.empty(len(serialized), dtype=object)
    arr[:] = serialized
    return arr


def _example_signature(servable: Servable, key: str, method: str, what: str) -> Signature:
    """The Classify/Regress signature `key`, checked as TF Serving's Get{Classification,Regression}SignatureDef:
    its method name only with --enable_signature_method_name_check (TF2 SavedModels always say `predict`),
    otherwise its shape: one input named `inputs` and the outputs the API reads."""
    sig = servable.model.signatures.get(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if servable.method_name_check and sig.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if what == "classification":
        if len(sig.outputs) not in (1, 2):
            raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "inputs" not in sig.inputs:
            raise invalid_argument(f"No classification inputs found in SignatureDef: {key}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise failed_precondition(
                f"Expected classification signature outputs to contain at least one of "
                f'"classes" or "scores". Signature was: {key}'
            )
    else:
        if len(sig.outputs) != 1:
            raise invalid_argument("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            raise invalid_argument(f"No regression inputs found in SignatureDef: {key}")
        if "outputs" not in sig.outputs:
            raise failed_precondition(f"No regression outputs found in SignatureDef: {key}")
    return sig


def _run_examples(servable: Servable, sig: Signature, inp, deadline: float | None) -> tuple[dict[str, np.ndarray], int]:
    serialized = serialize_examples(inp)
    return servable.run(sig, {"inputs": serialized}, None, deadline), len(serialized)


def classify_result(
    servable: Servable, request, deadline: float | None = None
) -> tuple[str, classification_pb2.ClassificationResult]:
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = _example_signature(servable, key, CLASSIFY_METHOD, "classification")
    out, n = _run_examples(servable, sig, request.input, deadline)
    classes, scores = out.get("classes"), out.get("scores")
    for name, arr, dtype in (("classes", classes, object), ("scores", scores, np.float32)):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}")
        if arr.dtype != dtype:
            raise invalid_argument(
                f"Expected {name} Tensor of {'DT_STRING' if dtype is object else 'DT_FLOAT'}. Got: {arr.dtype}"
            )
        if arr.shape[0] != n:
            raise invalid_argument(f"Expected {name} output batch size of {n}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    result = classification_pb2.ClassificationResult()
    k = (classes if classes is not None else scores).shape[1]
    score_values = scores.tolist() if scores is not None else None
    for i in range(n):
        c = result.classifications.add()
        for j in range(k):
            cls = c.classes.add()
            if classes is not None:
                label = classes[i, j]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if score_values is not None:
                cls.score = score_values[i][j]
    return key, result


def regress_result(
    servable: Servable, request, deadline: float | None = None
) -> tuple[str, regression_pb2.RegressionResult]:
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = _example_signature(servable, key, REGRESS_METHOD, "regression")
    out, n = _run_examples(servable, sig, request.input, deadline)
    values = out["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(values.shape)}"
        )
    if values.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    result = regression_pb2.RegressionResult()
    for v in values.reshape(-1).tolist():
        result.regressions.add(value=v)
    return key, result


def classify(servable: Servable, request, deadline: float | None = None) -> classification_pb2.ClassificationResponse:
    key, result = classify_result(servable, request, deadline)
    response = classification_pb2.ClassificationResponse(result=result)
    _fill_spec(response.model_spec, request.model_spec.name, servable.version, key)
    return response


def regress(servable: Servable, request, deadline: float | None = None) -> regression_pb2.RegressionResponse:
    key, result = regress_result(servable, request, deadline)
    response = regression_pb2.RegressionResponse(result=result)
    _fill_spec(response.model_spec, request.model_spec.name, servable.version, key)
    return response


def multi_inference(servable: Servable, request, deadline: float | None = None) -> inference_pb2.MultiInferenceResponse:
    if not request.tasks:
        raise invalid_argument("MultiInferenceRequest must have at least one task.")
    seen: set[str] = set()
    for task in request.tasks:
        if task.model_spec.name != request.tasks[0].model_spec.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        sub: Any = (
            classification_pb2.ClassificationRequest
            if task.method_name == CLASSIFY_METHOD
            else regression_pb2.RegressionRequest
        )(model_spec=task.model_spec, input=request.input)
        r = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            key, res = classify_result(servable, sub, deadline)
            r.classification_result.CopyFrom(res)
        else:
            key, res = regress_result(servable, sub, deadline)
            r.regression_result.CopyFrom(res)
        _fill_spec(r.model_spec, task.model_spec.name, servable.version, key)
    return response


def metadata(
    servable: Servable,
    request,
    deadline: float | None = None,  # noqa: ARG001 - same call shape
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for f in fields:
        if f != "signature_def":
            raise invalid_argument(f"Metadata field {f} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, request.model_spec.name, servable.version, None)
    sdm = get_model_metadata_pb2.SignatureDefMap()
    for k, v in servable.model.meta_graph.signature_def.items():
        sdm.signature_def[k].CopyFrom(v)
    response.metadata["signature_def"].Pack(sdm)
    return response


__all__ = ["Servable", "ServingError", "predict", "classify", "regress", "multi_inference", "metadata"]
