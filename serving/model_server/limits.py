"""`mtnlp serve`'s request limits, derived from the model it serves.

`mtnlp-model-server` keeps TF Serving's defaults (a request may expand to whatever one 2 GiB message could carry),
and with them a 67-byte request of shape [100000] holding one sentence costs the model 8 CPU-seconds and 1.5 GB.
`mtnlp serve` knows what a normal request to the project model is, so it bounds one request to a small multiple of
it: at most `BATCHES_PER_REQUEST` normal batches of sentences, each at most `BYTES_PER_TOKEN` bytes per token of the
model's sequence length (the model truncates longer sentences anyway, so longer text is only cost).
"""

from __future__ import annotations

import os

from .servable import read_meta_graph
from .tensors import STRING_ELEMENT_OVERHEAD

NORMAL_BATCH = 32  # sentences: `mtnlp predict --batch-size`, the deploy batching's max_batch_size
BATCHES_PER_REQUEST = 4
BYTES_PER_TOKEN = 32  # a long UTF-8 word and its space; the model keeps `sequence length` tokens per sentence
DEFAULT_SEQUENCE_LENGTH = 128  # when the model does not say (no transform_features signature)
BODY_PER_DECODED_BYTE = 4  # JSON quoting and base64 take more bytes on the wire than decoded


def sequence_length(version_dir: str, tags: tuple[str, ...] = ("serve",)) -> int:
    """Tokens per sentence the model keeps: the fixed length of its `transform_features` outputs ([B, length])."""
    from mtnlp.model.contract import TRANSFORM_SIGNATURE

    signature = read_meta_graph(version_dir, list(tags)).signature_def.get(TRANSFORM_SIGNATURE)
    lengths = [
        t.tensor_shape.dim[1].size
        for t in (signature.outputs.values() if signature else ())
        if len(t.tensor_shape.dim) >= 2 and t.tensor_shape.dim[1].size > 0
    ]
    return max(lengths, default=DEFAULT_SEQUENCE_LENGTH)


def request_limit_flags(version_dir: str) -> list[str]:
    """The mtnlp-model-server flags that bound one request to `BATCHES_PER_REQUEST` normal batches of the model's
    sentences: rows, characters per sentence, elements (token inputs are [rows, length]) and decoded bytes."""
    length = sequence_length(version_dir)
    rows = BATCHES_PER_REQUEST * NORMAL_BATCH
    string_bytes = BYTES_PER_TOKEN * length
    elements = rows * length
    decoded = max(
        rows * (STRING_ELEMENT_OVERHEAD + string_bytes), elements * (STRING_ELEMENT_OVERHEAD + BYTES_PER_TOKEN)
    )
    return [
        f"--max_request_batch_size={rows}",
        f"--max_request_string_bytes={string_bytes}",
        f"--max_request_tensor_elements={elements}",
        f"--max_request_tensor_bytes={decoded}",
        f"--rest_api_max_body_bytes={BODY_PER_DECODED_BYTE * decoded}",
    ]


def latest_version_dir(base: str) -> str | None:
    from .manager import version_directories

    versions = version_directories(base) if os.path.isdir(base) else {}
    return os.path.join(base, versions[max(versions)]) if versions else None
