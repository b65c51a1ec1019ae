"""Run in a fresh interpreter: lists every op of a SavedModel (graph and function library) and checks
that core TensorFlow, plus the TF Text kernels that stock TF Serving links, registers it (Keras and
TF Text's Python package blocked), that none calls Python, and that no function a request runs reads a file or fills a lookup table.
Prints JSON {"ops": [...], "unregistered": [...], "text_ops": [...], "python_ops": [...], "per_call_initialisation":
[...]} (text_ops: those only TF Text registers; per_call_initialisation: "function: op" for each op that reads
a file or fills a table outside the functions that run once, at load or save)."""

import json
import os
import sys

for _name in ("keras", "keras_nlp", "keras_hub", "tf_keras", "tensorflow_text"):
    sys.modules[_name] = None
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import re  # noqa: E402

from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow.python.framework import op_def_registry  # noqa: E402

saved_model = saved_model_pb2.SavedModel()
with open(os.path.join(sys.argv[1], "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
ops = set()
for meta_graph in saved_model.meta_graphs:
    ops.update(node.op for node in meta_graph.graph_def.node)
    for function in meta_graph.graph_def.library.function:
        ops.update(node.op for node in function.node_def)
INITIALISING_OPS = {
    "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2",
    "InitializeTable",
    "InitializeTableV2",
    "LookupTableImportV2",
    "ReadFile",
    "RestoreV2",
    "TFRecordDataset",
    "TFRecordDatasetV2",
    "TextLineDataset",
    "TextLineDatasetV2",
    "FixedLengthRecordDataset",
    "MatchingFiles",
}
# the functions that run once: a resource's initializer at load (lookup tables), restore and save
RUN_ONCE = re.compile(r"^__inference__(initializer|traced_restore|traced_save)_\d+$")
per_call_initialisation = sorted(
    {
        f"{f.signature.name}: {node.op}"
        for mg in saved_model.meta_graphs
        for f in mg.graph_def.library.function
        if not RUN_ONCE.match(f.signature.name)
        for node in f.node_def
        if node.op in INITIALISING_OPS
    }
)
functions = {f.signature.name for mg in saved_model.meta_graphs for f in mg.graph_def.library.function}
real_ops = sorted(ops - functions)  # a node may call a library function by name
core_only = [op for op in real_ops if op_def_registry.get(op) is None]
from mtnlp.model.serving_ops import load_text_ops  # noqa: E402

load_text_ops()
print(
    json.dumps(
        {
            "ops": real_ops,
            "unregistered": [op for op in real_ops if op_def_registry.get(op) is None],
            "text_ops": [op for op in core_only if op_def_registry.get(op) is not None],
            "python_ops": [op for op in real_ops if "PyFunc" in op],
            "per_call_initialisation": per_call_initialisation,
        }
    )
)
