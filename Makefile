# Two commands do all the set-up: `make test` and `make demo`.
# Both create or reuse .venv/ (installed once with requirements/lock.txt; a
# stamp records that it is up to date with the set-up's inputs).
# `make test-oldest` builds .venv-oldest/ with the oldest tested stack
# (requirements/oldest.txt) and runs the whole suite there.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmdtm-installed
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.mmdtm-installed
SETUP_INPUTS := setup.py tools/setup_env.sh tools/build_mmcv.sh \
	$(filter-out requirements/lock.txt requirements/oldest.txt,$(wildcard requirements/*.txt))
PYTEST_ARGS ?=
# Tests marked `slow` (multi-process runs of tens of seconds each) run on CI
# (CI set, as there) or with SLOW=1; a plain local `make test` skips them.
ifneq ($(CI)$(SLOW),)
SLOW_ARGS :=
else
SLOW_ARGS := -m "not slow"
endif

.PHONY: test test-oldest demo env env-oldest clean-env

env: $(STAMP)
env-oldest: $(OLDEST_STAMP)

$(STAMP): $(SETUP_INPUTS) requirements/lock.txt
	LOCK=requirements/lock.txt bash tools/setup_env.sh $(VENV)
	touch $(STAMP)

$(OLDEST_STAMP): $(SETUP_INPUTS) requirements/oldest.txt
	LOCK=requirements/oldest.txt bash tools/setup_env.sh $(OLDEST_VENV)
	touch $(OLDEST_STAMP)

test: $(STAMP)
	$(PY) -m pytest tests mmdtm $(SLOW_ARGS) $(PYTEST_ARGS)

test-oldest: $(OLDEST_STAMP)
	MMDTM_LOCK=requirements/oldest.txt $(OLDEST_VENV)/bin/python -m pytest tests mmdtm $(SLOW_ARGS) $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py --work-dir work_dirs/demo

clean-env:
	rm -rf $(VENV) $(OLDEST_VENV)
