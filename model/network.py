"""The multi-task network: one shared transformer encoder (keras-hub layers) and one head per task head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import keras_hub

from mtnlp.model import checkpoints, distillation, text
from mtnlp.model.backbone import FIRST_PIECE, PIECE_IDS
from mtnlp.model.backbone import SETTING as BACKBONE_SETTING
from mtnlp.model.heads import BuildContext, DecoderSizes, Head
from mtnlp.model.layers import (
    CharacterCNN,
    FirstPieceGather,
    MaskedWordLoss,
    Maxout,
    MaxoutWindowBlock,
    NoneClassDense,
    PrecomputedLoss,
    TaskUncertainty,
    UncertaintyWeightedLoss,
)
from mtnlp.model.preprocessing import (
    BACKBONE_INPUTS,
    CHAR_CODES,
    MODEL_INPUTS,
    SHAPE_IDS,
    SUBWORD_INPUTS,
    WORD_CHARACTERS,
)
from mtnlp.sections import HeadConfig

ENCODER_OUTPUT = "encoder_output"
# The width of the shape-class embedding concatenated beside a backbone's states (shape_features_beside_backbone).
BACKBONE_SHAPE_DIM = 32
TASK_UNCERTAINTY = "task_uncertainty"
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
# The masked-word objective: its training-only input (original word ids at masked positions) and output.
MASKED_WORD_LABELS = "masked_word_labels"
MASKED_WORDS = "masked_words"
# The word-id embedding's layer, by model.embedding_combiner (its first weight is the [word ids, D] table that
# warm starts remap to a new vocabulary): summed with the positions, or a table of its own.
WORD_EMBEDDING_LAYERS = {"sum": "word_and_position_embedding", "concat_maxout": "word_embedding"}


def encoder_input_names(
    backbone: bool = False, shape_features: bool = False, characters: bool = False
) -> tuple[str, ...]:
    """The encoder's inputs: the from-scratch encoder's word features and, with ``characters`` (a character CNN,
    ``model.char_cnn_dim``), the words' character codes; or a pretrained backbone's pieces and, with
    ``shape_features`` (``model.shape_features_beside_backbone``), the words' shape classes."""
    if backbone:
        return BACKBONE_INPUTS + ((SHAPE_IDS,) if shape_features else ())
    return MODEL_INPUTS + ((CHAR_CODES,) if characters else ())


def has_backbone(model: keras.Model) -> bool:
    """Whether the model's encoder is a pretrained backbone (``build_model(backbone_preset=...)``)."""
    return PIECE_IDS in model.input


def has_backbone_shape_features(model: keras.Model) -> bool:
    """Whether a backbone model reads shape classes beside the backbone (``shape_features_beside_backbone``)."""
    return has_backbone(model) and SHAPE_IDS in model.input


def has_character_cnn(model: keras.Model) -> bool:
    """Whether a from-scratch model reads its words' characters (``model.char_cnn_dim``)."""
    return not has_backbone(model) and CHAR_CODES in model.input


def model_input_names(
    heads: Sequence[Head],
    masked_words: bool = False,
    backbone: bool = False,
    shape_features: bool = False,
    characters: bool = False,
) -> tuple[str, ...]:
    """The model's inputs: the encoder's (``encoder_input_names``), the heads' own (a sequence head's
    teacher-forced targets), and with the masked-word objective its word labels."""
    return (
        encoder_input_names(backbone, shape_features, characters)
        + tuple(k for h in heads for k in h.model_inputs())
        + ((MASKED_WORD_LABELS,) if masked_words else ())
    )


def mask_word_id(vocabulary_size: int) -> int:
    """The word id that stands for a masked word: one past the vocabulary and its OOV buckets."""
    return vocabulary_size


def inference_model(model: keras.Model) -> keras.Model:
    """What is served: a new functional model over the same layers, without the training-only parts
    (the masked-word objective) and without the optimizer, whose slots would otherwise be saved
    with the weights (two thirds of the stored values under Adam) and loaded by every server."""
    return keras.Model(
        {k: v for k, v in model.input.items() if k != MASKED_WORD_LABELS},
        {k: v for k, v in model.output.items() if k != MASKED_WORDS},
        name=model.name,
    )


def encoder_layer_index(head_name: str, layer: int, num_layers: int) -> int:
    """Which encoder layer (1..num_layers) a head reads: ``layer`` (``heads.<name>.encoder_layer``) counted
    from the bottom (1 = first layer) or, when negative, from the top (-1 = last)."""
    index = layer if layer > 0 else num_layers + 1 + layer
    if not 1 <= index <= num_layers:
        raise ValueError(
            f"heads.{head_name}.encoder_layer = {layer}: the encoder has layers 1..{num_layers} (or -1..-{num_layers})"
        )
    return index


def head_configs_for(heads: Sequence[Head], head_configs: Mapping[str, HeadConfig] | None) -> dict[str, HeadConfig]:
    """Each head's settings: its entry of ``head_configs`` (the config's ``heads`` section), else its declared
    ``default_config``; checked by the head's kind."""
    configs = {h.name: (head_configs or {}).get(h.name, h.default_config) for h in heads}
    for head in heads:
        head.check_config(configs[head.name])
    return configs


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
    tie_decoder_embeddings: bool = False,
    masked_words: bool = False,
    backbone_preset: str | None = None,
    head_configs: Mapping[str, HeadConfig] | None = None,
    embedding_combiner: str = "sum",
    window_conv_layers: int = 0,
    shape_features_beside_backbone: bool = False,
    char_cnn_dim: int = 0,
    char_cnn_kernel_size: int = 3,
) -> keras.Model:
    """Inputs (int64 [B, T], T <= max_length): token_ids, shape_ids, entity_ids and the hashed subword ids (see
    preprocessing), char_codes int64 [B, T, WORD_CHARACTERS] (``preprocessing.char_codes``), and for each sequence
    head its label ids ``<head>_label`` int64 [B, L], L <= max_target_length.

    Each word's input vector combines its word and word-shape embeddings and, with ``subword_features``,
    the embeddings of its hashed prefix, suffix and shape pattern (``subword_buckets`` rows each, see
    ``model/preprocessing.py``), so rare and unseen words are represented by their spelling: summed, or with
    ``embedding_combiner="concat_maxout"`` concatenated and mixed by a maxout layer; with ``char_cnn_dim`` > 0 one
    more feature joins them, the word's ``CharacterCNN`` vector (``char_cnn_dim`` filters of ``char_cnn_kernel_size``
    characters; only such a model has the ``char_codes`` input); its position and
    entity-marker embeddings are added (``_word_embedding``). ``window_conv_layers`` window-encoder blocks
    (``MaxoutWindowBlock``, spaCy's window encoder) run between the embeddings and the transformer layers. Each head is built with its ``HeadConfig`` from ``head_configs``
    (default: its ``default_config``): the encoder layer it reads (``encoder_layer_index``), its dropout
    (default ``dropout``) and its loss (with "ranking" its none class's logit is the constant 0,
    ``NoneClassDense``, the same weights as the plain head's); compile it with the same ``head_configs``.

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
    ``max_length``, ``num_layers``, ``subword_buckets``, ``subword_features``, ``embedding_combiner``,
    ``window_conv_layers`` and the character CNN's settings are unused, and
    ``masked_words`` and a head's ``encoder_layer`` other than -1 are refused. ``shape_features_beside_backbone``
    adds the input ``shape_ids`` [B, T] to such a model (see ``backbone_encoder``); without a backbone it is unused
    (the from-scratch encoder always reads shape classes).
    """
    decoder = DecoderSizes(
        vocabulary_sizes=target_vocabulary_sizes or {},
        max_length=max_target_length,
        layers=decoder_layers,
        num_heads=num_heads,
        intermediate_dim=intermediate_dim,
        dropout=dropout,
        tie_embeddings=tie_decoder_embeddings,
    )
    configs = head_configs_for(heads, head_configs)
    if backbone_preset:
        layered = [f"heads.{name}.encoder_layer" for name, c in configs.items() if c.encoder_layer != -1]
        if masked_words or layered:
            raise ValueError(
                f"{BACKBONE_SETTING}: the masked-word objective and {', '.join(layered) or 'encoder_layer'} "
                "need the from-scratch encoder; with a backbone every head reads its last layer"
            )
        inputs = {
            name: keras.Input(shape=(None,), dtype="int64", name=name)
            for name in model_input_names(heads, backbone=True, shape_features=shape_features_beside_backbone)
        }
        x = backbone_encoder(inputs, backbone_preset, embedding_dim, dropout, shape_features_beside_backbone)
        return _with_heads(
            heads,
            configs,
            inputs,
            keras.ops.greater(inputs[FIRST_PIECE], 0),
            [x],
            dropout,
            decoder,
            uncertainty_weighting,
            None,
        )
    inputs = {
        name: keras.Input(shape=(None, WORD_CHARACTERS) if name == CHAR_CODES else (None,), dtype="int64", name=name)
        for name in model_input_names(heads, masked_words, characters=char_cnn_dim > 0)
    }
    padding_mask = keras.ops.not_equal(inputs["token_ids"], 0)

    x = _word_embedding(
        inputs,
        vocabulary_size + int(masked_words),
        max_length,
        embedding_dim,
        subword_buckets,
        subword_features,
        embedding_combiner,
        char_cnn_dim,
        char_cnn_kernel_size,
        dropout,
    )
    x = keras.layers.Dropout(dropout)(x)
    for i in range(window_conv_layers):
        x = MaxoutWindowBlock(dropout=dropout, name=f"window_encoder_{i}")(x, padding_mask)
    layer_outputs = []
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, name=f"shared_encoder_{i}"
        )(x, padding_mask=padding_mask)
        layer_outputs.append(x)
    return _with_heads(
        heads,
        configs,
        inputs,
        padding_mask,
        layer_outputs,
        dropout,
        decoder,
        uncertainty_weighting,
        vocabulary_size if masked_words else None,
    )


def _word_embedding(
    inputs: Mapping[str, keras.KerasTensor],
    word_ids: int,
    max_length: int,
    embedding_dim: int,
    subword_buckets: int,
    subword_features: bool,
    combiner: str,
    char_cnn_dim: int = 0,
    char_cnn_kernel_size: int = 3,
    dropout: float = 0.0,
) -> keras.KerasTensor:
    """Each word's input vector [B, T, embedding_dim]: its feature embeddings (word id, shape, the hashed
    ``SUBWORD_INPUTS`` and, with ``char_cnn_dim``, its ``CharacterCNN`` vector with ``dropout`` on the character
    embeddings) combined by ``combiner``, plus its position and entity-marker embeddings, layer-normalized.

    "sum" adds the feature embeddings (the word id's table is keras-hub's ``TokenAndPositionEmbedding``, which
    adds the position); "concat_maxout" concatenates them and mixes them with a ``Maxout`` layer, so that a
    feature can matter more for some words than for others (spaCy's ``MultiHashEmbed``).
    """
    features = []
    if combiner == "sum":
        features.append(
            keras_hub.layers.TokenAndPositionEmbedding(
                word_ids, max_length, embedding_dim, name=WORD_EMBEDDING_LAYERS[combiner]
            )(inputs["token_ids"])
        )
    else:
        features.append(
            keras.layers.Embedding(word_ids, embedding_dim, name=WORD_EMBEDDING_LAYERS[combiner])(inputs["token_ids"])
        )
    features.append(keras.layers.Embedding(text.NUM_SHAPES, embedding_dim, name="shape_embedding")(inputs[SHAPE_IDS]))
    for name in SUBWORD_INPUTS:
        # Unused inputs are still wired (as zeros) so that every model takes the same features.
        embedded = keras.layers.Embedding(subword_buckets + 1, embedding_dim, name=name.replace("_ids", "_embedding"))(
            inputs[name]
        )
        features.append(embedded if subword_features else keras.ops.zeros_like(embedded))
    if char_cnn_dim:
        characters = CharacterCNN(char_cnn_dim, char_cnn_kernel_size, dropout=dropout, name="char_cnn")(
            inputs[CHAR_CODES]
        )
        if combiner == "sum":  # summed at the other features' width
            characters = keras.layers.Dense(embedding_dim, name="char_cnn_projection")(characters)
        features.append(characters)
    if combiner == "sum":
        x = keras.layers.Add(name="word_features")(features)
    else:
        x = Maxout(embedding_dim, name="word_features_maxout")(keras.layers.Concatenate()(features))
        x = x + keras_hub.layers.PositionEmbedding(max_length, name="position_embedding")(x)
    x = x + keras.layers.Embedding(text.NUM_ENTITY_MARKERS, embedding_dim, name="entity_marker_embedding")(
        inputs["entity_ids"]
    )
    return keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)


def _with_heads(
    heads: Sequence[Head],
    configs: Mapping[str, HeadConfig],
    inputs: dict,
    padding_mask,
    layer_outputs: list,
    dropout: float,
    decoder: DecoderSizes,
    uncertainty_weighting: bool,
    masked_word_vocabulary: int | None,
) -> keras.Model:
    """The model from its encoder (each layer's output [B, T, D], bottom first): uncertainty weighting,
    the named encoder output, the heads and, with ``masked_word_vocabulary``, the masked-word loss."""
    x = layer_outputs[-1]
    if uncertainty_weighting:
        # on the path of the heads that read the last layer, so that it is part of the model
        x = layer_outputs[-1] = TaskUncertainty([h.name for h in heads], name=TASK_UNCERTAINTY)(x)
    # a name for the serving graph's decoding loop; the heads that read the last layer read it here
    x = layer_outputs[-1] = keras.layers.Identity(name=ENCODER_OUTPUT)(x)

    context = BuildContext(
        layer_outputs=layer_outputs, padding_mask=padding_mask, inputs=inputs, dropout=dropout, decoder=decoder
    )
    outputs = {}
    if masked_word_vocabulary is not None:
        outputs[MASKED_WORDS] = MaskedWordLoss(masked_word_vocabulary, name=MASKED_WORDS)(
            layer_outputs[-1], inputs[MASKED_WORD_LABELS]
        )
    for head in heads:
        outputs[head.name] = head.build(context, configs[head.name])
    return keras.Model(inputs=inputs, outputs=outputs, name="multitask_encoder")


def backbone_encoder(
    inputs: Mapping[str, keras.KerasTensor],
    preset: str,
    embedding_dim: int,
    dropout: float,
    shape_features: bool = False,
) -> keras.KerasTensor:
    """A pretrained backbone (``model/checkpoints.py`` locates ``preset``) as the encoder: word states [B, T, embedding_dim].

    The backbone reads ``inputs["piece_ids"]`` [B, P] (its ids + 1, 0 padding; see ``model/backbone.py``);
    ``FirstPieceGather`` takes its last layer's state at each word's first piece (``first_piece`` [B, T]),
    a Dense layer projects it to ``embedding_dim`` (the width the decoder and the from-scratch heads
    are sized for), and the entity-marker embedding of ``entity_ids`` [B, T] is added, as the from-scratch
    encoder adds it to its input. With ``shape_features``, each word's shape class (``shape_ids`` [B, T]) is
    embedded (``BACKBONE_SHAPE_DIM``) and concatenated beside its first-piece state before the projection: an
    uncased backbone cannot see capitalisation otherwise.
    """
    backbone = checkpoints.load_backbone(preset)
    piece_ids = inputs[PIECE_IDS]
    given = {
        "token_ids": keras.ops.maximum(piece_ids - 1, 0),
        "padding_mask": keras.ops.greater(piece_ids, 0),
        "segment_ids": keras.ops.zeros_like(piece_ids),
    }
    names = list(backbone.input) if isinstance(backbone.input, dict) else []
    if not names or set(names) - set(given):
        raise ValueError(
            f"{BACKBONE_SETTING}={preset!r}: a {type(backbone).__name__} reads {names or backbone.input}; "
            f"only backbones of {sorted(given)} are supported"
        )
    output = backbone({name: keras.ops.cast(given[name], backbone.input[name].dtype) for name in names})
    pieces = output["sequence_output"] if isinstance(output, dict) else output
    x = FirstPieceGather(name="first_piece_gather")(pieces, inputs[FIRST_PIECE])
    if shape_features:
        shapes = keras.layers.Embedding(text.NUM_SHAPES, BACKBONE_SHAPE_DIM, name="backbone_shape_embedding")(
            inputs[SHAPE_IDS]
        )
        x = keras.layers.Concatenate(name="backbone_with_shapes")([x, shapes])
    x = keras.layers.Dense(embedding_dim, name="backbone_projection")(x)
    x = x + keras.layers.Embedding(text.NUM_ENTITY_MARKERS, embedding_dim, name="entity_marker_embedding")(
        inputs["entity_ids"]
    )
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="backbone_norm")(x)
    return keras.layers.Dropout(dropout)(x)


def compile_for_heads(
    model: keras.Model,
    heads: Sequence[Head],
    optimizer: keras.optimizers.Optimizer,
    loss_weighting: str = "fixed",
    head_configs: Mapping[str, HeadConfig] | None = None,
    total_steps: int | None = None,
    teacher_annealing: str = "linear",
) -> None:
    """Each head's loss (``Head.loss``: cross-entropy or, with ``loss="ranking"``, CR-CNN's pairwise ranking
    loss), averaged over the examples (or words) that carry its label, and its training metric.

    ``head_configs`` (default: each head's ``default_config``) must be those the model was built with
    (``build_model``): a head with the ranking loss has the constant-0 none-class logit the loss assumes.

    The sample weights (``<head>_weight`` from Transform) are 0 for examples of other tasks and for
    padding, so a head learns only from its own labels; ``mean_with_sample_weight`` divides by the
    weights' sum rather than the batch size, so a head's loss scale does not depend on the task mix.

    The heads' losses are summed with ``loss_weighting``: "fixed" (each head's ``loss_weight``) or
    "uncertainty" (learned; the model needs ``build_model(uncertainty_weighting=True)``).

    A head with a teacher (``heads.<name>.teacher``) learns from its gold labels and its teacher's predictions,
    mixed by ``teacher_annealing`` over ``total_steps`` optimizer steps (``model/distillation.py``); its labels
    are then ``distillation.pack_targets``' (``model/dataset.py`` packs them).
    """
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss_weighting {loss_weighting!r}: use one of {', '.join(LOSS_WEIGHTINGS)}")
    configs = head_configs_for(heads, head_configs)
    for h in heads:  # a ranked head's none logit must be 0 in the model too, or training and serving disagree
        if (configs[h.name].loss == "ranking") != isinstance(model.get_layer(h.name), NoneClassDense):
            raise ValueError(
                f"heads.{h.name}.loss is {configs[h.name].loss!r} here but the model was built with the "
                "other loss: pass the same head_configs to build_model and compile_for_heads"
            )
    losses = {h.name: h.loss(configs[h.name], model.get_layer(h.name)) for h in heads}
    metrics = {h.name: [h.training_metric()] for h in heads}
    for head in distillation.distilled_heads(heads, configs):
        if total_steps is None:
            raise ValueError(f"heads.{head.name}.teacher: distillation anneals over the run's steps; pass total_steps")
        losses[head.name] = distillation.DistillationLoss(
            losses[head.name], optimizer.iterations, total_steps, teacher_annealing
        )
        metrics[head.name] = [distillation.GoldAccuracy(name="accuracy")]
    if loss_weighting == "uncertainty":
        uncertainty = model.get_layer(TASK_UNCERTAINTY)
        losses = {name: UncertaintyWeightedLoss(loss, uncertainty, name) for name, loss in losses.items()}
    weights = {h.name: configs[h.name].loss_weight for h in heads}
    if MASKED_WORDS in model.output:  # already a per-example loss; weight 1 on the masked-word examples
        losses[MASKED_WORDS], weights[MASKED_WORDS] = PrecomputedLoss(), 1.0
    model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights=weights,
        weighted_metrics=metrics,
    )
