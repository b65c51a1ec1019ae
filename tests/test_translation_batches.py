"""A training batch without any translation example must train, not crash, under the 2-replica CPU
MirroredStrategy (an empty gather/scatter in the decoder used to segfault the process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_two_replica_step_on_a_batch_without_translation_targets():
    code = textwrap.dedent("""
        from mtnlp.model import devices
        devices.configure_cpu_replicas(2)
        import numpy as np, keras, tensorflow as tf
        from mtnlp.model.network import build_model, compile_for_heads
        from mtnlp.model.tasks import all_heads
        heads = all_heads()
        assert "translation" in {h.name for h in heads}
        strategy = devices.make_strategy(2)
        with strategy.scope():
            model = build_model(heads, 50, 16, 16, 1, 2, 32, 0.0, target_vocabulary_sizes={"translation": 30},
                                max_target_length=6)
            compile_for_heads(model, heads, keras.optimizers.SGD(0.1))
        x = {i.name: np.zeros((8, 6 if i.name == "translation_label" else 5, *i.shape[2:]), "int64")
             for i in model.inputs}  # char_codes: one more axis, the characters
        x["token_ids"] = np.random.default_rng(0).integers(1, 50, (8, 5))
        outputs = model(x)
        y = {h.name: np.zeros(outputs[h.name].shape[:-1], "int64") for h in heads}
        w = {h.name: np.full(outputs[h.name].shape[:-1], 0.0 if h.name == "translation" else 1.0, "float32")
             for h in heads}
        history = model.fit(tf.data.Dataset.from_tensors((x, y, w)).repeat(), steps_per_epoch=2, verbose=0)
        print("translation_loss", history.history["translation_loss"][-1])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "translation_loss 0.0" in result.stdout
