"""Resolvers for the two uses of the latest blessed model: the Trainer's warm start and the
Evaluator's baseline.

TFX's LatestBlessedModelStrategy returns the newest blessed model. Used for both, it defeats caching:
a run with no new data finds its own previous result as the newest blessed model, feeds it to the
Trainer as ``base_model`` and to the Evaluator as ``baseline_model``, and retrains and re-pushes for
nothing. So:

- warm start: the latest blessed model *not trained on this run's Examples*. With new data that is the
  newest blessed model; on a rerun it is the same model as last time, so the Trainer stays cached.
  (A retrain on the same data with other settings starts from scratch.)
- baseline: the latest blessed model *other than the candidate*, resolved after the Trainer. With new
  data or new settings that is the serving model; on a rerun (cached candidate) it is the same
  baseline as last time, so the Evaluator and the Pusher stay cached.
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


def _latest_blessed(input_dict: dict[str, list[types.Artifact]], skip) -> dict[str, list[types.Artifact]]:
    """The newest blessed model for which ``skip(model)`` is false, with its blessing."""
    blessed = {
        b.get_int_custom_property("current_model_id"): b
        for b in input_dict["model_blessing"]
        if b.get_int_custom_property("blessed") == 1
    }
    result: dict[str, list[types.Artifact]] = {key: [] for key in input_dict}
    for model in sorted(input_dict["model"], key=lambda a: a.id, reverse=True):
        if model.id in blessed and not skip(model):
            result["model"], result["model_blessing"] = [model], [blessed[model.id]]
            break
    return result


class LatestBlessedModelOnOtherDataStrategy(resolver.ResolverStrategy):
    """Inputs: ``model`` (Model), ``model_blessing`` (ModelBlessing), ``examples`` (this run's Examples)."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        examples = max(input_dict.get("examples") or [], key=lambda a: a.id, default=None)
        if examples is None:
            return _latest_blessed(input_dict, skip=lambda model: False)
        return _latest_blessed(input_dict, skip=lambda model: examples.id in trained_on(store, model.id))


class LatestBlessedModelOtherThanCandidateStrategy(resolver.ResolverStrategy):
    """Inputs: ``model`` (Model), ``model_blessing`` (ModelBlessing), ``candidate`` (this run's model)."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        candidate = max(input_dict.get("candidate") or [], key=lambda a: a.id, default=None)
        return _latest_blessed(input_dict, skip=lambda model: candidate is not None and model.id == candidate.id)


def _blessed_models(strategy, node_id: str, **more) -> "resolver.Resolver":
    from tfx import v1 as tfx

    return tfx.dsl.Resolver(
        strategy_class=strategy,
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
        **more,
    ).with_id(node_id)


def warm_start_model_resolver(example_gen_id: str) -> "resolver.Resolver":
    """Run it after the ExampleGen (``add_upstream_node``): it reads this run's Examples."""
    examples = standard_artifacts.Examples
    return _blessed_models(LatestBlessedModelOnOtherDataStrategy, "warm_start_model_resolver",
                           examples=_channel(examples, example_gen_id, "examples"))  # fmt: skip


def baseline_model_resolver(trainer_id: str) -> "resolver.Resolver":
    """Run it after the Trainer (``add_upstream_node``): it reads this run's candidate model."""
    return _blessed_models(LatestBlessedModelOtherThanCandidateStrategy, "baseline_model_resolver",
                           candidate=_channel(standard_artifacts.Model, trainer_id, "model"))  # fmt: skip


def _channel(artifact_type, producer_id: str, output_key: str):
    from tfx import v1 as tfx

    return tfx.dsl.Channel(type=artifact_type, producer_component_id=producer_id, output_key=output_key)
