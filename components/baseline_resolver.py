"""Resolves the baseline model: the latest blessed model *not trained on the current examples*.

TFX's LatestBlessedModelStrategy returns the newest blessed model. With warm start that defeats
caching: a run with no new data would find its own previous result as the newest blessed model,
feed it to the Trainer as ``base_model`` and to the Evaluator as ``baseline_model``, and retrain and
re-push for nothing. Skipping blessed models trained on the very Examples artifact of this run fixes
that without changing anything when new data arrives: then the newest blessed model was trained on
older data and is the one returned. On a rerun the same model as last time is returned, so Trainer,
Evaluator and Pusher inputs are unchanged and they are served from the cache.
"""

from __future__ import annotations

from typing import Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

_INPUT = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_OUTPUT = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def _producer_inputs(store: mlmd.MetadataStore, artifact_ids: list[int]) -> set[int]:
    """Ids of the input artifacts of the executions that produced these artifacts."""
    producers = {e.execution_id for e in store.get_events_by_artifact_ids(artifact_ids) if e.type in _OUTPUT}
    if not producers:
        return set()
    return {e.artifact_id for e in store.get_events_by_execution_ids(list(producers)) if e.type in _INPUT}


def trained_on(store: mlmd.MetadataStore, model_id: int) -> set[int]:
    """Artifacts two steps upstream of a model: the Trainer's inputs and what produced them
    (the raw Examples reach the Trainer through Transform)."""
    trainer_inputs = _producer_inputs(store, [model_id])
    return trainer_inputs | _producer_inputs(store, list(trainer_inputs))


class LatestBlessedModelOnOtherDataStrategy(resolver.ResolverStrategy):
    """Inputs: ``model`` (Model), ``model_blessing`` (ModelBlessing), ``examples`` (this run's Examples)."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        models = sorted(input_dict["model"], key=lambda a: a.id, reverse=True)
        blessed = {
            b.get_int_custom_property("current_model_id"): b
            for b in input_dict["model_blessing"]
            if b.get_int_custom_property("blessed") == 1
        }
        examples = max(input_dict.get("examples") or [], key=lambda a: a.id, default=None)
        result: dict[str, list[types.Artifact]] = {"model": [], "model_blessing": [], "examples": []}
        for model in models:
            if model.id not in blessed:
                continue
            if examples is not None and examples.id in trained_on(store, model.id):
                continue  # a result of this very data: not a baseline for it
            result["model"], result["model_blessing"] = [model], [blessed[model.id]]
            break
        return result


def baseline_model_resolver(example_gen_id: str) -> "resolver.Resolver":
    from tfx import v1 as tfx

    return tfx.dsl.Resolver(
        strategy_class=LatestBlessedModelOnOtherDataStrategy,
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
        examples=tfx.dsl.Channel(type=standard_artifacts.Examples, producer_component_id=example_gen_id,
                                 output_key="examples"),  # fmt: skip
    ).with_id("baseline_model_resolver")
