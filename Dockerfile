# syntax=docker/dockerfile:1
#
# The pipeline image: every Kubeflow pod of the pipeline runs it, and so can the workers of a distributed
# Beam runner (Dataflow --sdk_container_image, Flink/Spark worker pools). Build from the repository root:
#
#   docker build -t REGISTRY/mtnlp-pipeline:0.1.0 .
#   docker build --build-arg GPU=1 -t REGISTRY/mtnlp-pipeline:0.1.0-gpu .     # GPU variant
#
# See docs/kubeflow.md. Versions below must equal requirements.lock (tests/test_kubeflow.py checks them).

# tfx in requirements.lock; the official image ships Python 3.10 and TFX's own Beam/TF stack.
ARG TFX_VERSION=1.16.0
# apache-beam in requirements.lock: the Beam SDK harness boot program must match the installed SDK.
ARG BEAM_VERSION=2.74.0
ARG PYTHON_VERSION=3.10

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam-sdk

FROM tensorflow/tfx:${TFX_VERSION}

# 1 installs TensorFlow's CUDA libraries (tensorflow[and-cuda]) for the Trainer's GPUs.
ARG GPU=0

LABEL org.opencontainers.image.title="mtnlp-pipeline" \
      org.opencontainers.image.description="mtnlp TFX pipeline components (KubeflowV2DagRunner image)"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The TFX image's ENTRYPOINT is Beam's SDK harness boot program (/opt/apache/beam/boot), so the image can
# serve as a Beam worker container. The lock upgrades apache-beam, so the boot program is replaced by the
# one of the same Beam release. Kubeflow pods do not use the ENTRYPOINT: the compiled spec sets the command
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor).
COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam

# The project lives here; pipelines/kubeflow_runner.py names files in it (IMAGE_PROJECT_DIR), e.g. the schema.
WORKDIR /opt/mtnlp

# The stack first, in its own layer, so that code changes do not reinstall it: the project's dependencies
# and its kubeflow extra as pyproject.toml declares them, at the versions of requirements.lock (the tests
# ran with exactly these). Test tools and the study's plotting stay out of the image.
COPY requirements.lock pyproject.toml ./
RUN python -c "import pip._vendor.tomli as toml; project = toml.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(project['dependencies'] + project['optional-dependencies']['kubeflow']))" > /tmp/requirements.txt && \
    python -m pip install -c requirements.lock -r /tmp/requirements.txt

# GPU variant: the CUDA/cuDNN wheels TensorFlow was built against (pinned by its and-cuda extra), and their
# library folders registered with the dynamic loader, because TF 2.16 does not always find pip-installed
# CUDA libraries on its own (tensorflow/tensorflow#63362). The node supplies the driver.
RUN if [ "$GPU" = "1" ]; then \
      TF_VERSION="$(python -c 'import importlib.metadata as m; print(m.version("tensorflow"))')" && \
      python -m pip install -c requirements.lock "tensorflow[and-cuda]==${TF_VERSION}" && \
      python -c 'import nvidia, os; [print(os.path.join(p, d, "lib")) for p in nvidia.__path__ for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))]' \
        > /etc/ld.so.conf.d/zz-tensorflow-pip-cuda.conf && \
      ldconfig; \
    fi

# The project itself, editable so that the source tree in /opt/mtnlp is the imported package: import paths
# such as mtnlp.model.preprocessing.preprocessing_fn and mtnlp.pipelines.trainer_module.run_fn resolve from any working directory.
COPY . ./
RUN python -m pip install -c requirements.lock --no-deps -e . && \
    python -c "import mtnlp.model.preprocessing, mtnlp.pipelines.trainer_module, mtnlp.components.jsonl_example_gen, mtnlp.components.versioned_pusher, mtnlp.pipelines.pipeline; \
from mtnlp.pipelines.schema import SCHEMA_PATH; assert SCHEMA_PATH.startswith('/opt/mtnlp/'), SCHEMA_PATH; \
import tfx, apache_beam, tensorflow as tf; print('tfx', tfx.__version__, 'beam', apache_beam.__version__, 'tf', tf.__version__)"
