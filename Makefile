# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PY      := .venv/bin/python
# torch first and pinned: an unpinned torch lets pip pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
RANKS_ENV := OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
DS_LOCAL  := --hostfile hostfile.example --no_ssh_check --master_addr 127.0.0.1

.PHONY: venv sysdeps assets demo test test-fast bench bench-sweep gpu-wheels gpu-check-cpu clean
venv: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	# mpi4py (the mpirun tests and multi-node MPI discovery) only where an MPI compiler exists
	if command -v mpicc >/dev/null; then $(PY) -m pip install -q -e '.[test,mpi]'; fi
	touch $@

assets: venv
	$(PY) -m deepprompt fetch-assets

# The embedded default: P-Tuning v2 on all-MiniLM-L6-v2 for WNUT-16 NER, 2 CPU ranks under ZeRO-3.
demo: venv assets
	$(RANKS_ENV) .venv/bin/deepspeed $(DS_LOCAL) launcher/train.py --ds_config ds_configs/zero3.json $(ARGS)

# System packages the tests use: Open MPI (mpirun tests, mpi4py) via apt-get, as root, when missing.
sysdeps:
	@if ! command -v mpirun >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Open MPI (apt-get)"; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null; fi

test: sysdeps venv
	$(RANKS_ENV) $(PY) -m pytest -q $(ARGS)

test-fast: venv
	$(RANKS_ENV) $(PY) -m pytest -q -m "not multirank" $(ARGS)

# The benchmark tables of docs/benchmarks.md (long: hours on 2 CPU cores; runs are reused when present).
bench: venv assets
	$(PY) -m pip install -q -e '.[test,bench]'
	$(RANKS_ENV) $(PY) benchmarks/speed.py
	$(RANKS_ENV) $(PY) benchmarks/memory.py
	$(RANKS_ENV) $(PY) benchmarks/quality.py --name wnut16
	$(RANKS_ENV) $(PY) benchmarks/ablation.py --name wnut16
	$(RANKS_ENV) $(PY) benchmarks/mpt2.py
	$(RANKS_ENV) $(PY) benchmarks/mpt2.py --target squad

# The sweeps of docs/sweep.md's measurements (WNUT-16 FT vs P-Tuning v2 with folds, MultiEmo, QA): many hours on 2 cores.
bench-sweep: venv assets
	$(PY) -m pip install -q -e '.[test,bench,sweep]'
	benchmarks/sweep_wnut16.sh $(ARGS)

# What the GPU image lacks (docs/gpu.md), as Python 3.12 manylinux wheels in the git-ignored .gpu-wheels/
# (a device call carries it; benchmarks/gpu_check.sh installs it there). Versions: this venv's.
GPU_WHEELS := deepspeed hjson pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess seqeval
GPU_PLATFORM := --python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any
gpu-wheels: venv
	rm -rf .gpu-wheels && mkdir -p .gpu-wheels
	pins="$$($(PY) -c 'import sys; from importlib.metadata import version as v; print(" ".join(f"{n}=={v(n)}" for n in sys.argv[1:]))' $(GPU_WHEELS))"; \
	for pin in $$pins; do \
	    $(PY) -m pip download -q --no-deps $(GPU_PLATFORM) -d .gpu-wheels "$$pin" 2>/dev/null \
	    || $(PY) -m pip wheel -q --no-deps --no-build-isolation -w .gpu-wheels "$$pin" || exit 1; \
	done
	@ls .gpu-wheels; du -sh .gpu-wheels

# The GPU check's smoke, here on gloo (docs/gpu.md): everything up to the device call.
gpu-check-cpu: venv
	benchmarks/gpu_check.sh --cpu --out runs/gpu_check_cpu

clean:
	rm -rf runs .pytest_cache
