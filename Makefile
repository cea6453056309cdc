# Sleight: `make demo` (the main job) and `make test` set everything up on a fresh machine.
PY := .venv/bin/python

.PHONY: setup models demo test bench bench-kernels effects unit soak clean

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

# every attention effect at real sizes against plain SDPA and the official formulations (ARGS="--device cuda")
bench-kernels: setup
	@$(PY) scripts/bench_kernels.py $(ARGS)

effects: models
	@$(PY) scripts/effects.py

soak: models
	@$(PY) scripts/soak.py

clean:
	rm -rf output build/models
