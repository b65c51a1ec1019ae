"""What `mtnlp predict` does with a sentence: the marker syntax, and the model's outputs shaped into an answer.

The model's signature contract: `serving_default`/`analyze` (text -> tokens, sentiment, POS and IOB2 NER tags),
`relation` (text + two entity character spans -> SemEval-2010 relation) and `translate` (English text -> Spanish
text; called only when asked for with `--task translate`). Relation spans come from a marker syntax:
"The [[company]] makes [[chairs]]." (first marker = e1, second = e2; offsets are into the text without markers).
The output functions take one row of a batched answer (`row`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_MARKER = re.compile(r"\[\[(.*?)\]\]")
MARKER_EXAMPLE = '"The [[company]] makes [[chairs]]."'
TASKS = ("sentiment", "ner", "pos", "relation")
# Its own signature and a decoding loop: only on request, so the default stays one analyze call.
TRANSLATE = "translate"
PREDICT_TASKS = TASKS + (TRANSLATE,)


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
        out.append(raw[pos:m.start()])
        start = sum(len(p) for p in out)
        out.append(m.group(1))
        spans.append((start, start + len(m.group(1))))
        pos = m.end()
    out.append(raw[pos:])
    text = "".join(out)
    if "[[" in text or "]]" in text:
        raise ValueError(f"unbalanced [[ ]] entity markers (a [[ without its ]] or the reverse): mark an entity as "
                         f"[[entity]], e.g. {MARKER_EXAMPLE}")  # fmt: skip
    return Marked(text, spans)


def relation_spans(marked: Marked, required: bool = False) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The (e1, e2) spans of a sentence marked for a relation; None for a sentence without markers unless a
    relation is `required`. ValueError unless exactly two entities are marked."""
    if not marked.spans and not required:
        return None
    if len(marked.spans) != 2:
        found = ", ".join(f"[[{marked.text[s:e]}]]" for s, e in marked.spans) or "none"
        raise ValueError(f"a relation needs exactly two entities marked with [[...]], e.g. {MARKER_EXAMPLE}; found "
                         f"{len(marked.spans)}: {found}")  # fmt: skip
    return marked.spans[0], marked.spans[1]


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def iob2_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """IOB2 tags -> (first token, last token exclusive, type); a stray I- starts a span, as conlleval does."""
    spans: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and (prefix != "I" or t != kind):
            spans.append((start, i, kind or ""))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return spans


def align_tokens(text: str, tokens: list[str]) -> list[tuple[int, int] | None]:
    """Character offsets of each token in `text` (case-insensitive, in order); None when not found."""
    low, pos, out = text.lower(), 0, []
    for tok in tokens:
        i = low.find(tok.lower(), pos)
        if i < 0:
            out.append(None)
            continue
        out.append((i, i + len(tok)))
        pos = i + len(tok)
    return out


def analyze_outputs(outputs: dict[str, Any], text: str, row: int = 0) -> dict[str, Any]:
    """One row of the analyze signature's outputs -> a JSON-able result."""
    n = int(np.asarray(outputs["length"]).reshape(-1)[row])
    tokens = [_s(t) for t in np.asarray(outputs["tokens"])[row][:n]]
    pos = [_s(t) for t in np.asarray(outputs["pos_tags"])[row][:n]]
    ner = [_s(t) for t in np.asarray(outputs["ner_tags"])[row][:n]]
    probs = np.asarray(outputs["sentiment_probabilities"], dtype=float)[row].tolist()
    offsets = align_tokens(text, tokens)
    entities = []
    for a, b, kind in iob2_spans(ner):
        if offsets[a] is not None and offsets[b - 1] is not None:
            s, e = offsets[a][0], offsets[b - 1][1]  # type: ignore[index]
            surface = text[s:e]
        else:
            s = e = None
            surface = " ".join(tokens[a:b])
        entities.append({"text": surface, "type": kind, "start": s, "end": e, "token_start": a, "token_end": b})
    return {
        "text": text,
        "tokens": tokens,
        "sentiment": {"label": _s(np.asarray(outputs["sentiment_label"]).reshape(-1)[row]),
                      "probability": float(np.asarray(outputs["sentiment_probability"]).reshape(-1)[row]),
                      "probabilities": {"negative": probs[0], "positive": probs[1]}},
        "pos": [{"token": t, "tag": p} for t, p in zip(tokens, pos)],
        "ner": {"tags": ner, "entities": entities},
    }


def relation_outputs(outputs: dict[str, Any], marked: Marked, row: int = 0) -> dict[str, Any]:
    (s1, e1), (s2, e2) = marked.spans[:2]
    return {"label": _s(np.asarray(outputs["relation_label"]).reshape(-1)[row]),
            "probability": float(np.asarray(outputs["relation_probability"]).reshape(-1)[row]),
            "e1": {"text": marked.text[s1:e1], "start": s1, "end": e1},
            "e2": {"text": marked.text[s2:e2], "start": s2, "end": e2}}


def translation_output(outputs: dict[str, Any], row: int = 0) -> str:
    return _s(np.asarray(outputs["translation"]).reshape(-1)[row])


def format_human(result: dict[str, Any], tasks: tuple[str, ...] = TASKS) -> str:
    lines = [f"Text:      {result['text']}"]
    if "sentiment" in tasks and "sentiment" in result:
        s = result["sentiment"]
        lines.append(f"Sentiment: {s['label']} (p={s['probability']:.3f})")
    if "ner" in tasks and "ner" in result:
        text, pieces, pos = result["text"], [], 0
        located = [e for e in result["ner"]["entities"] if e["start"] is not None]
        for e in sorted(located, key=lambda e: e["start"]):
            pieces.append(text[pos:e["start"]])
            pieces.append(f"[{text[e['start']:e['end']]}]{e['type']}")
            pos = e["end"]
        pieces.append(text[pos:])
        lines.append(f"Entities:  {''.join(pieces)}")
        for e in result["ner"]["entities"]:
            where = f"chars {e['start']}-{e['end']}" if e["start"] is not None else "unaligned"
            lines.append(f"           {e['type']:<4} {e['text']!r} ({where})")
        if not result["ner"]["entities"]:
            lines.append("           (no entities)")
    if "pos" in tasks and "pos" in result:
        lines.append("POS:       " + " ".join(f"{p['token']}/{p['tag']}" for p in result["pos"]))
    if "relation" in tasks and result.get("relation"):
        r = result["relation"]
        lines.append(f"Relation:  {r['label']} (p={r['probability']:.3f})  e1={r['e1']['text']!r} "
                     f"e2={r['e2']['text']!r}")
    if TRANSLATE in tasks and "translation" in result:
        lines.append(f"Translation: {result['translation']}")
    return "\n".join(lines)
