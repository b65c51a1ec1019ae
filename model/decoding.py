"""In-graph decoding for the serving signatures: IOB2-constrained Viterbi and beam search.

Both run inside ``tf.function`` / SavedModel signatures served by stock TF Serving, so they use core
TensorFlow ops only (no TF Addons, no tensorflow-text, no Python at serving time, no ragged
outputs), work with dynamic batch and time dimensions, and keep everything batched on axis 0.

**Constrained Viterbi** (``iob2_transitions``, ``constrained_viterbi``). A token head predicts one
label per word independently, so its argmax can say ``O I-PER`` or ``B-ORG I-PER``, which no IOB2
span reading accepts. ``constrained_viterbi`` returns, per sentence, the label sequence with the
highest sum of per-token scores among those the transition constraints allow (``I-X`` only after
``B-X`` or ``I-X``, never first). It is a ``tf.scan`` over time (max-product forward pass keeping
backpointers) followed by a reversed ``tf.scan`` that follows the backpointers. The constraints are
hard: a forbidden transition costs ``-1e9``; a CRF head (``model/crf.py``) adds its learned transition
and start scores.

**Beam search** (``beam_search``, ``tile_for_beams``). Decodes ``beam_width`` hypotheses per
example in one ``tf.while_loop`` with fixed-shape state. The caller's ``logits_fn`` reads the
fixed-size id buffer at every step (``SequenceDecoder.next_logits`` runs only its written prefix). Hypotheses are
ranked by the sum of their tokens' log-softmax; finished ones (ending with EOS) are compared after
dividing by the GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016), where
``length`` counts the generated tokens, EOS included. See ``beam_search`` for the exact search rule
(width 1 is exactly greedy decoding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

# A forbidden IOB2 transition's score. Finite rather than -inf so that sums stay finite (no
# -inf - -inf = NaN); it only has to dwarf any realistic sum of log-probabilities or logits.
FORBIDDEN_TRANSITION = -1e9


# -- IOB2-constrained Viterbi -----------------------------------------------------------------------
def _split_iob2(label: str) -> tuple[str, str | None]:
    """("B", "PER") for "B-PER", ("I", "PER") for "I-PER", ("O", None) for anything else."""
    if len(label) > 2 and label[1] == "-" and label[0] in "BI":
        return label[0], label[2:]
    return "O", None


def iob2_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The IOB2 constraints over a label set, for ``constrained_viterbi``.

    ``I-X`` may only follow ``B-X`` or ``I-X`` and may not start a sentence; every other transition
    is allowed (labels that are neither ``B-`` nor ``I-``, such as "O", are unconstrained).

    Args:
      labels: the C label strings in id order, e.g. ("O", "B-PER", "I-PER", "B-ORG", "I-ORG").

    Returns:
      allowed: bool [C, C], ``allowed[previous, next]``.
      allowed_start: bool [C], whether a label may be the first of a sentence.
    """
    parsed = [_split_iob2(label) for label in labels]
    num_labels = len(parsed)
    allowed = np.ones([num_labels, num_labels], dtype=bool)
    allowed_start = np.ones([num_labels], dtype=bool)
    for next_id, (next_prefix, next_type) in enumerate(parsed):
        if next_prefix != "I":
            continue
        allowed_start[next_id] = False
        for previous_id, (previous_prefix, previous_type) in enumerate(parsed):
            allowed[previous_id, next_id] = previous_prefix in ("B", "I") and previous_type == next_type
    return allowed, allowed_start


def constrained_viterbi(
    scores: tf.Tensor,
    mask: tf.Tensor | None,
    allowed: np.ndarray | tf.Tensor,
    allowed_start: np.ndarray | tf.Tensor,
    transition_scores: tf.Tensor | None = None,
    start_scores: tf.Tensor | None = None,
) -> tf.Tensor:
    """The best label sequence per row under hard transition constraints (Viterbi decoding).

    Maximises ``sum_t scores[b, t, label_t]`` (plus, when given, the learned ``start_scores[label_0]`` and
    ``transition_scores[label_t-1, label_t]`` of a CRF head, ``model/crf.py``) over the sequences whose
    transitions are allowed;
    a forbidden transition (or start) costs ``FORBIDDEN_TRANSITION``, so it is chosen only when no
    allowed sequence exists. Rows are independent: a row decodes the same alone and in a batch,
    whatever the other rows' lengths.

    Args:
      scores: float [B, T, C], per-token label scores (log-probabilities or logits). Half-precision
        inputs are decoded in float32, float64 stays float64.
      mask: bool [B, T], True for real tokens; the real tokens must be a prefix of each row.
        None means every position is real.
      allowed: bool [C, C], ``allowed[previous, next]`` (see ``iob2_transitions``).
      allowed_start: bool [C], the labels a sentence may start with.
      transition_scores: float [C, C] or None (0), a learned score per allowed transition ``[previous, next]``.
      start_scores: float [C] or None (0), a learned score per allowed first label.

    Returns:
      int64 [B, T]: the label ids, 0 at padded positions. B = 0 and T = 0 give empty results.
    """
    scores = tf.convert_to_tensor(scores)
    if scores.dtype != tf.float64:
        scores = tf.cast(scores, tf.float32)
    if mask is None:
        mask = tf.ones(tf.shape(scores)[:2], tf.bool)
    mask = tf.cast(mask, tf.bool)
    allowed = tf.convert_to_tensor(allowed, tf.bool)
    allowed_start = tf.convert_to_tensor(allowed_start, tf.bool)
    num_labels = allowed.shape[0]  # static: the constraints come from the head's fixed label set
    time_steps = tf.shape(scores)[1]

    transition = tf.where(allowed, tf.constant(0.0, scores.dtype), tf.constant(FORBIDDEN_TRANSITION, scores.dtype))
    start = tf.where(allowed_start, tf.constant(0.0, scores.dtype), tf.constant(FORBIDDEN_TRANSITION, scores.dtype))
    if transition_scores is not None:
        transition += tf.cast(transition_scores, scores.dtype)
    if start_scores is not None:
        start += tf.cast(start_scores, scores.dtype)
    # One extra padded step at the end, so that both scans always have at least one element (an empty
    # scan cannot stack its output in graph mode when the batch size is unknown); sliced off below.
    scores = tf.pad(scores, [[0, 0], [0, 1], [0, 0]])
    mask = tf.pad(mask, [[0, 0], [0, 1]])
    is_first = tf.equal(tf.range(time_steps + 1), 0)
    identity = tf.range(num_labels)  # the backpointers of a padded step: every label stays itself

    def forward(carry, step):
        # carry: best score [B, C] of a path ending in each label at the previous step
        best_so_far, _ = carry
        step_scores, step_mask, first = step  # [B, C], [B], scalar
        candidates = best_so_far[:, :, None] + transition[None, :, :]  # [B, previous, next]
        best_previous = tf.argmax(candidates, axis=1, output_type=tf.int32)  # [B, C]
        extended = tf.reduce_max(candidates, axis=1)
        extended = tf.where(first, tf.broadcast_to(start, tf.shape(extended)), extended) + step_scores
        # padding keeps the last real step's scores and points every label back to itself, so the
        # backward pass carries the last real label through the padding unchanged
        best_so_far = tf.where(step_mask[:, None], extended, best_so_far)
        backpointers = tf.where(step_mask[:, None], best_previous, identity[None, :])
        return best_so_far, backpointers

    batch_size = tf.shape(scores)[0]
    initial = (tf.zeros([batch_size, num_labels], scores.dtype), tf.zeros([batch_size, num_labels], tf.int32))
    best_scores, backpointers = tf.scan(
        forward,
        (tf.transpose(scores, [1, 0, 2]), tf.transpose(mask), is_first),
        initializer=initial,
    )  # [T + 1, B, C] each
    last_label = tf.argmax(best_scores[-1], axis=-1, output_type=tf.int32)  # [B]

    # label[t] = backpointers[t + 1][label[t + 1]]; the (virtual) step after the last points to itself
    next_backpointers = tf.concat([backpointers[1:], tf.broadcast_to(identity, [1, batch_size, num_labels])], axis=0)

    def backward(next_label, step_backpointers):
        return tf.gather(step_backpointers, next_label[:, None], batch_dims=1)[:, 0]

    labels = tf.scan(backward, next_backpointers, initializer=last_label, reverse=True)  # [T + 1, B]
    labels = tf.transpose(labels)[:, :time_steps]
    return tf.where(mask[:, :time_steps], tf.cast(labels, tf.int64), tf.zeros_like(labels, tf.int64))


# -- beam search ------------------------------------------------------------------------------------
def tile_for_beams(x: tf.Tensor, beam_width: int) -> tf.Tensor:
    """Repeats every example ``beam_width`` times along axis 0, batch-major: [B, ...] -> [B * K, ...],
    row ``b * beam_width + k`` being beam k of example b (the row order ``beam_search`` uses)."""
    return tf.repeat(x, beam_width, axis=0)


def length_penalty_factor(length: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT's length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016); 1 when alpha is 0."""
    return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def beam_search(
    logits_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    batch_size: int | tf.Tensor,
    max_length: int,
    beam_width: int,
    length_penalty: float,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    vocabulary_size: int | None = None,
) -> tf.Tensor:
    """Beam search in a ``tf.while_loop`` with fixed shapes (core TF ops only).

    The search rule. Each step extends every live hypothesis by every token and keeps the
    ``beam_width`` best extensions by log-probability (they all have the same length, so the length
    penalty does not change this ranking). A kept extension that ends with EOS is finished: it is
    compared with the example's best finished hypothesis by its length-penalised score, and its beam
    slot is empty for the next step, which refills the beam from the other live hypotheses'
    extensions. An EOS that does not make the top ``beam_width`` is not a finished hypothesis. So
    width 1 is exactly greedy decoding (the single hypothesis either ends or goes on with the
    argmax token), and a beam wider than the number of extensions at every step is an exhaustive search.

    The loop stops at ``max_length`` steps, or earlier once, for every example, no live hypothesis
    can beat the best finished one any more (a live hypothesis' log-probability only decreases, so
    its best possible final score is its current log-probability over the largest length penalty
    it can still reach); stopping early never changes the result.

    ``logits_fn(ids, t)`` is the model. ``ids`` is the id buffer, int64 [B * beam_width,
    max_length]: row ``b * beam_width + k`` is beam k of example b (batch-major; use
    ``tile_for_beams`` for the encoder states), and holds the tokens generated so far at positions
    0..t-1, then ``pad_id``. The buffer does not hold BOS: a decoder that reads BOS first shifts the
    buffer right itself (e.g. ``decoder.decode(hidden, mask, decoder.shift_right(ids))``). ``t`` is
    the step, a scalar int32 tensor. It returns the logits for position t, float [B * beam_width, V].
    It is traced once, inside the loop body.

    Scores are sums of the model's log-softmax over the whole vocabulary; pad_id, BOS and every
    other id below ``eos_id`` are never generated.

    Args:
      logits_fn: the model, see above.
      batch_size: B, a Python int or a scalar int tensor (dynamic batch).
      max_length: the buffer length, the most tokens a hypothesis has (EOS included); a Python int.
      beam_width: K, hypotheses kept per example; a Python int.
      length_penalty: alpha of the GNMT length penalty; 0 compares finished hypotheses by their
        log-probability alone, larger values favour longer ones.
      bos_id: the begin-of-sequence id (never generated; ``logits_fn`` supplies it to the model).
      eos_id: the end-of-sequence id.
      pad_id: the id after EOS (and after the last token written so far in the buffer).
      vocabulary_size: V, if known statically (checked against the logits); else read from them.

    Returns:
      int64 [B, max_length]: per example the best finished hypothesis (its tokens, EOS, then
      ``pad_id``); an example with no finished hypothesis after ``max_length`` steps gets its best
      unfinished one (``max_length`` tokens, no EOS).
    """
    if beam_width < 1 or max_length < 0:
        raise ValueError(f"beam_width must be >= 1 and max_length >= 0, got {beam_width}, {max_length}")
    never_generated = sorted(set(range(eos_id)) | {bos_id, pad_id})
    batch_size = tf.convert_to_tensor(batch_size, tf.int32)
    rows = batch_size * beam_width
    negative_infinity = tf.constant(-np.inf, tf.float32)
    positions = tf.range(max_length)

    def write(ids: tf.Tensor, t: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
        """ids [..., L] with tokens [...] written at position t."""
        return tf.where(tf.equal(positions, t), tokens[..., None], ids)

    def step(t, alive_ids, alive_log_probs, finished_ids, finished_scores):
        logits = logits_fn(tf.reshape(alive_ids, [rows, max_length]), t)
        if vocabulary_size is not None:
            logits = tf.ensure_shape(logits, [None, vocabulary_size])
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        vocabulary = tf.shape(log_probs, out_type=tf.int32)[-1]
        is_never_generated = tf.reduce_any(
            tf.equal(tf.range(vocabulary)[:, None], tf.constant(never_generated, tf.int32)[None, :]), axis=1
        )
        log_probs = tf.where(is_never_generated[None, :], negative_infinity, log_probs)
        # every extension of every beam, [B, K * V] (empty beam slots are -inf and rank last)
        candidates = tf.reshape(
            alive_log_probs[:, :, None] + tf.reshape(log_probs, [batch_size, beam_width, -1]), [batch_size, -1]
        )
        top_log_probs, top_indices = tf.math.top_k(candidates, k=beam_width)  # [B, K], best first
        source_beams = top_indices // vocabulary
        tokens = tf.cast(top_indices % vocabulary, tf.int64)
        top_ids = write(tf.gather(alive_ids, source_beams, batch_dims=1), t, tokens)  # [B, K, L]
        is_real = top_log_probs > negative_infinity
        ends = tf.logical_and(is_real, tf.equal(tokens, eos_id))

        # the best of this step's finished hypotheses replaces the example's best if strictly better
        # (ties keep the earlier, shorter one)
        step_scores = tf.where(ends, top_log_probs / length_penalty_factor(t + 1, length_penalty), negative_infinity)
        step_best = tf.argmax(step_scores, axis=1, output_type=tf.int32)
        step_best_score = tf.gather(step_scores, step_best[:, None], batch_dims=1)[:, 0]
        improves = step_best_score > finished_scores
        finished_ids = tf.where(
            improves[:, None], tf.gather(top_ids, step_best[:, None], batch_dims=1)[:, 0], finished_ids
        )
        finished_scores = tf.where(improves, step_best_score, finished_scores)

        # finished slots are emptied: they continue nothing at the next step
        alive_log_probs = tf.where(ends, negative_infinity, top_log_probs)
        return t + 1, top_ids, alive_log_probs, finished_ids, finished_scores

    def not_done(t, alive_ids, alive_log_probs, finished_ids, finished_scores):
        # a live hypothesis can still end at lengths t + 1 .. max_length; the penalty is monotonic in
        # the length, so its largest value is at one of the two ends (alpha may be negative)
        largest_penalty = tf.maximum(
            length_penalty_factor(t + 1, length_penalty), length_penalty_factor(max_length, length_penalty)
        )
        # log-probabilities are <= 0, so dividing by the largest penalty gives the best reachable score
        best_reachable = tf.reduce_max(alive_log_probs, axis=1) / largest_penalty  # -inf: nothing alive
        settled = tf.logical_or(
            tf.reduce_all(tf.equal(alive_log_probs, negative_infinity), axis=1), finished_scores >= best_reachable
        )
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(settled)))

    empty_ids = tf.fill([batch_size, beam_width, max_length], tf.constant(pad_id, tf.int64))
    # only beam 0 is live at the start, so the first step does not pick the same token K times
    initial_log_probs = tf.tile(
        tf.concat([[0.0], tf.fill([beam_width - 1], -np.inf)], axis=0)[None, :], [batch_size, 1]
    )
    loop_variables = (
        tf.constant(0),
        empty_ids,
        tf.cast(initial_log_probs, tf.float32),
        empty_ids[:, 0],
        tf.fill([batch_size], negative_infinity),
    )
    # the batch dimension is left open: inside the loop body a static batch size is not known
    # (batch_size is captured as a placeholder), so the body's results have an unknown first dimension
    invariants = tuple(
        tf.TensorShape([None]).concatenate(v.shape[1:]) if v.shape.rank else v.shape for v in loop_variables
    )
    _, alive_ids, alive_log_probs, finished_ids, finished_scores = tf.while_loop(
        not_done, step, loop_variables, shape_invariants=invariants, maximum_iterations=max_length
    )

    best_alive = tf.argmax(alive_log_probs, axis=1, output_type=tf.int32)
    best_unfinished = tf.gather(alive_ids, best_alive[:, None], batch_dims=1)[:, 0]
    has_finished = finished_scores > negative_infinity
    best = tf.where(has_finished[:, None], finished_ids, best_unfinished)
    return tf.reshape(best, [batch_size, max_length])  # the static batch size again, where it is known
