# The two commands a fresh machine needs (see README):
#   make demo   set up .venv if needed, then run the main job (recipes/patchalign3d.py, embedded default)
#   make test   set up .venv if needed, then ruff, the test suite with doctests, and the strict docs build
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup test demo lint docs docs-serve bench clean

setup:
	@bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest tests pa3d_layers pa3d_losses pa3d_models --doctest-modules
	$(PY) -m mkdocs build --strict --quiet --site-dir .site

demo: setup
	$(PY) recipes/patchalign3d.py $(ARGS)

docs: setup
	$(PY) -m mkdocs build --strict --site-dir .site

docs-serve: setup
	$(PY) -m mkdocs serve

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf .site .pytest_cache .hypothesis .ruff_cache
