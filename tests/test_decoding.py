"""In-graph decoding (model/decoding.py): IOB2-constrained Viterbi and beam search, checked against
brute-force enumeration, greedy decoding, and through tf.function and SavedModel save/load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model.decoding import (
    FORBIDDEN_TRANSITION,
    beam_search,
    constrained_viterbi,
    iob2_transitions,
    length_penalty_factor,
    tile_for_beams,
)

LABELS = ("O", "B-A", "I-A", "B-B", "I-B")
ALLOWED, ALLOWED_START = iob2_transitions(LABELS)
PAD, BOS, EOS = 0, 1, 2


def saved_model_op_types(export_dir) -> set[str]:
    """Every op type in a SavedModel's graph, its functions' bodies included."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    types = set()
    for meta_graph in saved_model.meta_graphs:
        types |= {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            types |= {node.op for node in function.node_def}
    return types


def assert_core_ops_only(export_dir) -> None:
    types = saved_model_op_types(export_dir)
    assert types, "no ops found in the SavedModel"
    # tf.raw_ops lists the ops built into TensorFlow; ops of custom op libraries (tensorflow-text,
    # TF Addons) are not in it, and stock TF Serving could not run them without that library
    not_core = {t for t in types if not hasattr(tf.raw_ops, t)}
    assert not not_core, not_core


# -- IOB2 constraints ------------------------------------------------------------------------------
def test_iob2_transitions():
    allowed, allowed_start = iob2_transitions(LABELS)
    # rows: previous label, columns: next label (O, B-A, I-A, B-B, I-B)
    np.testing.assert_array_equal(
        allowed.astype(int),
        [
            [1, 1, 0, 1, 0],  # O
            [1, 1, 1, 1, 0],  # B-A
            [1, 1, 1, 1, 0],  # I-A
            [1, 1, 0, 1, 1],  # B-B
            [1, 1, 0, 1, 1],  # I-B
        ],
    )
    np.testing.assert_array_equal(allowed_start, [True, True, False, True, False])
    assert allowed.dtype == bool and allowed_start.dtype == bool


def test_iob2_transitions_types_with_dashes_and_other_labels():
    labels = ("B-LOC-X", "I-LOC-X", "I-LOC", "O", "MISC")
    allowed, allowed_start = iob2_transitions(labels)
    assert allowed[0, 1] and allowed[1, 1]  # the type is everything after "B-"
    assert not allowed[0, 2] and not allowed[1, 2]  # I-LOC is another type
    assert not allowed[3, 1] and not allowed[4, 1]  # labels that are not B-/I- behave like O
    assert allowed[:, 0].all() and allowed[:, 3].all() and allowed[:, 4].all()
    np.testing.assert_array_equal(allowed_start, [True, False, False, True, True])


# -- Viterbi ---------------------------------------------------------------------------------------
def is_valid_iob2(label_ids, labels=LABELS) -> bool:
    previous = "O"
    for label in (labels[i] for i in label_ids):
        if label.startswith("I-") and previous[2:] != label[2:]:
            return False  # after O, after another type, or first (previous "O")
        previous = label
    return True


def brute_force_viterbi(scores: np.ndarray) -> tuple[list[tuple[int, ...]], list[float]]:
    """Every allowed sequence for one row's scores [L, C], sorted best first, with its score."""
    length, num_labels = scores.shape
    sequences, totals = [], []
    for sequence in itertools.product(range(num_labels), repeat=length):
        if length and not ALLOWED_START[sequence[0]]:
            continue
        if not all(ALLOWED[a, b] for a, b in zip(sequence, sequence[1:])):
            continue
        sequences.append(sequence)
        totals.append(sum(scores[t, label] for t, label in enumerate(sequence)))
    order = np.argsort(-np.array(totals), kind="stable")
    return [sequences[i] for i in order], [totals[i] for i in order]


@pytest.fixture(scope="module")
def viterbi_fn():
    """One traced function (dynamic batch and time) for all the random cases."""
    return tf.function(
        lambda scores, mask: constrained_viterbi(scores, mask, ALLOWED, ALLOWED_START),
        input_signature=[tf.TensorSpec([None, None, len(LABELS)], tf.float64), tf.TensorSpec([None, None], tf.bool)],
    )


def random_viterbi_batch(rng, batch_size, max_time):
    time_steps = int(rng.integers(0, max_time + 1))
    # lift the I- labels so that the unconstrained argmax often breaks IOB2
    scores = rng.normal(size=(batch_size, time_steps, len(LABELS))) + np.array([0, 0, 1.5, 0, 1.5])
    lengths = rng.integers(0, time_steps + 1, size=batch_size)
    mask = np.arange(time_steps)[None, :] < lengths[:, None]
    return scores, mask, lengths


def test_viterbi_equals_brute_force(viterbi_fn):
    differs_from_argmax = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        scores, mask, lengths = random_viterbi_batch(rng, batch_size=4, max_time=5)
        decoded = viterbi_fn(scores, mask).numpy()
        assert decoded.shape == mask.shape and decoded.dtype == np.int64
        for row, length in enumerate(lengths):
            sequences, _ = brute_force_viterbi(scores[row, :length])
            assert tuple(decoded[row, :length]) == sequences[0], (seed, row)
            assert (decoded[row, length:] == 0).all()
            differs_from_argmax += tuple(scores[row, :length].argmax(-1)) != sequences[0]
    assert differs_from_argmax > 20  # the constraints mattered in many of the cases


def test_viterbi_float32_scores_reach_the_brute_force_optimum():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        scores, mask, lengths = random_viterbi_batch(rng, batch_size=3, max_time=5)
        decoded = constrained_viterbi(scores.astype(np.float32), mask, ALLOWED, ALLOWED_START).numpy()
        for row, length in enumerate(lengths):
            _, totals = brute_force_viterbi(scores[row, :length])
            path_score = sum(scores[row, t, label] for t, label in enumerate(decoded[row, :length]))
            assert is_valid_iob2(decoded[row, :length])
            assert path_score == pytest.approx(totals[0] if length else 0.0, abs=1e-5)


def test_viterbi_rows_decode_as_alone(viterbi_fn):
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(6, 9, len(LABELS))) + np.array([0, 0, 1.0, 0, 1.0])
    lengths = np.array([9, 0, 1, 4, 9, 6])
    mask = np.arange(9)[None, :] < lengths[:, None]
    batched = viterbi_fn(scores, mask).numpy()
    for row, length in enumerate(lengths):
        alone = viterbi_fn(scores[row : row + 1, :length], mask[row : row + 1, :length]).numpy()[0]
        np.testing.assert_array_equal(batched[row, :length], alone)
        # padding's scores do not matter either
        noisy = scores[row : row + 1].copy()
        noisy[:, length:] = 100.0 * rng.normal(size=noisy[:, length:].shape)
        np.testing.assert_array_equal(viterbi_fn(noisy, mask[row : row + 1]).numpy()[0], batched[row])


def test_viterbi_never_breaks_iob2_on_long_sentences():
    rng = np.random.default_rng(3)
    # log-probabilities that strongly prefer I- labels: the argmax is invalid almost everywhere
    logits = rng.normal(size=(64, 30, len(LABELS))) * 2.0 + np.array([0, 0, 3.0, 0, 3.0])
    scores = tf.nn.log_softmax(tf.constant(logits, tf.float32))
    lengths = rng.integers(0, 31, size=64)
    mask = np.arange(30)[None, :] < lengths[:, None]
    decoded = constrained_viterbi(scores, mask, ALLOWED, ALLOWED_START).numpy()
    assert not all(is_valid_iob2(row[:n]) for row, n in zip(logits.argmax(-1), lengths))
    for row, length in zip(decoded, lengths):
        assert is_valid_iob2(row[:length]), row[:length]
        assert (row[length:] == 0).all()
    assert (decoded == 2).any() and (decoded == 4).any()  # I- labels are still used where allowed


def test_viterbi_empty_and_single_step_inputs(viterbi_fn):
    for shape in [(0, 0), (0, 4), (3, 0)]:
        scores, mask = np.zeros(shape + (len(LABELS),)), np.ones(shape, bool)
        for fn in (viterbi_fn, lambda s, m: constrained_viterbi(s, m, ALLOWED, ALLOWED_START)):
            decoded = fn(scores, mask).numpy()
            assert decoded.shape == shape and decoded.dtype == np.int64
    # T = 1: the best label that may start a sentence
    scores = np.array([[[0.0, 1.0, 5.0, 2.0, 9.0]], [[3.0, 1.0, 5.0, 2.0, 0.0]], [[0.0, 0.0, 9.0, 0.0, 0.0]]])
    np.testing.assert_array_equal(viterbi_fn(scores, np.array([[True], [True], [False]])).numpy(), [[3], [0], [0]])


def test_viterbi_without_constraints_is_the_argmax_and_mask_none_means_all_real():
    rng = np.random.default_rng(11)
    scores = rng.normal(size=(5, 7, len(LABELS)))
    everything = np.ones([len(LABELS), len(LABELS)], bool), np.ones([len(LABELS)], bool)
    np.testing.assert_array_equal(constrained_viterbi(scores, None, *everything).numpy(), scores.argmax(-1))
    np.testing.assert_array_equal(
        constrained_viterbi(scores, None, ALLOWED, ALLOWED_START).numpy(),
        constrained_viterbi(scores, np.ones([5, 7], bool), ALLOWED, ALLOWED_START).numpy(),
    )


def test_viterbi_picks_a_forbidden_path_only_when_nothing_is_allowed():
    labels = ("I-A",)  # nothing may start a sentence
    allowed, allowed_start = iob2_transitions(labels)
    decoded = constrained_viterbi(np.zeros([1, 3, 1]), None, allowed, allowed_start).numpy()
    np.testing.assert_array_equal(decoded, [[0, 0, 0]])
    assert FORBIDDEN_TRANSITION < -1e6


def test_viterbi_in_a_saved_model(tmp_path):
    class Tagger(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, len(LABELS)], tf.float32, name="scores"),
                tf.TensorSpec([None, None], tf.bool, name="mask"),
            ]
        )
        def decode(self, scores, mask):
            return {"labels": constrained_viterbi(scores, mask, ALLOWED, ALLOWED_START)}

    module = Tagger()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.decode})
    reloaded = tf.saved_model.load(str(tmp_path))
    rng = np.random.default_rng(5)
    for batch_size, time_steps in [(4, 6), (1, 1), (0, 3), (2, 0)]:
        scores = rng.normal(size=(batch_size, time_steps, len(LABELS))).astype(np.float32)
        mask = np.arange(time_steps)[None, :] < rng.integers(0, time_steps + 1, size=(batch_size, 1))
        expected = constrained_viterbi(scores, mask, ALLOWED, ALLOWED_START).numpy()
        np.testing.assert_array_equal(reloaded.decode(scores, mask)["labels"].numpy(), expected)
        serving = reloaded.signatures["serving_default"](scores=tf.constant(scores), mask=tf.constant(mask))
        np.testing.assert_array_equal(serving["labels"].numpy(), expected)
    assert_core_ops_only(tmp_path)


# -- beam search -----------------------------------------------------------------------------------
def markov_logits_fn(tables: tf.Tensor, beam_width: int):
    """A toy decoder: the next token's logits depend only on the previous token (BOS at t = 0), with
    one transition table per example, tables [B, V, V]. Reads the buffer the way a real decoder does."""
    tiled = tile_for_beams(tf.convert_to_tensor(tables, tf.float32), beam_width)  # [B * K, V, V]

    def logits_fn(ids, t):
        previous = tf.where(t > 0, ids[:, tf.maximum(t - 1, 0)], tf.constant(BOS, tf.int64))
        return tf.gather(tiled, previous[:, None], batch_dims=1)[:, 0]

    return logits_fn


def random_tables(rng, batch_size, vocabulary_size, scale=2.0, eos_bias=0.0) -> np.ndarray:
    tables = rng.normal(size=(batch_size, vocabulary_size, vocabulary_size)) * scale
    tables[:, :, EOS] += eos_bias
    return tables.astype(np.float32)


def greedy_reference(tables: np.ndarray, max_length: int) -> np.ndarray:
    """Greedy decoding of the Markov toy model, in numpy (as SequenceDecoder.greedy_decode decodes)."""
    out = np.zeros([len(tables), max_length], np.int64)
    for row, table in enumerate(tables):
        previous = BOS
        for t in range(max_length):
            logits = table[previous].copy()
            logits[:EOS] = -np.inf
            previous = out[row, t] = int(np.argmax(logits))
            if previous == EOS:
                break
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def brute_force_best(table: np.ndarray, max_length: int, alpha: float) -> tuple[list[tuple[int, ...]], list[float]]:
    """Every finished sequence (words then EOS, at most max_length tokens) of one example's Markov
    model, sorted by length-penalised score, best first, with the scores."""
    log_probs = log_softmax(table)
    words = range(EOS + 1, table.shape[0])
    sequences, scores = [], []
    for length in range(1, max_length + 1):
        for prefix in itertools.product(words, repeat=length - 1):
            sequence = (*prefix, EOS)
            total = sum(log_probs[previous, token] for previous, token in zip((BOS, *sequence), sequence))
            sequences.append(sequence)
            scores.append(total / ((5.0 + length) / 6.0) ** alpha)
    order = np.argsort(-np.array(scores), kind="stable")
    return [sequences[i] for i in order], [scores[i] for i in order]


def padded(sequence, max_length) -> list[int]:
    return list(sequence) + [PAD] * (max_length - len(sequence))


def run_beam_search(tables, max_length, beam_width, alpha=0.0):
    return beam_search(
        markov_logits_fn(tables, beam_width),
        len(tables),
        max_length,
        beam_width,
        alpha,
        BOS,
        EOS,
        vocabulary_size=tables.shape[-1],
    ).numpy()


def test_tile_for_beams_is_batch_major():
    x = tf.constant([[1, 2], [3, 4]])
    np.testing.assert_array_equal(tile_for_beams(x, 3).numpy(), [[1, 2]] * 3 + [[3, 4]] * 3)


def test_length_penalty_factor():
    assert float(length_penalty_factor(1, 0.0)) == 1.0
    assert float(length_penalty_factor(7, 1.0)) == pytest.approx(2.0)
    assert float(length_penalty_factor(3, 0.6)) == pytest.approx((8 / 6) ** 0.6)


def test_beam_width_one_is_greedy():
    for seed, (max_length, eos_bias, alpha) in enumerate(
        [(6, 0.0, 0.0), (6, 0.0, 0.6), (9, -3.0, 1.0), (4, 2.0, 0.6), (1, 0.0, 0.6), (5, -9.0, 0.0)]
    ):
        tables = random_tables(np.random.default_rng(seed), batch_size=8, vocabulary_size=9, eos_bias=eos_bias)
        decoded = run_beam_search(tables, max_length, beam_width=1, alpha=alpha)
        np.testing.assert_array_equal(decoded, greedy_reference(tables, max_length), err_msg=str(seed))


def test_large_beam_is_exhaustive_search():
    max_length, vocabulary_size = 4, 6  # 3 words: 40 finished sequences, at most 108 live extensions
    tables = random_tables(np.random.default_rng(1), batch_size=6, vocabulary_size=vocabulary_size, scale=1.5)
    for alpha in (0.0, 0.6, 2.0, -0.5):
        decoded = run_beam_search(tables, max_length, beam_width=128, alpha=alpha)
        greedy = greedy_reference(tables, max_length)
        beats_greedy = 0
        for row, table in enumerate(tables):
            sequences, scores = brute_force_best(table, max_length, alpha)
            if scores[0] - scores[1] > 1e-4:  # a float32 near-tie may go either way
                assert decoded[row].tolist() == padded(sequences[0], max_length), (alpha, row)
            else:
                assert tuple(t for t in decoded[row] if t != PAD) in sequences[:2]
            beats_greedy += decoded[row].tolist() != greedy[row].tolist()
        if alpha in (0.0, 2.0):
            assert beats_greedy > 0, alpha  # the search found better than greedy somewhere


def test_small_beam_reaches_the_exhaustive_optimum_on_most_examples():
    max_length = 4
    tables = random_tables(np.random.default_rng(2), batch_size=16, vocabulary_size=6, scale=1.5)
    decoded = run_beam_search(tables, max_length, beam_width=4, alpha=0.6)
    optimal = sum(
        decoded[row].tolist() == padded(brute_force_best(t, max_length, 0.6)[0][0], max_length)
        for row, t in enumerate(tables)
    )
    assert optimal >= 12, optimal


def test_beam_of_two_beats_greedy_on_a_constructed_model():
    a, b = 3, 4  # word ids; vocabulary: pad, BOS, EOS, a, b
    probabilities = np.full([5, 5], 1e-9)
    probabilities[BOS, [EOS, a, b]] = [0.1, 0.5, 0.4]  # greedy starts with "a" ...
    probabilities[a, [EOS, a, b]] = [0.34, 0.33, 0.33]  # ... which continues badly
    probabilities[b, [EOS, a, b]] = [0.9, 0.05, 0.05]  # "b EOS": 0.36 > "a EOS": 0.17
    tables = np.log(probabilities)[None].astype(np.float32)
    np.testing.assert_array_equal(greedy_reference(tables, 3), [[a, EOS, PAD]])
    np.testing.assert_array_equal(run_beam_search(tables, 3, beam_width=1), [[a, EOS, PAD]])
    np.testing.assert_array_equal(run_beam_search(tables, 3, beam_width=2), [[b, EOS, PAD]])


def test_length_penalty_favours_longer_hypotheses():
    a = 3
    probabilities = np.full([4, 4], 1e-9)
    probabilities[BOS, [EOS, a]] = [0.6, 0.4]
    probabilities[a, [EOS, a]] = [0.6, 0.4]
    tables = np.log(probabilities)[None].astype(np.float32)
    # log p: "EOS" -0.51, "a EOS" -1.43, "a a EOS" -2.34 ... alpha = 0 keeps the shortest
    assert run_beam_search(tables, 5, beam_width=3, alpha=0.0).tolist() == [[EOS, 0, 0, 0, 0]]
    # lp(1) = 1, lp(5) = (10/6)^alpha: a large alpha pays for the longest finished hypothesis
    long = run_beam_search(tables, 5, beam_width=3, alpha=8.0).tolist()
    assert long == [[a, a, a, a, EOS]], long
    assert brute_force_best(tables[0], 5, 8.0)[0][0] == (a, a, a, a, EOS)


def test_early_stopping_respects_the_length_penalty():
    a, b = 3, 4
    probabilities = np.full([5, 5], 1e-9)
    probabilities[BOS, [EOS, a]] = [0.6, 0.4]
    probabilities[a, b] = probabilities[b, EOS] = 0.99
    tables = np.log(probabilities)[None].astype(np.float32)
    # "EOS" (-0.51) finishes first; "a b EOS" (-0.94) beats it only after the penalty of length 3
    # (-0.94 / (8/6)^3 = -0.40), so the search must not stop after the first step
    assert brute_force_best(tables[0], 3, 3.0)[0][0] == (a, b, EOS)
    assert run_beam_search(tables, 3, beam_width=2, alpha=3.0).tolist() == [[a, b, EOS]]
    assert run_beam_search(tables, 3, beam_width=2, alpha=0.0).tolist() == [[EOS, PAD, PAD]]


def test_beam_search_output_structure_and_never_generated_ids():
    rng = np.random.default_rng(4)
    tables = random_tables(rng, batch_size=10, vocabulary_size=8, eos_bias=-1.0)
    tables[:, :, PAD] += 10.0  # the model loves padding and BOS: they must still never be output
    tables[:, :, BOS] += 10.0
    # after EOS the model says EOS again: a finished hypothesis that went on would win on length
    tables[:, EOS, EOS] = 30.0
    for beam_width, alpha in [(1, 0.6), (3, 0.6), (3, 3.0)]:
        decoded = run_beam_search(tables, 6, beam_width=beam_width, alpha=alpha)
        assert decoded.dtype == np.int64 and decoded.shape == (10, 6)
        for row in decoded.tolist():
            n = row.index(EOS) + 1 if EOS in row else len(row)
            assert all(t > EOS for t in row[: n - 1]) and all(t == PAD for t in row[n:]), row
            assert n == len(row) or row[n - 1] == EOS


def test_unfinished_hypotheses_when_nothing_ends():
    tables = random_tables(np.random.default_rng(6), batch_size=3, vocabulary_size=7)
    tables[:, :, EOS] = -1e9  # EOS (practically) never: every hypothesis runs to max_length
    decoded = run_beam_search(tables, 5, beam_width=4, alpha=0.6)
    assert (decoded > EOS).all()
    # the best unfinished one: close to the highest log-probability among all 4^5 sequences of words
    for row, log_probs in enumerate(log_softmax(tables)):

        def total(sequence, log_probs=log_probs):
            return sum(log_probs[previous, token] for previous, token in zip((BOS, *sequence), sequence))

        best = max(itertools.product(range(EOS + 1, 7), repeat=5), key=total)
        assert total(tuple(decoded[row])) >= total(best) - 1.0  # a beam of 4 gets close to it
    np.testing.assert_array_equal(run_beam_search(tables, 5, beam_width=1), greedy_reference(tables, 5))


def test_beam_search_rows_decode_as_alone():
    tables = random_tables(np.random.default_rng(8), batch_size=5, vocabulary_size=8, scale=1.5)
    for beam_width, alpha in [(3, 0.6), (2, 0.0)]:
        batched = run_beam_search(tables, 7, beam_width, alpha)
        for row in range(len(tables)):
            alone = run_beam_search(tables[row : row + 1], 7, beam_width, alpha)[0]
            np.testing.assert_array_equal(batched[row], alone)


def test_beam_search_stops_early():
    calls = tf.Variable(0)
    tables = np.zeros([2, 6, 6], np.float32)
    tables[:, :, EOS] = 20.0  # EOS first, by far: nothing live can catch up with it

    def counting_logits_fn(ids, t):
        calls.assign_add(1)
        return markov_logits_fn(tables, 4)(ids, t)

    decoded = beam_search(counting_logits_fn, 2, 20, 4, 0.6, BOS, EOS).numpy()
    np.testing.assert_array_equal(decoded, np.eye(1, 20, 0, dtype=np.int64).repeat(2, 0) * EOS)
    assert int(calls.numpy()) == 1
    # a batch of nothing runs no step at all
    calls.assign(0)
    assert beam_search(counting_logits_fn, 0, 20, 4, 0.6, BOS, EOS).shape == (0, 20)
    assert int(calls.numpy()) == 0


def test_beam_search_in_tf_function_and_saved_model(tmp_path):
    vocabulary_size, max_length, beam_width = 8, 6, 3

    class Translator(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, vocabulary_size, vocabulary_size], tf.float32)])
        def decode(self, tables):
            logits_fn = markov_logits_fn(tables, beam_width)
            return {
                "ids": beam_search(
                    logits_fn,
                    tf.shape(tables)[0],
                    max_length,
                    beam_width,
                    0.6,
                    BOS,
                    EOS,
                    vocabulary_size=vocabulary_size,
                )
            }

    module = Translator()
    tables = random_tables(np.random.default_rng(9), batch_size=5, vocabulary_size=vocabulary_size)
    expected = run_beam_search(tables, max_length, beam_width, 0.6)
    np.testing.assert_array_equal(module.decode(tables)["ids"].numpy(), expected)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.decode})
    reloaded = tf.saved_model.load(str(tmp_path))
    for rows in (slice(0, 5), slice(2, 3), slice(0, 0)):  # dynamic batch, one graph
        np.testing.assert_array_equal(reloaded.decode(tables[rows])["ids"].numpy(), expected[rows])
    serving = reloaded.signatures["serving_default"](tf.constant(tables))
    np.testing.assert_array_equal(serving["ids"].numpy(), expected)
    assert_core_ops_only(tmp_path)


def test_beam_search_wraps_the_sequence_decoder():
    """The caller's wrapping: tile the encoder states, let the decoder read BOS + the buffer; width 1
    equals the layer's own greedy decoding."""
    import keras

    from mtnlp.model.layers import SequenceDecoder

    keras.utils.set_random_seed(0)
    vocabulary_size, max_length = 12, 5
    decoder = SequenceDecoder(vocabulary_size, max_length, num_layers=1, num_heads=2, intermediate_dim=16)
    decoder.build((None, None, 8))
    hidden = tf.random.normal([3, 4, 8])
    mask = tf.constant([[True] * 4, [True, True, False, False], [True, False, False, False]])

    def decode(beam_width):
        tiled_hidden, tiled_mask = tile_for_beams(hidden, beam_width), tile_for_beams(mask, beam_width)

        def logits_fn(ids, t):
            return decoder.decode(tiled_hidden, tiled_mask, decoder.shift_right(ids), training=False)[:, t, :]

        return beam_search(
            logits_fn, 3, max_length, beam_width, 0.6, decoder.bos_id, decoder.eos_id, vocabulary_size=vocabulary_size
        ).numpy()

    np.testing.assert_array_equal(decode(1), decoder.greedy_decode(hidden, mask, max_length).numpy())
    wide = decode(3)
    assert wide.shape == (3, max_length) and ((wide == 0) | (wide >= decoder.eos_id)).all()
    # the layer's own decoding runs only the written prefix and projects only the next position: same logits
    # as the whole buffer, same hypotheses
    ids = tf.constant(np.random.default_rng(1).integers(3, vocabulary_size, size=(3, max_length)), tf.int64)
    whole = decoder.decode(hidden, mask, decoder.shift_right(ids), training=False).numpy()
    for t in range(max_length):
        np.testing.assert_allclose(decoder.next_logits(hidden, mask, ids, t).numpy(), whole[:, t, :], atol=1e-5)
    np.testing.assert_array_equal(decoder.beam_decode(hidden, mask, max_length, 3, 0.6).numpy(), wide)


def test_both_trace_with_static_shapes():
    """Traced with fully known shapes (no input_signature), as a Keras call or a fixed-size export may."""
    rng = np.random.default_rng(12)
    scores = tf.constant(rng.normal(size=(4, 6, len(LABELS))), tf.float32)
    mask = tf.constant(np.arange(6)[None, :] < np.array([[6], [3], [0], [1]]))
    viterbi = tf.function(lambda s, m: constrained_viterbi(s, m, ALLOWED, ALLOWED_START))
    assert viterbi.get_concrete_function(scores, mask).structured_outputs.shape == (4, 6)
    np.testing.assert_array_equal(viterbi(scores, mask), constrained_viterbi(scores, mask, ALLOWED, ALLOWED_START))

    tables = random_tables(rng, batch_size=3, vocabulary_size=7)
    static = tf.function(lambda: beam_search(markov_logits_fn(tables, 2), 3, 5, 2, 0.6, BOS, EOS))
    assert static.get_concrete_function().structured_outputs.shape == (3, 5)
    np.testing.assert_array_equal(static(), run_beam_search(tables, 5, 2, 0.6))
