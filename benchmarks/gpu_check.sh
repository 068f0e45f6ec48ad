#!/usr/bin/env bash
# The GPU check in one call (docs/gpu.md): every entry point on tiny models over NCCL, then GLM-2B/10B
# throughput, MFU and memory; writes $OUT/gpu_check.json (or --out DIR).
#
#   benchmarks/gpu_check.sh            # on the GPU machine (its python3; wheels from .gpu-wheels/)
#   benchmarks/gpu_check.sh --cpu      # here, on gloo, with .venv (the same smoke, a small GLM shape)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --cpu "* ]]; then
    PY=.venv/bin/python
    [[ -x $PY ]] || make venv >/dev/null
    export OMP_NUM_THREADS=1
else
    PY=python3
    # The GPU image lacks deepspeed, datasets, seqeval and some of their dependencies; `make
    # gpu-wheels` puts them in .gpu-wheels/ (carried with the call), installed into a scratch folder.
    if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .gpu-wheels/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export OMP_NUM_THREADS=2 NCCL_DEBUG=WARN
fi
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec $PY benchmarks/gpu_check.py "$@"
