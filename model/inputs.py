"""Input kinds: how a task's records reach the shared encoder, and how a client asks about them.

Every example of every task becomes the same encoder input (words, their ids and features, entity
markers; see ``model/preprocessing.py``). An input kind says which record fields make those words:

- ``TextInput(field)``: raw text, split into words in the graph;
- ``TokensInput(field)``: the data's own tokens (scored on the corpus' tokenization);
- ``TextWithSpansInput(field, spans)``: raw text plus two marked character spans (entity markers
  1 and 2 on their words).

It also owns the client's side: the serving signature's inputs (``request_specs``), how they become
raw features (``raw_features``), the request for a batch of records (``request``, used by
``mtnlp evaluate``) and a warmup request. Which *plain* signature answers the task's sentence and
token heads is ``plain_signature``: ``analyze`` (text) or ``analyze_tokens`` (tokens).

A new input kind (say, a sentence pair) is one subclass here: its fields, its words, its request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

TEXT_REQUEST = "text"
TOKENS_REQUEST = "tokens"


def _rows(values: tf.Tensor) -> tf.SparseTensor:
    """[B] or [B, N] dense values as a [B, N] SparseTensor holding every value (zeros included)."""
    import tensorflow as tf

    values = values if values.shape.rank == 2 else values[:, None]
    shape = tf.shape(values, out_type=tf.int64)
    indices = tf.where(tf.ones_like(values, tf.bool))
    return tf.SparseTensor(indices, tf.reshape(values, [-1]), shape)


@dataclasses.dataclass(frozen=True)
class EncoderInput:
    """Base of the input kinds. ``text_field``/``tokens_field``/``span_fields`` name what the encoder reads."""

    plain_signature: ClassVar[str] = "analyze"

    @property
    def fields(self) -> tuple[str, ...]:
        """The record fields this input reads."""
        raise NotImplementedError

    @property
    def text_field(self) -> str | None:
        """The raw-text field split into words, if any."""
        return None

    @property
    def tokens_field(self) -> str | None:
        """The field of ready-made words, if any."""
        return None

    @property
    def span_fields(self) -> tuple[str, ...]:
        return ()

    def request_specs(self) -> dict[str, tf.TensorSpec]:
        raise NotImplementedError

    def raw_features(self, **request: tf.Tensor) -> dict[str, tf.SparseTensor]:
        """The raw (tf.Example) features of a signature's inputs."""
        raise NotImplementedError

    def request(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """A signature's inputs for a batch of checked records, as a client sends them."""
        raise NotImplementedError

    def warmup_request(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def record_from_text(self, text: str, spans: Sequence[tuple[int, int]]) -> dict[str, Any] | None:
        """The record a sentence typed by a user stands for (``spans``: its marked entities), or None
        when this input cannot be made from it (``mtnlp predict``)."""
        return None


@dataclasses.dataclass(frozen=True)
class TextInput(EncoderInput):
    """Raw text in ``field``; served as ``text`` string [B]."""

    field: str = "text"

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    @property
    def text_field(self) -> str:
        return self.field

    def request_specs(self):
        import tensorflow as tf

        return {TEXT_REQUEST: tf.TensorSpec([None], tf.string, name=TEXT_REQUEST)}

    def raw_features(self, **request):
        return {self.field: _rows(request[TEXT_REQUEST])}

    def request(self, records):
        return {TEXT_REQUEST: np.array([r[self.field] for r in records], object)}

    def warmup_request(self):
        return {TEXT_REQUEST: np.array(["Apple sued Samsung in California.", "Where is the station?"], object)}

    def record_from_text(self, text, spans):
        return {self.field: text}


@dataclasses.dataclass(frozen=True)
class TokensInput(EncoderInput):
    """The data's own tokens in ``field``; served as ``tokens`` string [B, T] padded with ""."""

    field: str = "tokens"
    plain_signature: ClassVar[str] = "analyze_tokens"

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    @property
    def tokens_field(self) -> str:
        return self.field

    def request_specs(self):
        import tensorflow as tf

        return {TOKENS_REQUEST: tf.TensorSpec([None, None], tf.string, name=TOKENS_REQUEST)}

    def raw_features(self, **request):
        import tensorflow as tf

        # from_dense drops the "" padding, leaving each row's real words
        return {self.field: tf.sparse.from_dense(request[TOKENS_REQUEST])}

    def request(self, records):
        longest = max(len(r[self.field]) for r in records)
        return {
            TOKENS_REQUEST: np.array([r[self.field] + [""] * (longest - len(r[self.field])) for r in records], object)
        }

    def warmup_request(self):
        return {TOKENS_REQUEST: np.array([["Apple", "sued", "Samsung", "."], ["Hi", "!", "", ""]], object)}


@dataclasses.dataclass(frozen=True)
class TextWithSpansInput(EncoderInput):
    """Raw text in ``field`` and two character spans [start, end) into it, ``spans``; served as ``text``
    string [B] with ``e1_start``, ``e1_end``, ``e2_start``, ``e2_end`` int64 [B]."""

    field: str = "text"
    spans: tuple[str, str] = ("e1", "e2")
    # the request names of the two spans' offsets (the entity markers 1 and 2)
    REQUEST_SPANS: ClassVar[tuple[str, str]] = ("e1", "e2")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,) + self.spans

    @property
    def text_field(self) -> str:
        return self.field

    @property
    def span_fields(self) -> tuple[str, ...]:
        return self.spans

    def request_specs(self):
        import tensorflow as tf

        specs = {TEXT_REQUEST: tf.TensorSpec([None], tf.string, name=TEXT_REQUEST)}
        for span in self.REQUEST_SPANS:
            for end in ("start", "end"):
                specs[f"{span}_{end}"] = tf.TensorSpec([None], tf.int64, name=f"{span}_{end}")
        return specs

    def raw_features(self, **request):
        import tensorflow as tf

        raw = {self.field: _rows(request[TEXT_REQUEST])}
        for field, span in zip(self.spans, self.REQUEST_SPANS):
            raw[field] = _rows(tf.stack([request[f"{span}_start"], request[f"{span}_end"]], axis=1))
        return raw

    def request(self, records):
        request = {TEXT_REQUEST: np.array([r[self.field] for r in records], object)}
        for field, span in zip(self.spans, self.REQUEST_SPANS):
            request[f"{span}_start"] = np.array([r[field][0] for r in records], np.int64)
            request[f"{span}_end"] = np.array([r[field][1] for r in records], np.int64)
        return request

    def record_from_text(self, text, spans):
        if len(spans) != len(self.spans):
            return None
        return {self.field: text, **{field: list(span) for field, span in zip(self.spans, spans)}}

    def warmup_request(self):
        return {
            TEXT_REQUEST: np.array(["The company fabricates plastic chairs."], object),
            "e1_start": np.array([4], np.int64),
            "e1_end": np.array([11], np.int64),
            "e2_start": np.array([31], np.int64),
            "e2_end": np.array([37], np.int64),
        }


# The plain signatures answer every sentence and token head, whatever task it belongs to.
PLAIN_INPUTS: tuple[EncoderInput, ...] = (TextInput(), TokensInput())
