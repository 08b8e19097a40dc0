# Two commands do all the set-up: `make test` and `make demo`.
# Both create or reuse .venv/ (installed once; a stamp records which
# requirement files it was installed from).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmdtm-installed
ENV_INPUTS := setup.py tools/setup_env.sh tools/build_mmcv.sh $(wildcard requirements/*.txt)
PYTEST_ARGS ?=

.PHONY: test demo env clean-env

env: $(STAMP)

$(STAMP): $(ENV_INPUTS)
	bash tools/setup_env.sh $(VENV)
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests mmdtm $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py --work-dir work_dirs/demo

clean-env:
	rm -rf $(VENV)
