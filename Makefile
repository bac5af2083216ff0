# Two commands: `make demo` runs the main job on the shipped sample, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv venv-full bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.base-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# Full test environment: Spark, the ML stack (CPU torch), LiteLLM and pytest.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[spark,ml,litellm,test]'
	touch $(VENV)/.base-installed $@

venv: $(VENV)/.base-installed
venv-full: $(STAMP)

demo: venv
	$(BIN)/distillguard demo --out demo-out

test: venv-full
	$(BIN)/python -m pytest -q

bench: venv-full
	$(BIN)/distillguard bench detect --preset standard --out bench-out/detect

clean:
	rm -rf $(VENV) demo-out bench-out
