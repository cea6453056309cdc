# Sleight: `make demo` (the main job) and `make test` set everything up on a fresh machine.
PY := .venv/bin/python

.PHONY: setup models demo test bench effects unit soak clean

setup:
	@bash scripts/setup.sh

models: setup
	@$(PY) scripts/tiny_models.py

demo: models
	@$(PY) scripts/demo.py

test: models
	@$(PY) -m pytest tests

unit: setup
	@$(PY) -m pytest tests/unit

bench: models
	@$(PY) scripts/bench.py

effects: models
	@$(PY) scripts/effects.py

soak: models
	@$(PY) scripts/soak.py

clean:
	rm -rf output build/models
