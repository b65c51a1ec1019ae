"""The multi-task network: one shared transformer encoder (keras-hub layers) and one head per task head."""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import keras_hub

from mtnlp.model import checkpoints, text
from mtnlp.model.heads import Head, HeadSettings
from mtnlp.model.backbone import FIRST_PIECE, PIECE_IDS, SETTING as BACKBONE_SETTING
from mtnlp.model.layers import (FirstPieceGather, MaskedWordLoss, NoneClassDense, PrecomputedLoss, TaskUncertainty,
                                UncertaintyWeightedLoss)
from mtnlp.model.preprocessing import BACKBONE_INPUTS, MODEL_INPUTS, SUBWORD_INPUTS

ENCODER_OUTPUT = "encoder_output"
TASK_UNCERTAINTY = "task_uncertainty"
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
# The masked-word objective: its training-only input (original word ids at masked positions) and output.
MASKED_WORD_LABELS = "masked_word_labels"
MASKED_WORDS = "masked_words"


def encoder_input_names(backbone: bool = False) -> tuple[str, ...]:
    """The encoder's inputs: the from-scratch encoder's word features, or a pretrained backbone's pieces."""
    return BACKBONE_INPUTS if backbone else MODEL_INPUTS


def has_backbone(model: keras.Model) -> bool:
    """Whether the model's encoder is a pretrained backbone (``build_model(backbone_preset=...)``)."""
    return PIECE_IDS in model.input


def model_input_names(heads: Sequence[Head], masked_words: bool = False, backbone: bool = False) -> tuple[str, ...]:
    """The model's inputs: the encoder's, the heads' own (a sequence head's teacher-forced targets),
    and with the masked-word objective its word labels."""
    return (encoder_input_names(backbone) + tuple(k for h in heads for k in h.model_inputs())
            + ((MASKED_WORD_LABELS,) if masked_words else ()))  # fmt: skip


def mask_word_id(vocabulary_size: int) -> int:
    """The word id that stands for a masked word: one past the vocabulary and its OOV buckets."""
    return vocabulary_size


def inference_model(model: keras.Model) -> keras.Model:
    """What is served: a new functional model over the same layers, without the training-only parts
    (the masked-word objective) and without the optimizer, whose slots would otherwise be saved
    with the weights (two thirds of the stored values under Adam) and loaded by every server."""
    return keras.Model({k: v for k, v in model.input.items() if k != MASKED_WORD_LABELS},
                       {k: v for k, v in model.output.items() if k != MASKED_WORDS}, name=model.name)  # fmt: skip


def encoder_layer_index(head_name: str, head_layers: Mapping[str, int] | None, num_layers: int) -> int:
    """Which encoder layer (1..num_layers) a head reads: ``head_layers[head]`` counted from the bottom
    (1 = first layer) or, when negative, from the top (-1 = last); the last layer by default."""
    layer = (head_layers or {}).get(head_name, -1)
    index = layer if layer > 0 else num_layers + 1 + layer
    if not 1 <= index <= num_layers:
        raise ValueError(f"head_layers[{head_name!r}] = {layer}: the encoder has layers 1..{num_layers} (or -1..-{num_layers})")
    return index


def build_model(
    heads: Sequence[Head],
    vocabulary_size: int,
    max_length: int,
    embedding_dim: int,
    num_layers: int,
    num_heads: int,
    intermediate_dim: int,
    dropout: float,
    decoder_layers: int = 1,
    target_vocabulary_sizes: dict[str, int] | None = None,
    max_target_length: int = 24,
    uncertainty_weighting: bool = False,
    subword_buckets: int = 5_000,
    subword_features: bool = True,
    head_layers: Mapping[str, int] | None = None,
    head_dropout: float | None = None,
    tie_decoder_embeddings: bool = False,
    masked_words: bool = False,
    backbone_preset: str | None = None,
    ranking_loss_heads: Sequence[str] | None = None,
) -> keras.Model:
    """Inputs (int64 [B, T], T <= max_length): token_ids, shape_ids, entity_ids (see preprocessing),
    and for each sequence head its label ids ``<head>_label`` int64 [B, L], L <= max_target_length.

    Each word's input vector is the sum of its word, position, word-shape and entity-marker
    embeddings and, with ``subword_features``, of the embeddings of its hashed prefix, suffix and
    shape pattern (``subword_buckets`` rows each, see ``model/preprocessing.py``), so rare and unseen
    words are represented by their spelling. Heads read the encoder layer named in ``head_layers``
    (see ``encoder_layer_index``; default the last), with dropout ``head_dropout`` (default ``dropout``).

    Outputs: a dict of logits per head, [B, num_labels] for sentence and entity-pair heads,
    [B, T, num_labels] for token heads and [B, L, V] for sequence heads (V: the head's entry in
    ``target_vocabulary_sizes``, special ids and OOV buckets included).

    ``masked_words`` adds the masked-word objective: one more word id (``mask_word_id``), the input
    ``masked_word_labels`` int64 [B, T] and the output ``masked_words`` float [B], each example's
    masked-word loss (``MaskedWordLoss`` on the last encoder layer); ``inference_model`` drops both.

    ``uncertainty_weighting`` adds a ``TaskUncertainty`` layer (one learned log-variance per head) for
    ``compile_for_heads(loss_weighting="uncertainty")``.

    ``backbone_preset`` (a keras-hub preset name or directory) replaces the from-scratch encoder with
    the preset's pretrained backbone (``backbone_encoder``); the encoder's inputs are then
    ``piece_ids``, ``first_piece`` and ``entity_ids`` (``model/preprocessing.py``), ``vocabulary_size``,
    ``max_length``, ``num_layers``, ``subword_buckets`` and ``subword_features`` are unused, and
    ``head_layers`` and ``masked_words`` are refused.

    ``ranking_loss_heads`` names the heads to be trained with the pairwise ranking loss
    (``compile_for_heads(ranking_loss_heads=...)``, the same names): each must have a ``none_label``,
    whose logit is then the constant 0 (``NoneClassDense``, the same weights as the plain head's).
    """
    decoder = {"vocabulary_sizes": target_vocabulary_sizes or {}, "max_length": max_target_length,
               "layers": decoder_layers, "num_heads": num_heads, "intermediate_dim": intermediate_dim,
               "dropout": dropout, "tie_embeddings": tie_decoder_embeddings}  # fmt: skip
    head_dropout = dropout if head_dropout is None else head_dropout
    if backbone_preset:
        if masked_words or head_layers:
            raise ValueError(f"{BACKBONE_SETTING}: the masked-word objective and head_layers need the from-scratch "
                             "encoder; with a backbone every head reads its last layer")  # fmt: skip
        inputs = {name: keras.Input(shape=(None,), dtype="int64", name=name) for name in model_input_names(heads, backbone=True)}
        x = backbone_encoder(inputs, backbone_preset, embedding_dim, dropout)
        return _with_heads(heads, inputs, keras.ops.greater(inputs[FIRST_PIECE], 0), [x], None, head_dropout, decoder,
                           uncertainty_weighting, None, ranking_loss_heads)  # fmt: skip
    inputs = {name: keras.Input(shape=(None,), dtype="int64", name=name) for name in model_input_names(heads, masked_words)}
    padding_mask = keras.ops.not_equal(inputs["token_ids"], 0)

    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size + int(masked_words), max_length, embedding_dim, name="word_and_position_embedding"
    )(inputs["token_ids"])
    x = x + keras.layers.Embedding(text.NUM_SHAPES, embedding_dim, name="shape_embedding")(inputs["shape_ids"])
    x = x + keras.layers.Embedding(text.NUM_ENTITY_MARKERS, embedding_dim, name="entity_marker_embedding")(
        inputs["entity_ids"]
    )
    for name in SUBWORD_INPUTS:
        # Unused inputs are still wired (as zeros) so that every model takes the same features.
        embedded = keras.layers.Embedding(subword_buckets + 1, embedding_dim, name=name.replace("_ids", "_embedding"))(inputs[name])
        x = x + (embedded if subword_features else keras.ops.zeros_like(embedded))
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)
    x = keras.layers.Dropout(dropout)(x)
    layer_outputs = []
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, name=f"shared_encoder_{i}"
        )(x, padding_mask=padding_mask)
        layer_outputs.append(x)
    return _with_heads(heads, inputs, padding_mask, layer_outputs, head_layers, head_dropout, decoder,
                       uncertainty_weighting, vocabulary_size if masked_words else None, ranking_loss_heads)  # fmt: skip


def _with_heads(heads: Sequence[Head], inputs: dict, padding_mask, layer_outputs: list, head_layers, head_dropout: float,
                decoder: dict, uncertainty_weighting: bool, masked_word_vocabulary: int | None,
                ranking_loss_heads: Sequence[str] | None) -> keras.Model:  # fmt: skip
    """The model from its encoder (each layer's output [B, T, D], bottom first): uncertainty weighting,
    the named encoder output, the heads and, with ``masked_word_vocabulary``, the masked-word loss."""
    x = layer_outputs[-1]
    if uncertainty_weighting:
        # on the path of the heads that read the last layer, so that it is part of the model
        x = layer_outputs[-1] = TaskUncertainty([h.name for h in heads], name=TASK_UNCERTAINTY)(x)
    # a name for the serving graph's decoding loop; the heads that read the last layer read it here
    x = layer_outputs[-1] = keras.layers.Identity(name=ENCODER_OUTPUT)(x)

    settings = HeadSettings(layer_outputs=layer_outputs, padding_mask=padding_mask, inputs=inputs,
                            head_layers=head_layers, dropout=head_dropout, decoder=decoder,
                            ranking_loss_heads=tuple(ranking_loss_heads or ()))  # fmt: skip
    outputs = {}
    if masked_word_vocabulary is not None:
        outputs[MASKED_WORDS] = MaskedWordLoss(masked_word_vocabulary, name=MASKED_WORDS)(layer_outputs[-1],
                                                                                          inputs[MASKED_WORD_LABELS])
    for head in heads:
        outputs[head.name] = head.build(settings)
    return keras.Model(inputs=inputs, outputs=outputs, name="multitask_encoder")


def backbone_encoder(inputs: Mapping[str, keras.KerasTensor], preset: str, embedding_dim: int, dropout: float
                     ) -> keras.KerasTensor:  # fmt: skip
    """A pretrained backbone (``model/checkpoints.py`` locates ``preset``) as the encoder: word states [B, T, embedding_dim].

    The backbone reads ``inputs["piece_ids"]`` [B, P] (its ids + 1, 0 padding; see ``model/backbone.py``);
    ``FirstPieceGather`` takes its last layer's state at each word's first piece (``first_piece`` [B, T]),
    a Dense layer projects it to ``embedding_dim`` (the width the decoder and the from-scratch heads
    are sized for), and the entity-marker embedding of ``entity_ids`` [B, T] is added, as the from-scratch
    encoder adds it to its input.
    """
    backbone = checkpoints.load_backbone(preset)
    piece_ids = inputs[PIECE_IDS]
    given = {"token_ids": keras.ops.maximum(piece_ids - 1, 0), "padding_mask": keras.ops.greater(piece_ids, 0),
             "segment_ids": keras.ops.zeros_like(piece_ids)}  # fmt: skip
    names = list(backbone.input) if isinstance(backbone.input, dict) else []
    if not names or set(names) - set(given):
        raise ValueError(f"{BACKBONE_SETTING}={preset!r}: a {type(backbone).__name__} reads {names or backbone.input}; "
                         f"only backbones of {sorted(given)} are supported")  # fmt: skip
    output = backbone({name: keras.ops.cast(given[name], backbone.input[name].dtype) for name in names})
    pieces = output["sequence_output"] if isinstance(output, dict) else output
    x = FirstPieceGather(name="first_piece_gather")(pieces, inputs[FIRST_PIECE])
    x = keras.layers.Dense(embedding_dim, name="backbone_projection")(x)
    x = x + keras.layers.Embedding(text.NUM_ENTITY_MARKERS, embedding_dim, name="entity_marker_embedding")(inputs["entity_ids"])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="backbone_norm")(x)
    return keras.layers.Dropout(dropout)(x)


def compile_for_heads(
    model: keras.Model,
    heads: Sequence[Head],
    optimizer: keras.optimizers.Optimizer,
    sequence_label_smoothing: float = 0.0,
    loss_weighting: str = "fixed",
    loss_weights: Mapping[str, float] | None = None,
    ranking_loss_heads: Sequence[str] | None = None,
) -> None:
    """Per-head sparse cross-entropy, each averaged over the examples (or words) that carry its label.

    Sequence heads may use label smoothing (``sequence_label_smoothing``): the decoder then does not
    grow over-confident on the few thousand sentence pairs it sees. The heads named in
    ``ranking_loss_heads`` (each with a none class) get CR-CNN's pairwise ranking loss instead
    (``PairwiseRankingLoss``); the model must have been built with the same names (``build_model``), so
    that their none class's logit is the constant 0 the loss assumes.

    The sample weights (``<head>_weight`` from Transform) are 0 for examples of other tasks and for
    padding, so a head learns only from its own labels; ``mean_with_sample_weight`` divides by the
    weights' sum rather than the batch size, so a head's loss scale does not depend on the task mix.

    The heads' losses are summed with ``loss_weighting``: "fixed" (``loss_weights`` per head, 1 for
    heads not named) or "uncertainty" (learned; the model needs ``build_model(uncertainty_weighting=True)``).
    """
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss_weighting {loss_weighting!r}: use one of {', '.join(LOSS_WEIGHTINGS)}")
    for h in heads:  # a ranked head's none logit must be 0 in the model too, or training and serving disagree
        if h.ranks(ranking_loss_heads) and not isinstance(model.get_layer(h.name), NoneClassDense):
            raise ValueError(f"compile_for_heads(ranking_loss_heads=...) names {h.name!r}, but the model was built "
                             "without it: pass the same ranking_loss_heads to build_model")  # fmt: skip
    training = {"sequence_label_smoothing": sequence_label_smoothing,
                "ranking_loss_heads": tuple(ranking_loss_heads or ())}  # fmt: skip
    losses = {h.name: h.loss(training) for h in heads}
    if loss_weighting == "uncertainty":
        uncertainty = model.get_layer(TASK_UNCERTAINTY)
        losses = {name: UncertaintyWeightedLoss(loss, uncertainty, name) for name, loss in losses.items()}
    weights = {h.name: float((loss_weights or {}).get(h.name, 1.0)) for h in heads}
    if MASKED_WORDS in model.output:  # already a per-example loss; weight 1 on the masked-word examples
        losses[MASKED_WORDS], weights[MASKED_WORDS] = PrecomputedLoss(), 1.0
    model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights=weights,
        weighted_metrics={h.name: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for h in heads},
    )
