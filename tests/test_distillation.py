"""Distillation with teacher annealing (model/distillation.py): lambda and the mixed loss against hand-computed
values, the packing of a batch's targets, the teacher checks, and (slow) a real student trained with a teacher
the shared pipeline run wrote, from records cached with its predictions."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model import distillation
from mtnlp.model.network import build_model, compile_for_heads
from mtnlp.model.tasks import SENTIMENT, TAGGING
from mtnlp.model.warm_start import save_for_warm_start
from mtnlp.sections import HeadConfig
from tests.test_model import SIZES

POS, NER = TAGGING.heads
SENTIMENT_HEAD = SENTIMENT.heads[0]
LN2, LN4 = math.log(2), math.log(4)


@pytest.mark.parametrize(
    "step, annealing, expected",
    [(0, "linear", 0.0), (25, "linear", 0.25), (50, "linear", 0.5), (100, "linear", 1.0), (150, "linear", 1.0)]
    + [(0, "off", 0.0), (60, "off", 0.0)],
)
def test_the_gold_labels_weight_rises_linearly_from_0_to_1_over_the_run(step, annealing, expected):
    assert float(distillation.gold_weight(step, 100, annealing)) == pytest.approx(expected)


def _loss_at(step: int, total: int = 100, label_smoothing: float = 0.0) -> distillation.DistillationLoss:
    gold_loss = SENTIMENT_HEAD.loss(HeadConfig(label_smoothing=label_smoothing))  # the head's own cross-entropy
    return distillation.DistillationLoss(gold_loss, keras.Variable(step, dtype="int64", trainable=False), total)


# softmax([ln .5, ln .25, ln .25]) = [.5, .25, .25]: CE of class 0 is ln 2, of class 1 or 2 ln 4
LOGITS = np.log([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]).astype("float32")
# row 0: gold 0, teacher [0, .5, .5] (its classes 0, 1, 2); row 1: gold 1, no teacher prediction (probabilities 0)
Y_TRUE = np.array([[0, 0, 1, 2, 0.0, 0.5, 0.5], [1, 0, 1, 2, 0.0, 0.0, 0.0]], "float32")


def test_the_loss_mixes_gold_and_teacher_cross_entropies_by_lambda():
    # at step 25 of 100, lambda = 0.25: row 0 = .25 ln 2 + .75 ln 4; row 1 has no teacher: ln 4 (its gold CE)
    row0 = 0.25 * LN2 + 0.75 * LN4
    assert float(_loss_at(25)(Y_TRUE, LOGITS)) == pytest.approx((row0 + LN4) / 2, rel=1e-5)
    assert float(_loss_at(25)(Y_TRUE, LOGITS, sample_weight=np.array([1.0, 0.0]))) == pytest.approx(row0, rel=1e-5)
    # at the start the teacher alone, at the end the gold label alone
    assert float(_loss_at(0)(Y_TRUE[:1], LOGITS[:1])) == pytest.approx(LN4, rel=1e-5)
    assert float(_loss_at(100)(Y_TRUE[:1], LOGITS[:1])) == pytest.approx(LN2, rel=1e-5)
    # the gold term is the head's own loss: with label smoothing 0.1, .9 ln 2 + .1 (ln 2 + ln 4 + ln 4) / 3
    smoothed = 0.9 * LN2 + 0.1 * (LN2 + 2 * LN4) / 3
    assert float(_loss_at(100, label_smoothing=0.1)(Y_TRUE[:1], LOGITS[:1])) == pytest.approx(smoothed, rel=1e-5)


def test_top_k_targets_per_position_gather_the_teachers_classes():
    # one sequence, two target positions, k=2 of a 3-piece vocabulary: position 0 gold 2, teacher {1: .75, 2: .25};
    # position 1 is padding (weight 0)
    y_true = np.array([[[2, 1, 2, 0.75, 0.25], [0, 0, 0, 0, 0]]], "float32")
    logits = LOGITS[None]
    teacher_ce = 0.75 * LN4 + 0.25 * LN4
    expected = 0.5 * LN4 + 0.5 * teacher_ce  # lambda 0.5
    loss = _loss_at(50)(y_true, logits, sample_weight=np.array([[1.0, 0.0]]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_top_predictions_keep_the_k_best_classes_renormalized():
    ids, probs = distillation._top_predictions(np.log(np.array([[0.1, 0.6, 0.3]])), 2)
    assert ids.tolist() == [[1, 2]]
    np.testing.assert_allclose(probs, [[2 / 3, 1 / 3]], rtol=1e-6)


def test_packed_targets_of_a_batch_with_and_without_teacher_predictions():
    # two sentence examples, k = 3: the first with a cached prediction, the second (another task) without
    ids_key, probs_key = distillation.teacher_keys("sentiment")
    features = {
        ids_key: tf.sparse.from_dense(tf.constant([[2, 0, 1], [0, 0, 0]], tf.int64)),
        probs_key: tf.sparse.from_dense(tf.constant([[0.7, 0.2, 0.1], [0, 0, 0]], tf.float32)),
    }
    packed = distillation.pack_targets(tf.constant([2, 0], tf.int64), features, "sentiment", 3)
    np.testing.assert_allclose(packed, [[2, 2, 0, 1, 0.7, 0.2, 0.1], [0, 0, 0, 0, 0, 0, 0]], rtol=1e-6)
    # per word: the cached positions [B, n*k] are padded (or cut) to the batch's words; validation has none
    per_word = distillation.pack_targets(tf.constant([[1, 0, 0]], tf.int64), {}, "pos", 2)
    assert per_word.shape == (1, 3, 5) and not np.any(per_word[..., 1:])
    ids_key, probs_key = distillation.teacher_keys("pos")
    features = {
        ids_key: tf.sparse.from_dense(tf.constant([[4, 1]], tf.int64)),
        probs_key: tf.sparse.from_dense(tf.constant([[0.9, 0.1]], tf.float32)),
    }
    per_word = distillation.pack_targets(tf.constant([[3, 0, 0]], tf.int64), features, "pos", 2)
    np.testing.assert_allclose(per_word[0], [[3, 4, 1, 0.9, 0.1], [0] * 5, [0] * 5], rtol=1e-6)


def test_a_distilled_heads_accuracy_reads_the_gold_label():
    metric = distillation.GoldAccuracy()
    metric.update_state(Y_TRUE, LOGITS)  # argmax is class 0: right for row 0 (gold 0), wrong for row 1 (gold 1)
    assert float(metric.result()) == pytest.approx(0.5)


def test_a_teacher_needs_a_plain_softmax_head():
    with pytest.raises(ValueError, match="teacher 't'.*decoder=crf"):
        HeadConfig(teacher="t", decoder="crf")
    with pytest.raises(ValueError, match="teacher 't'.*loss=ranking"):
        HeadConfig(teacher="t", loss="ranking")
    assert HeadConfig(teacher="t", label_smoothing=0.1).teacher == "t"  # the gold term is smoothed


def _tiny_model(heads):
    return build_model(heads, **SIZES)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tagging teacher (pos and ner) saved as the Trainer saves it, with the vocabulary it was trained on."""
    folder = tmp_path_factory.mktemp("teacher")
    vocabulary = folder / "student_words.txt"
    vocabulary.write_text("the\ncat\nsat\n")
    save_for_warm_start(_tiny_model(list(TAGGING.heads)), str(vocabulary), str(folder / "Format-Keras"))
    return folder


def test_a_teacher_of_another_transform_output_is_refused_naming_the_head_and_the_teacher(teacher_dir, tmp_path):
    sizes = {"pos": POS.num_labels, "ner": NER.num_labels, "sentiment": SENTIMENT_HEAD.num_labels}
    words = str(teacher_dir / "student_words.txt")
    teacher = distillation.load_teacher(str(teacher_dir), [POS, NER], words, sizes)  # the Format-Keras beside
    assert set(teacher.output) == {"pos", "ner"}
    with pytest.raises(ValueError, match=f"heads.pos.teacher = '{teacher_dir}'.*has 17 classes, the student's 5"):
        distillation.load_teacher(str(teacher_dir), [POS], words, {**sizes, "pos": 5})
    with pytest.raises(ValueError, match="heads.sentiment.teacher = .*no head 'sentiment'"):
        distillation.load_teacher(str(teacher_dir), [SENTIMENT_HEAD], words, sizes)
    other_words = tmp_path / "words.txt"
    other_words.write_text("the\ndog\n")
    with pytest.raises(ValueError, match="heads.pos.teacher, heads.ner.teacher = .*another Transform output"):
        distillation.load_teacher(str(teacher_dir), [POS, NER], str(other_words), sizes)
    with pytest.raises(FileNotFoundError, match=f"teacher '{tmp_path}': no model.keras"):
        distillation.teacher_model_file(str(tmp_path))


def test_compiling_a_distilled_head_needs_the_runs_steps():
    model = _tiny_model([SENTIMENT_HEAD])
    configs = {"sentiment": HeadConfig(teacher="somewhere")}
    with pytest.raises(ValueError, match="heads.sentiment.teacher: .*pass total_steps"):
        compile_for_heads(model, [SENTIMENT_HEAD], keras.optimizers.Adam(), head_configs=configs)
    compile_for_heads(model, [SENTIMENT_HEAD], keras.optimizers.Adam(), head_configs=configs, total_steps=10)
    assert isinstance(model.loss["sentiment"], distillation.DistillationLoss)


def test_a_teacher_is_named_in_its_heads_section():
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.settings import apply_mapping, parse_assignment

    config = get_config("quick")
    for assignment in ("heads.pos.teacher=/models/pos", "training.teacher_annealing=off"):
        config = apply_mapping(config, parse_assignment(assignment), source=assignment)
    assert config.heads["pos"].teacher == "/models/pos" and config.training.teacher_annealing == "off"
    with pytest.raises(ValueError, match="training.teacher_annealing: expected one of 'linear', 'off', got 'cosine'"):
        apply_mapping(config, parse_assignment("training.teacher_annealing=cosine"), source="--set")


def _records(pattern: str) -> list[tf.train.Example]:
    files = sorted(tf.io.gfile.glob(pattern))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.mark.slow
def test_a_student_trains_on_teacher_predictions_cached_once_from_a_model_the_pipeline_wrote(pipeline_run, tmp_path):
    import tensorflow_transform as tft

    from mtnlp.model import dataset
    from mtnlp.model.devices import make_strategy
    from mtnlp.model.tasks import TRANSLATION
    from mtnlp.model.training import train_model
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.summary import latest_transform_outputs

    transform = latest_transform_outputs(str(pipeline_run.workdir / "metadata.sqlite"))
    tft_output = tft.TFTransformOutput(transform["transform_graph"])
    train_files = [f"{transform['transformed_examples']}/Split-train/*"]
    eval_files = [f"{transform['transformed_examples']}/Split-eval/*"]
    # the Trainer's SavedModel folder: its Keras model beside it (Format-Keras) is the teacher
    (serving_dir,) = (pipeline_run.workdir / "pipeline_root" / "Trainer" / "model").glob("*/Format-Serving")
    translation = TRANSLATION.heads[0]
    heads = [POS, NER, SENTIMENT_HEAD, translation]
    config = get_config("quick")
    head_configs = {
        **{h.name: config.heads[h.name] for h in heads},
        **{h.name: HeadConfig(teacher=str(serving_dir)) for h in (POS, SENTIMENT_HEAD, translation)},
    }
    counts = dataset.count_examples_per_task(train_files, tft_output)
    weights = dataset.task_weights({t: counts[t] for t in ("tagging", "sentiment", "translation")}, "uniform")
    cache = tmp_path / "cache"
    trained = train_model(
        heads,
        tft_output,
        train_files,
        eval_files,
        weights,
        dataclasses.replace(config.model, embedding_dim=16, intermediate_dim=32, num_layers=1, num_heads=2),
        config.training,
        config.transform,
        head_configs,
        steps=12,
        eval_steps=2,
        strategy=make_strategy(1),
        epochs=2,
        teacher_cache_dir=str(cache),
    )
    assert trained.steps == 12 and trained.teacher_seconds > 0
    assert all(np.isfinite(point["loss"]) for point in trained.history)

    # every training record once, in order, with its teacher's predictions where the teacher has the record's head
    original, cached = _records(train_files[0]), _records(str(cache / distillation.CACHE_FILE))
    assert len(cached) == len(original) > 0
    teacher = keras.saving.load_model(str(serving_dir.parent / "Format-Keras" / "model.keras"), compile=False)
    seen = dict.fromkeys(["pos", "sentiment", "translation"], 0)
    spec = tft_output.transformed_feature_spec()
    for before, after in zip(original, cached):
        added = set(after.features.feature) - set(before.features.feature)
        features = tf.io.parse_example([before.SerializeToString()], spec)
        taught = [h for h in (POS, SENTIMENT_HEAD, translation) if float(np.sum(features[h.weight_key])) > 0]
        assert added == {key for h in taught for key in distillation.teacher_keys(h.name)}  # ner has no teacher
        if not taught or seen[taught[0].name] >= 3:
            continue
        head = taught[0]
        seen[head.name] += 1
        # the cached distribution is the teacher's own on this record, at each labelled position
        batch = dataset.trim_batch(features, [head])
        logits = np.asarray(teacher({k: batch[k] for k in teacher.input}, training=False)[head.name])
        positions = max(1, int(np.count_nonzero(features[head.weight_key])))
        k = distillation.top_k(head, logits.shape[-1])
        ids_key, probs_key = distillation.teacher_keys(head.name)
        ids = np.array(after.features.feature[ids_key].int64_list.value).reshape(positions, k)
        probs = np.array(after.features.feature[probs_key].float_list.value).reshape(positions, k)
        expected_ids, expected_probs = distillation._top_predictions(logits.reshape(-1, logits.shape[-1]), k)
        np.testing.assert_array_equal(ids, expected_ids[:positions])
        np.testing.assert_allclose(probs, expected_probs[:positions], rtol=1e-4, atol=1e-6)
        if head.kind == "sentence":  # the whole distribution: the teacher's softmax
            np.testing.assert_allclose(np.sort(probs[0]), np.sort(tf.nn.softmax(logits[0]).numpy()), rtol=1e-4)
    assert min(seen.values()) > 0
