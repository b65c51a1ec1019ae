"""In-graph text handling: word splitting, word shapes and entity marking, in core TensorFlow ops only.

These functions run inside ``preprocessing_fn`` and therefore inside every serving signature, so
stock TF Serving runs them without Python. The word splitter approximates the Universal Dependencies
English tokenization that the tagging data uses: punctuation is split off and English clitics are
separated (``don't`` -> ``do n't``, ``it's`` -> ``it 's``). The typographic apostrophe is folded to
ASCII first, so a returned word may differ from the input by that character.
"""

from __future__ import annotations

import tensorflow as tf

# Word shape classes, an extra embedding next to the (lower-cased) word: casing carries most of the
# signal for named entities, which a lower-cased vocabulary would lose. 0 is padding.
SHAPE_PUNCT, SHAPE_NUMBER, SHAPE_ALLCAPS, SHAPE_CAPITALIZED, SHAPE_OTHER = 1, 2, 3, 4, 5
NUM_SHAPES = 6

# Marks a WordPiece piece that continues the previous piece's word ("habl ##amos").
WORDPIECE_JOINER = "##"

# Entity marker of each word: 0 outside both spans (and padding), 1 inside span e1, 2 inside span e2.
NUM_ENTITY_MARKERS = 3


def split_words(text: tf.Tensor) -> tf.RaggedTensor:
    """Splits strings into words. text: string [...]; returns ragged string [..., (words)]."""
    text = tf.strings.regex_replace(text, "\u2019", "'")
    text = tf.strings.regex_replace(text, r"(?i)(\pL)(n't)\b", r"\1 \2")
    text = tf.strings.regex_replace(text, r"(?i)(\pL)('s|'re|'ve|'ll|'m|'d)\b", r"\1 \2")
    # Keep "3.5", "1,000", "10:30" and "U.S." whole: hide their inner punctuation behind control
    # characters while punctuation is split off, then restore it.
    for _ in range(2):  # twice, for overlapping matches such as 1.2.3
        text = tf.strings.regex_replace(text, r"(\pN)\.(\pN)", "\\1\x01\\2")
        text = tf.strings.regex_replace(text, r"(\pN),(\pN)", "\\1\x02\\2")
        text = tf.strings.regex_replace(text, r"(\pN):(\pN)", "\\1\x03\\2")
    text = tf.strings.regex_replace(text, r"\b(\pL)\.(\pL)\.", "\\1\x01\\2\x01")
    text = tf.strings.regex_replace(text, r"([^\pL\pN\s'\x01-\x03])", r" \1 ")
    words = tf.strings.split(text)
    for hidden, punct in (("\x01", "."), ("\x02", ","), ("\x03", ":")):
        words = tf.strings.regex_replace(words, hidden, punct)
    return words


def normalize_words(words: tf.Tensor) -> tf.Tensor:
    """The vocabulary key of a word: lower-cased, every digit replaced by 0."""
    return tf.strings.regex_replace(tf.strings.lower(words, encoding="utf-8"), r"\pN", "0")


def affix(words: tf.Tensor, length: int, from_end: bool) -> tf.Tensor:
    """The first (or last) ``length`` characters of each normalized word, same shape, string.

    Affixes carry a rare word's class: "-ation", "-ly", "-ed", "un-", capitalized "-son" names.
    """
    norm = normalize_words(words)
    start = (
        tf.maximum(tf.strings.length(norm, unit="UTF8_CHAR") - length, 0)
        if from_end
        else tf.zeros_like(tf.strings.length(norm))
    )
    return tf.strings.substr(norm, start, tf.fill(tf.shape(start), length), unit="UTF8_CHAR")


def shape_patterns(words: tf.Tensor) -> tf.Tensor:
    """spaCy-style word shape of each word, same shape, string: upper-case letters become X, other
    letters x, digits d, and runs longer than four are cut to four ("McDonald's" -> "XxXxxxx'x",
    "1,000" -> "d,ddd"). Finer than ``word_shapes`` and still shared by unseen words."""
    pattern = words
    # placeholders first: the class letters themselves are letters
    for chars, placeholder in ((r"\p{Lu}", "\x04"), (r"\pL", "\x05"), (r"\pN", "\x06")):
        pattern = tf.strings.regex_replace(pattern, chars, placeholder)
    for placeholder, letter in (("\x04", "X"), ("\x05", "x"), ("\x06", "d")):
        pattern = tf.strings.regex_replace(pattern, placeholder + "{5,}", placeholder * 4)
        pattern = tf.strings.regex_replace(pattern, placeholder, letter)
    return pattern


def word_shapes(words: tf.Tensor) -> tf.Tensor:
    """Shape class (1..5) of each word of a dense string tensor, same shape, int64."""
    shape = tf.fill(tf.shape(words), tf.constant(SHAPE_OTHER, tf.int64))
    for pattern, value in (
        (r"\p{Lu}.*", SHAPE_CAPITALIZED),
        (r"\p{Lu}[\p{Lu}\pN.&-]+", SHAPE_ALLCAPS),
        (r".*\pN.*", SHAPE_NUMBER),
        (r"[^\pL\pN]+", SHAPE_PUNCT),
    ):  # later patterns win
        shape = tf.where(tf.strings.regex_full_match(words, pattern), tf.constant(value, tf.int64), shape)
    return shape


def split_words_marking_spans(text: tf.Tensor, e1: tf.Tensor, e2: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Splits text into words and marks the words of two character spans.

    text: string [B]; e1, e2: int64 [B, 2] character offsets [start, end) (all zeros: no span).
    Returns (words, markers), both ragged [B, (words)]; markers hold 0, 1 (in e1) or 2 (in e2).
    The text is cut at the four span boundaries into five pieces, each split on its own, so that
    a span always starts a new word.
    """
    a1, b1, a2, b2 = e1[:, 0], e1[:, 1], e2[:, 0], e2[:, 1]
    e1_first = a1 <= a2
    first_start, first_end = tf.where(e1_first, a1, a2), tf.where(e1_first, b1, b2)
    second_start, second_end = tf.where(e1_first, a2, a1), tf.where(e1_first, b2, b1)
    n_chars = tf.cast(tf.strings.length(text, unit="UTF8_CHAR"), tf.int64)
    zero = tf.zeros_like(n_chars)
    starts = tf.stack([zero, first_start, first_end, second_start, second_end], axis=1)
    ends = tf.stack([first_start, first_end, second_start, second_end, n_chars], axis=1)
    ends = tf.maximum(ends, starts)  # overlapping spans: empty pieces rather than negative lengths
    pieces = tf.strings.substr(
        tf.tile(text[:, None], [1, 5]),
        tf.cast(starts, tf.int32),
        tf.cast(ends - starts, tf.int32),
        unit="UTF8_CHAR",
    )
    piece_markers = tf.where(
        e1_first[:, None], tf.constant([[0, 1, 0, 2, 0]], tf.int64), tf.constant([[0, 2, 0, 1, 0]], tf.int64)
    )
    words_per_piece = split_words(pieces)  # [B, 5, (words)]
    word_piece_index = words_per_piece.values.value_rowids()  # flat piece index (b * 5 + p) of each word
    markers = words_per_piece.with_flat_values(tf.gather(tf.reshape(piece_markers, [-1]), word_piece_index))
    return words_per_piece.merge_dims(1, 2), markers.merge_dims(1, 2)


def join_words(words: tf.Tensor) -> tf.Tensor:
    """Words or WordPiece pieces back into text: string [B, N] ("" padding) -> string [B].

    Joined with spaces; a piece that starts with ``WORDPIECE_JOINER`` continues the word before it
    (one at the very start begins a word). Then the spaces that ``split_words`` introduced around
    punctuation are removed again: none before closing marks (``. , ! ? ; : ) ] } »``), none after
    opening marks (``¿ ¡ ( [ { «``).
    """
    joined = tf.strings.reduce_join(words, axis=-1, separator=" ")
    joined = tf.strings.regex_replace(joined, f"(^| +){WORDPIECE_JOINER}", "")
    joined = tf.strings.strip(tf.strings.regex_replace(joined, r" +", " "))
    joined = tf.strings.regex_replace(joined, r" ([.,!?;:)\]}»%])", r"\1")
    return tf.strings.regex_replace(joined, r"([¿¡(\[{«]) ", r"\1")
