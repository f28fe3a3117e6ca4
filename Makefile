# The two commands a fresh machine needs (see README):
#   make demo   set up .venv with the core stack and the demo's extras (minutes), then run the main job
#               (recipes/patchalign3d.py); it runs on the pure-PyTorch backends until `make accel` has run
#   make test   set up .venv with every extra and the compiled extensions, then ruff, the test suite with
#               doctests, and the strict docs build
# and one for users who want the compiled extensions without the test tools:
#   make accel  compile torch-scatter and torch-cluster (both at once, one per core) into .venv and pip's cache
PY := .venv/bin/python
# Every library package (pa3d_layers, pa3d_losses, pa3d_models, pa3d_data, pa3d_train, pa3d_cli, pa3d_app, ...)
PACKAGES := $(sort $(patsubst %/__init__.py,%,$(wildcard pa3d_*/__init__.py)))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup setup-demo accel test demo lint docs docs-serve bench clean

setup:
	@bash scripts/setup_env.sh test

setup-demo:
	@bash scripts/setup_env.sh demo

accel:
	@bash scripts/setup_env.sh accel

lint: setup
	$(PY) -m ruff check .

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest tests $(PACKAGES) --doctest-modules --durations=15 -n auto --dist loadscope
	@# no --quiet: it hides the warnings that --strict turns into a failure
	$(PY) -m mkdocs build --strict --site-dir .site

demo: setup-demo
	$(PY) recipes/patchalign3d.py $(ARGS)

docs: setup
	$(PY) -m mkdocs build --strict --site-dir .site

docs-serve: setup
	$(PY) -m mkdocs serve

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf .site .pytest_cache .hypothesis .ruff_cache
