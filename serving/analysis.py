"""What `mtnlp predict` does with a sentence: the marker syntax, which heads to ask, and the answer for people.

Which signature answers which head is the serving contract (`model/contract.py`); how a head's outputs read as an
answer is its kind's (`Head.read_answer`, `Head.describe`). By default every head is asked except those a kind
keeps for explicit requests (translation's decoding loop: `--task translate`). Entity spans for a relation come
from a marker syntax: "The [[company]] makes [[chairs]]." (first marker = e1, second = e2; offsets are into the
text without markers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mtnlp.model.heads import Head, titled
from mtnlp.model.tasks import all_heads, registered_tasks

_MARKER = re.compile(r"\[\[(.*?)\]\]")
MARKER_EXAMPLE = '"The [[company]] makes [[chairs]]."'


@dataclass(frozen=True)
class Marked:
    text: str  # markers removed
    spans: list[tuple[int, int]]  # character offsets into `text`, end exclusive


def parse_markers(raw: str) -> Marked:
    """Strip [[...]] markers; their contents stay in the text and their offsets are recorded. ValueError for an
    empty marker or a stray [[ or ]]."""
    spans, out, pos = [], [], 0
    for m in _MARKER.finditer(raw):
        if not m.group(1).strip() or "[[" in m.group(1):
            what = "an empty [[]] entity marker" if not m.group(1).strip() else "nested [[ ]] entity markers"
            raise ValueError(f"{what} at character {m.start()}: mark an entity as [[entity]], e.g. {MARKER_EXAMPLE}")
        out.append(raw[pos : m.start()])
        start = sum(len(p) for p in out)
        out.append(m.group(1))
        spans.append((start, start + len(m.group(1))))
        pos = m.end()
    out.append(raw[pos:])
    text = "".join(out)
    if "[[" in text or "]]" in text:
        raise ValueError(
            f"unbalanced [[ ]] entity markers (a [[ without its ]] or the reverse): mark an entity as "
            f"[[entity]], e.g. {MARKER_EXAMPLE}"
        )
    return Marked(text, spans)


def entity_pair_spans(marked: Marked, required: bool = False) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The (e1, e2) spans of a sentence marked for an entity-pair head (relation); None for a sentence without
    markers unless they are `required`. ValueError unless exactly two entities are marked."""
    if not marked.spans and not required:
        return None
    if len(marked.spans) != 2:
        found = ", ".join(f"[[{marked.text[s:e]}]]" for s, e in marked.spans) or "none"
        raise ValueError(
            f"a relation needs exactly two entities marked with [[...]], e.g. {MARKER_EXAMPLE}; found "
            f"{len(marked.spans)}: {found}"
        )
    return marked.spans[0], marked.spans[1]


def head_choices() -> dict[str, Head]:
    """What `--task` accepts: every head by name, and a head with a signature of its own also by that name
    (`translate`)."""
    choices = {h.name: h for h in all_heads()}
    for task in registered_tasks():
        for head in task.heads:
            choices.setdefault(head.own_signature(task) or head.name, head)
    return choices


def select_heads(names: Sequence[str] | None) -> tuple[Head, ...]:
    """The heads named (head or signature names), in registry order; by default every head a kind does not keep
    for explicit requests."""
    if not names:
        return tuple(h for h in all_heads() if not h.on_request)
    choices = head_choices()
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(choices)}")
    chosen = {choices[n].name for n in names}
    return tuple(h for h in all_heads() if h.name in chosen)


def needs_marked_entities(heads: Sequence[Head]) -> bool:
    """Whether a chosen head is asked through an input that marks spans (a relation)."""
    return any(
        task.encoder_input.span_fields and head.own_signature(task)
        for task in registered_tasks()
        for head in task.heads
        if head in heads
    )


def format_human(result: dict[str, Any], heads: Sequence[Head]) -> str:
    lines = [titled("Text", result["text"])]
    for head in heads:
        if result.get(head.name) is not None:
            lines += head.describe(result[head.name], result["text"])
    return "\n".join(lines)
