"""Run in its own process, as one worker of a multi-worker training (TF_CONFIG from the environment): the Trainer's
``run_fn`` on a finished pipeline's Transform output; prints one JSON line with a digest of the trained weights.

Usage: python multi_worker_train.py TRANSFORM_GRAPH TRANSFORMED_EXAMPLES OUTPUT_DIR STEPS STRATEGY TASK...
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
from tfx.components.trainer.fn_args_utils import FnArgs  # noqa: E402

from mtnlp.pipelines import trainer_module as trainer  # noqa: E402
from mtnlp.pipelines.config import get_config  # noqa: E402
from mtnlp.pipelines.settings import apply_mapping  # noqa: E402

transform_graph, examples, output, steps, strategy, *tasks = sys.argv[1:]
config = apply_mapping(
    get_config("quick", tasks=tuple(tasks)),
    {"training": {"train_steps": int(steps), "eval_steps": 2, "strategy": strategy}},
)
trained = {}


def train_and_keep(*args, **kwargs):
    trained["result"] = result = train_model(*args, **kwargs)
    return result


train_model, trainer.train_model = trainer.train_model, train_and_keep
trainer.run_fn(
    FnArgs(
        train_files=[os.path.join(examples, "Split-train", "*")],
        eval_files=[os.path.join(examples, "Split-eval", "*")],
        transform_output=transform_graph,
        serving_model_dir=os.path.join(output, "model", "Format-Serving"),
        model_run_dir=os.path.join(output, "model_run"),
        train_steps=int(steps),
        eval_steps=2,
        custom_config=config.to_json_dict(),
        base_model=None,
    )
)
result = trained["result"]
digest = hashlib.sha256(b"".join(w.astype("float32").tobytes() for w in result.model.get_weights())).hexdigest()
print(
    json.dumps(
        {
            "digest": digest,
            "steps": result.steps,
            "seconds": result.seconds,
            "replicas": result.model.distribute_strategy.num_replicas_in_sync,
        }
    )
)
