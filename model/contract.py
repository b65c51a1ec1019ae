"""The serving contract: which signature answers each head, with which inputs and outputs.

Derived from the task registry and the kinds, and used by everything that talks to a served model:
the export (``model/signatures.py``), its warmup requests (``model/warmup.py``), ``mtnlp evaluate``
(``serving/evaluate.py``) and ``mtnlp predict`` (``serving/cli.py``).

- ``analyze`` (also ``serving_default``) takes ``text``; ``analyze_tokens`` takes ``tokens``. Both
  answer every head that needs nothing but words (sentence and token heads), of every task, plus
  ``tokens`` string [B, T] and ``length`` int32 [B].
- A head kind with needs of its own gets its own signature (``Head.own_signature``): entity-pair
  heads one named after their task, taking the task input's request (text and span offsets);
  sequence heads their ``signature`` (default: the head's name; translation's is ``translate``), taking
  their task input's request and answering ``<head>`` string [B].

A task's records are scored through ``signature_for(task, head)``: the head's own signature, else
its task input's plain signature (tagging's gold tokens go to ``analyze_tokens``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtnlp.model.heads import Head
from mtnlp.model.inputs import PLAIN_INPUTS, EncoderInput
from mtnlp.model.tasks import Task

DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serving_tf_example"
TRANSFORM_SIGNATURE = "transform_features"
# the plain signature on raw text (``serving_default`` is the same function): what clients and warmup call
ANALYZE_SIGNATURE = PLAIN_INPUTS[0].plain_signature


@dataclasses.dataclass(frozen=True)
class Signature:
    """One serving signature: its name, the input kind whose request it takes, the heads it answers.
    ``plain``: it also returns the words it read (``tokens``, ``length``)."""

    name: str
    input: EncoderInput
    heads: tuple[Head, ...]
    plain: bool = False


def signatures(tasks: Sequence[Task]) -> list[Signature]:
    """The model's answering signatures (besides ``serving_default``, ``serving_tf_example`` and
    ``transform_features``), in a stable order."""
    plain_heads = tuple(h for t in tasks for h in t.heads if h.own_signature(t) is None)
    found = [Signature(i.plain_signature, i, plain_heads, plain=True) for i in PLAIN_INPUTS]
    own: dict[str, Signature] = {}
    for task in tasks:
        for head in task.heads:
            name = head.own_signature(task)
            if name is None:
                continue
            if name in own and own[name].input != task.encoder_input or name in {s.name for s in found}:
                raise ValueError(
                    f"signature {name!r} of head {head.name!r} is taken by another signature "
                    f"({', '.join(h.name for h in own[name].heads) if name in own else 'a plain one'}) "
                    "with a different input: give the head a signature of its own"
                )
            heads = own[name].heads if name in own else ()
            own[name] = Signature(name, task.encoder_input, heads + (head,))
    return found + list(own.values())


def signature_for(task: Task, head: Head) -> str:
    """The signature through which ``head`` is asked about ``task``'s records."""
    return head.own_signature(task) or task.encoder_input.plain_signature


def request(task: Task, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The inputs of ``signature_for(task, ...)`` for a batch of the task's checked records."""
    return task.encoder_input.request(records)


def warmup_requests(tasks: Sequence[Task]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(signature, inputs) of one request per signature, for TF Serving's warmup replay."""
    requests = []
    for signature in signatures(tasks):
        if signature.plain and signature.name != ANALYZE_SIGNATURE:
            continue  # one plain signature warms the shared graph; serving_default is the one clients call
        name = DEFAULT_SIGNATURE if signature.plain else signature.name
        requests.append((name, signature.input.warmup_request()))
    return requests
