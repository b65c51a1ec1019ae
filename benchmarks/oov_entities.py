"""How well the NER head finds entities whose words the model has never seen: entity recall on the validation
sentences, split by whether an entity has a word outside the model's word vocabulary.

    python benchmarks/oov_entities.py --workdir workdir                       # after `mtnlp run`
    python benchmarks/oov_entities.py --workdir /tmp/a --workdir /tmp/b --label "subword features" --label "none"

Rare words are exactly the entities, so the word vocabulary alone cannot represent them; the hashed prefix,
suffix and shape features (``model.subword_features``) are there for them. For each workdir the script takes
the pushed model (the newest version under ``serving_model/mtnlp``) and the word vocabulary of the newest
Transform output, runs the ``analyze_tokens`` signature over the tagging validation records that have NER
annotation (the path ``mtnlp evaluate`` scores), and counts per gold entity (IOB2 chunks, conlleval's
definition: type and exact boundaries) whether the prediction has it. An entity is *out of vocabulary* when
one of its words, normalized as Transform normalizes them (lower case, digits as 0), is not in the vocabulary.
The error rate of a group is 1 - its recall. Prints one row per model and writes
benchmarks/oov_entities_results.json (``--output``).
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, quiet_tensorflow, table, write_json  # noqa: E402
from benchmarks.inference import MissingRunError, latest_pushed_model, newest_transform_graph  # noqa: E402

quiet_tensorflow()


def normalize_word(word: str) -> str:
    """The vocabulary key of a word, as ``model.text.normalize_words`` computes it in the graph."""
    return "".join("0" if unicodedata.category(c).startswith("N") else c for c in word.lower())


def entity_groups(
    records: Sequence[dict[str, Any]], predicted: Sequence[Sequence[str]], vocabulary: set[str]
) -> dict[str, dict[str, int]]:
    """Gold entities found / total, for entities with an out-of-vocabulary word and for the others."""
    from mtnlp.model.scoring import iob2_chunks

    groups = {"oov": {"found": 0, "total": 0}, "in_vocabulary": {"found": 0, "total": 0}}
    for record, tags in zip(records, predicted):
        found = iob2_chunks(list(tags))
        for chunk in iob2_chunks(record["ner"]):
            _, start, end = chunk
            words = record["tokens"][start:end]
            group = groups["oov" if any(normalize_word(w) not in vocabulary for w in words) else "in_vocabulary"]
            group["total"] += 1
            group["found"] += chunk in found
    return groups


def measure(workdir: Path, data: Path, batch_size: int = 64) -> dict[str, Any]:
    import numpy as np
    import tensorflow_transform as tft

    from mtnlp.model import contract
    from mtnlp.model.preprocessing import WORDS_VOCABULARY
    from mtnlp.model.scoring import as_text
    from mtnlp.model.tasks import get_head, get_task
    from mtnlp.serving.evaluate import _request, load_signatures, read_task_data

    model = latest_pushed_model(workdir)
    graph = newest_transform_graph(workdir)
    with open(tft.TFTransformOutput(str(graph)).vocabulary_file_by_name(WORDS_VOCABULARY), encoding="utf-8") as f:
        vocabulary = {line.rstrip("\n") for line in f}
    task, head = get_task("tagging"), get_head("ner")
    records = [r for r in read_task_data(str(data), [task], splits=["validation"])[task.name].records if "ner" in r]
    function = load_signatures(str(model))[contract.signature_for(task, head)]
    predicted: list[list[str]] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        answers = function(**_request(task, batch))[head.scored_output].numpy()
        predicted += [[as_text(t) for t in np.asarray(row)[: len(r["tokens"])]] for r, row in zip(batch, answers)]
    groups = entity_groups(records, predicted, vocabulary)
    for group in groups.values():
        group["error_rate"] = round(1 - group["found"] / group["total"], 4) if group["total"] else None
    tokens = [normalize_word(w) for r in records for w in r["tokens"]]
    return {
        "model": str(model),
        "transform_graph": str(graph),
        "sentences": len(records),
        "vocabulary": len(vocabulary),
        "token_oov_rate": round(sum(t not in vocabulary for t in tokens) / len(tokens), 4),
        "entities": groups,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--workdir",
        type=Path,
        action="append",
        required=True,
        help="a workdir of a finished `mtnlp run` (repeat to compare models)",
    )
    ap.add_argument("--label", action="append", help="a name per --workdir for the table (default: the path)")
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO / "data",
        help="data folder with tagging/validation.jsonl.gz (default: the bundled data)",
    )
    ap.add_argument(
        "--output",
        type=Path,
        default=default_output("oov_entities"),
        help="JSON results file (default benchmarks/oov_entities_results.json)",
    )
    ns = ap.parse_args(argv)
    labels = ns.label or [str(w) for w in ns.workdir]
    if len(labels) != len(ns.workdir):
        ap.error(f"give one --label per --workdir ({len(ns.workdir)}), or none")
    machine = Machine()
    try:
        results = {label: measure(workdir, ns.data) for label, workdir in zip(labels, ns.workdir)}
    except MissingRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [
        [
            label,
            f"{r['token_oov_rate']:.1%}",
            f"{r['entities']['oov']['total']} / {r['entities']['in_vocabulary']['total']}",
            f"{r['entities']['oov']['error_rate']:.3f}",
            f"{r['entities']['in_vocabulary']['error_rate']:.3f}",
        ]
        for label, r in results.items()
    ]
    print(machine.line())
    print(
        table(
            ["model", "OOV tokens", "entities OOV / in vocabulary", "error rate OOV", "error rate in vocabulary"], rows
        )
    )
    write_json(ns.output, machine, {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
