"""A stand-in for the pipeline's pushed model with the same signature contract (names, dtypes, shapes).

Lets the `mtnlp predict` / `mtnlp serve` tests run without the pipeline: rule-based, not learned. The real model is
exercised by test_project_model.py through the `pipeline_run` fixture.
"""

from __future__ import annotations

from pathlib import Path

from mtnlp.model.tasks import SEMEVAL_RELATIONS

RELATION_LABELS = list(SEMEVAL_RELATIONS)
ORGS = ["Apple", "Samsung", "Google"]
LOCS = ["California", "Paris", "Berlin"]


def build(base: Path, version: int = 1) -> Path:
    import tensorflow as tf

    def tag_tokens(tokens):
        is_pad = tf.equal(tokens, "")
        is_punct = tf.strings.regex_full_match(tokens, r"[.,!?;:]")
        is_cap = tf.strings.regex_full_match(tokens, r"[A-Z].*")
        is_org = tf.reduce_any(tf.equal(tokens[..., None], tf.constant(ORGS)), axis=-1)
        is_loc = tf.reduce_any(tf.equal(tokens[..., None], tf.constant(LOCS)), axis=-1)
        pos = tf.where(is_punct, "PUNCT", tf.where(is_cap, "PROPN", "VERB"))
        ner = tf.where(is_org, "B-ORG", tf.where(is_loc, "B-LOC", "O"))
        pos = tf.where(is_pad, "", pos)
        ner = tf.where(is_pad, "", ner)
        length = tf.reduce_sum(tf.cast(tf.logical_not(is_pad), tf.int32), axis=1)
        negative = tf.reduce_any(tf.equal(tokens, "sued"), axis=1)
        p_pos = tf.where(negative, 0.1, 0.8)
        probs = tf.stack([1.0 - p_pos, p_pos], axis=1)
        label = tf.where(negative, "negative", "positive")
        return {
            "tokens": tokens,
            "length": length,
            "sentiment_label": label,
            "sentiment_probability": tf.reduce_max(probs, axis=1),
            "sentiment_probabilities": probs,
            "pos_tags": pos,
            "ner_tags": ner,
        }

    def tokenize(text):
        spaced = tf.strings.regex_replace(text, r"([.,!?;:])", r" \1")
        return tf.strings.split(spaced).to_tensor("")

    class Fake(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def analyze(self, text):
            return tag_tokens(tokenize(text))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
        def analyze_tokens(self, tokens):
            return tag_tokens(tokens)

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="text")]
            + [tf.TensorSpec([None], tf.int64, name=n) for n in ("e1_start", "e1_end", "e2_start", "e2_end")]
        )
        def relation(self, text, e1_start, e1_end, e2_start, e2_end):
            n = tf.shape(text)[0]
            idx = tf.where(e1_start < e2_start, 17, 18)  # Product-Producer(e1,e2) / (e2,e1)
            probs = tf.one_hot(idx, len(RELATION_LABELS), on_value=0.82, off_value=0.01)
            return {
                "relation_label": tf.gather(tf.constant(RELATION_LABELS), idx),
                "relation_probability": tf.fill([n], 0.82),
                "relation_probabilities": probs,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serving_tf_example(self, examples):
            text = tf.io.parse_example(examples, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
            out = tag_tokens(tokenize(text))
            return {"sentiment": out["sentiment_probabilities"]}

    m = Fake()
    path = base / str(version)
    analyze = m.analyze.get_concrete_function()
    tf.saved_model.save(
        m,
        str(path),
        signatures={
            "serving_default": analyze,
            "analyze": analyze,
            "analyze_tokens": m.analyze_tokens.get_concrete_function(),
            "relation": m.relation.get_concrete_function(),
            "serving_tf_example": m.serving_tf_example.get_concrete_function(),
        },
    )
    return path
