"""A pretrained keras-hub backbone as the shared encoder (``transform.backbone_preset``).

The preset's own tokenizer runs inside the Transform graph, on the words the project already splits
(see ``model/preprocessing.py``), so serving still takes raw text:

- each word is pre-tokenized as the preset's WordPiece tokenizer does (lower-cased and accents
  stripped when the tokenizer does, split at punctuation and CJK characters) with core TF string ops,
  then spelled in the preset's pieces by TF Text's ``WordpieceTokenizer`` (the
  ``WordpieceTokenizeWithOffsets`` op the translation targets already use, so the served model needs
  no other TF Text kernel);
- a sentence becomes the preset's start piece, its words' pieces, the end piece: ``piece_ids``, and
  ``first_piece`` holds the position of each word's first piece. Words whose pieces do not fit in the
  backbone's ``max_sequence_length`` are dropped, as words beyond ``max_length`` are.

The one known difference from keras-hub's tokenizer: lower-casing is core TF's Unicode lower-casing,
where keras-hub applies TF Text's NFKC case folding; they differ on a few characters ("ß" stays, a
full-width "Ａ" becomes "ａ", not "a"), which are then spelled differently.

In the model (``model/network.py``) the backbone reads ``piece_ids`` and ``FirstPieceGather``
takes its output at each word's first piece, giving the per-word states [B, T, H] the heads read.

Only WordPiece tokenizers (BERT, DistilBERT, ELECTRA... presets) are supported; another tokenizer
fails with an error naming the setting.
"""

from __future__ import annotations

import dataclasses
import functools
import unicodedata
from collections.abc import Sequence

import tensorflow as tf

from mtnlp.model import checkpoints
from mtnlp.model.checkpoints import SETTING

# Transform outputs of the backbone: piece ids [B, P] (the preset's ids + 1; 0 is padding, so that
# batches are cut to their longest piece sequence as words are) and each word's first piece [B, L].
PIECE_IDS = "piece_ids"
FIRST_PIECE = "first_piece"
# Used when the backbone's config has no max_sequence_length (rotary or relative positions).
DEFAULT_MAX_PIECES = 512

# The preset WordPiece tokenizers' pre-tokenization, as regular expressions for core TF's RE2 ops:
# whitespace and invisible control characters separate; punctuation (all non-alphanumeric ASCII and
# Unicode P) and CJK ideographs are pieces of their own.
_WHITESPACE = r"\s|\p{Cc}|\p{Cf}"
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_CJK = (
    r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]|[\x{2A700}-\x{2B73F}]|"
    r"[\x{2B740}-\x{2B81F}]|[\x{2B820}-\x{2CEAF}]|[\x{F900}-\x{FAFF}]|[\x{2F800}-\x{2FA1F}]"
)


@dataclasses.dataclass(frozen=True)
class PresetTokenizer:
    """What the Transform graph needs of a preset's WordPiece tokenizer.

    Args:
        vocabulary: the pieces, in id order.
        lowercase, strip_accents, split_on_cjk: the tokenizer's pre-tokenization.
        suffix_indicator: the prefix of word-continuing pieces ("##").
        unknown_token: the piece of what the vocabulary cannot spell.
        start_id, end_id: the pieces that open and close a sentence ([CLS], [SEP]).
        max_pieces: the longest piece sequence the backbone reads (its ``max_sequence_length``).
    """

    vocabulary: tuple[str, ...]
    lowercase: bool
    strip_accents: bool
    split_on_cjk: bool
    suffix_indicator: str
    unknown_token: str
    start_id: int
    end_id: int
    max_pieces: int


@functools.lru_cache(maxsize=4)
def preset_tokenizer(preset: str) -> PresetTokenizer:
    """The tokenizer of a checkpoint (what ``model/checkpoints.py`` locates: a keras-hub preset name or
    directory, a Hugging Face BERT directory or zip, a fetched checkpoint's name). Raises ValueError
    naming the setting when it is not WordPiece."""
    import keras_hub
    from keras_hub.src.utils.preset_utils import CONFIG_FILE, load_json

    checkpoint = checkpoints.locate(preset)
    if checkpoint.files is not None:
        return checkpoints.huggingface_tokenizer(checkpoint)
    preset = checkpoint.keras_hub_preset
    tokenizer = checkpoints.load_tokenizer(preset)
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise ValueError(
            f"{SETTING}={preset!r}: its tokenizer is a {type(tokenizer).__name__}; only WordPiece "
            "tokenizers (BERT, DistilBERT, ELECTRA presets) are supported"
        )
    start, end = (getattr(tokenizer, f"{kind}_token_id", None) for kind in ("start", "end"))
    if start is None or end is None:
        raise ValueError(f"{SETTING}={preset!r}: its tokenizer has no start and end tokens ([CLS], [SEP])")
    backbone_config = load_json(preset, CONFIG_FILE).get("config", {})
    return PresetTokenizer(
        vocabulary=tuple(tokenizer.get_vocabulary()),
        lowercase=bool(tokenizer.lowercase),
        strip_accents=bool(tokenizer.strip_accents),
        split_on_cjk=bool(tokenizer.split_on_cjk),
        suffix_indicator=tokenizer.suffix_indicator,
        unknown_token=tokenizer.oov_token,
        start_id=int(start),
        end_id=int(end),
        max_pieces=int(backbone_config.get("max_sequence_length") or DEFAULT_MAX_PIECES),
    )


@functools.lru_cache(maxsize=1)
def _accent_free() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every character (below U+30000) that changes when decomposed (NFD) and stripped of its combining
    marks (Unicode Mn), and what it becomes: BERT's accent stripping as a lookup table, because core
    TensorFlow has no Unicode normalization op."""
    keys, values = [], []
    for code in range(0x80, 0x30000):
        char = chr(code)
        stripped = "".join(c for c in unicodedata.normalize("NFD", char) if unicodedata.category(c) != "Mn")
        if stripped != char:
            keys.append(char)
            values.append(stripped)
    return tuple(keys), tuple(values)


def _index_table(keys: Sequence[str]) -> tf.lookup.StaticHashTable:
    """Each key's position in ``keys`` (-1 for any other string), as a table made outside the function being
    traced: Transform then saves it as a resource that the SavedModel initialises once, at load, instead of
    filling it on every call (every request of a served model)."""
    with tf.init_scope():
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(len(keys), dtype=tf.int64)),
            default_value=-1,
        )


def _strip_accents(words: tf.Tensor) -> tf.Tensor:
    """Words (string [N]) without accents: each character through the ``_accent_free`` table."""
    keys, values = _accent_free()
    table = _index_table(keys)
    chars = tf.strings.unicode_split(words, "UTF-8")  # [N, (c)]
    index = table.lookup(chars.flat_values)
    replaced = tf.where(index >= 0, tf.gather(tf.constant(values), tf.maximum(index, 0)), chars.flat_values)
    return tf.strings.reduce_join(chars.with_flat_values(replaced), axis=-1)


def word_pieces(words: tf.RaggedTensor, tokenizer: PresetTokenizer) -> tf.RaggedTensor:
    """The preset's piece ids of each word: string [B, (W)] -> int64 [B, (W), (p)], at least one piece
    a word (a word with nothing to spell, such as a lone control character, reads the unknown piece)."""
    import tensorflow_text as tf_text  # here: importing this module must not need TF Text's Python package

    x = words.flat_values
    if tokenizer.lowercase:
        x = tf.strings.lower(x, encoding="utf-8")
    if tokenizer.strip_accents:
        x = _strip_accents(x)
    x = tf.strings.regex_replace(x, _WHITESPACE, " ")
    x = tf.strings.regex_replace(
        x, f"({_PUNCTUATION}|{_CJK})" if tokenizer.split_on_cjk else f"({_PUNCTUATION})", r" \1 "
    )
    parts = tf.strings.split(x)  # [N, (k)]
    table = _index_table(tokenizer.vocabulary)
    # split_unknown_characters=False: an unspellable part is one unknown piece, as the preset's tokenizer has it
    wordpiece = tf_text.WordpieceTokenizer(
        table,
        suffix_indicator=tokenizer.suffix_indicator,
        token_out_type=tf.int64,
        unknown_token=tokenizer.unknown_token,
    )
    pieces = wordpiece.tokenize(parts).merge_dims(1, 2)  # [N, (p)]
    empty = tf.cast(pieces.row_lengths() == 0, tf.int64)
    unknown = tf.fill(
        [tf.reduce_sum(empty)], tf.constant(tokenizer.vocabulary.index(tokenizer.unknown_token), tf.int64)
    )
    pieces = tf.concat([pieces, tf.RaggedTensor.from_row_lengths(unknown, empty)], axis=1)
    return words.with_flat_values(pieces)


def piece_features(
    words: tf.RaggedTensor, tokenizer: PresetTokenizer, max_words: int
) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """The backbone's inputs of sentences of words (string [B, (W)]).

    Returns:
        keep: bool [B, (W)], the words that fit: at most ``max_words``, and all their pieces within
            ``max_pieces`` with the start and end pieces (the rest are dropped, as a prefix).
        piece_ids: int64 [B, (P)]: the start piece, the kept words' pieces, the end piece; the preset's
            ids + 1 (0 is left for padding).
        first_piece: int64 [B, (W')], W' the kept words: each one's first piece's position in ``piece_ids``.
    """
    pieces = word_pieces(words, tokenizer)  # [B, (W), (p)]
    counts = pieces.row_lengths(axis=2).to_tensor()  # [B, Wmax], 0 past each sentence
    ends = tf.math.cumsum(counts, axis=1)
    positions = tf.range(tf.shape(counts, out_type=tf.int64)[1])[None, :]
    fits = (ends <= tokenizer.max_pieces - 2) & (positions < max_words) & (counts > 0)
    kept = tf.reduce_sum(tf.cast(fits, tf.int64), axis=1)  # a prefix: ends only grow
    keep = tf.ragged.range(words.row_lengths()) < kept[:, None]
    first_piece = tf.RaggedTensor.from_tensor(ends - counts + 1, lengths=kept)  # after the start piece
    body = tf.ragged.boolean_mask(pieces, keep).merge_dims(1, 2)
    batch = tf.shape(kept)[0]
    piece_ids = tf.concat(
        [
            tf.fill([batch, 1], tf.constant(tokenizer.start_id, tf.int64)),
            body,
            tf.fill([batch, 1], tf.constant(tokenizer.end_id, tf.int64)),
        ],
        axis=1,
    )
    return keep, piece_ids + 1, first_piece
