#!/usr/bin/env bash
# Every GPU figure of issue 11 in one call of the device machine (budget: <= 10 min of its time).
#
# Here (once; needs PyPI):   bash benchmarks/gpu_session.sh --fetch-wheels     # -> .gpu_wheels/ (~60 MiB)
# There (device tool):       run(command="bash benchmarks/gpu_session.sh", carry=[".gpu_wheels"], timeout_s=600)
# Quick dry run on the CPU:  DEVICE=cpu QUICK=1 bash benchmarks/gpu_session.sh
# Tiny check of the script:  DEVICE=cpu TINY=1 OUT=/tmp/gpu_tiny bash benchmarks/gpu_session.sh
#   (every step at a toy size, no figure: 32x32 cameras, our side only, every arm in one process
#   (tests/test_benchmarks.py runs learner_update.py's lerobot arm and fresh processes on their own), the tests'
#   tiny SmolVLA; ~20 s on 2 cores; the test suite runs it)
#
# Exit status: the number of steps that failed or ran out of time (0: every JSON was written).
#
# Writes to $OUT (default ./gpu_out): learner_state.json (state learner vs lerobot SAC, interleaved),
# learner_2cam.json (two 128x128 cameras, frozen ResNet-18 trunk, vs lerobot with the same trunk frozen),
# smolvla.json (SmolVLA-size embedding + action latency, p50/p99), env.txt. The device machine has torch,
# lightning, transformers 5 and h5py but not lerobot (which needs transformers < 5) nor omegaconf: those
# travel as cp312 wheels (the set ../shared/GPU.md lists) and are installed with --no-deps --target, first on
# PYTHONPATH. Each step has its own time limit so one slow step cannot eat the others' figures.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WHEELS=${WHEELS:-.gpu_wheels}
if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p "$WHEELS"
  pip download --dest "$WHEELS" --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    lerobot==0.4.4 transformers==4.57.6 huggingface-hub==0.35.3 tokenizers==0.22.1 draccus==0.10.0 \
    mergedeep pyyaml-include toml termcolor jsonlines omegaconf==2.3.0 diffusers==0.35.2 deepdiff==8.6.1 orderly-set \
    datasets==4.8.5 dill==0.4.0 multiprocess==0.70.18 av==15.1.0 pyserial
  pip wheel --wheel-dir "$WHEELS" --no-deps antlr4-python3-runtime==4.9.3  # pure Python, published as sdist only
  du -sh "$WHEELS"
  exit 0
fi
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [[ -d "$WHEELS" ]] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python -m pip install --quiet --no-deps --target .gpu_site "$WHEELS"/*.whl && export PYTHONPATH="$PWD/.gpu_site:${PYTHONPATH:-}"
fi
export HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; python -c "import torch; print(torch.__version__)"; } > "$OUT/env.txt"
IMG=128
if [[ -n "${TINY:-}" ]]; then
  N=(--updates 2 --warmup 1 --rounds 1 --batch-size 12 --gemm-size 128 --skip-lerobot --same-process)
  NI=(--updates 1 --warmup 1 --rounds 1 --batch-size 6 --gemm-size 128 --skip-lerobot --same-process); IMG=32
  SI=(--tiny --iters 2 --warmup 1 --batch 2 --image-size 64)
elif [[ -n "${QUICK:-}" ]]; then N=(--updates 3 --warmup 2 --rounds 1); NI=(--updates 2 --warmup 1 --rounds 1 --batch-size 12); SI=(--iters 3 --warmup 1 --batch 2 --image-size 64)
else N=(--updates 500 --warmup 50 --rounds 2); NI=(--updates 150 --warmup 20 --rounds 2); SI=(--iters 200 --warmup 20 --batch 32)
fi
failed=0
step() {
  local limit=$1; shift; echo "== $*"
  timeout "$limit" "$@" 2>&1 | tail -25
  local rc=${PIPESTATUS[0]}
  if (( rc == 124 )); then echo "== FAILED: over its ${limit} s"; elif (( rc )); then echo "== FAILED: exit $rc"; fi
  if (( rc )); then failed=$((failed + 1)); fi
}
step 220 python benchmarks/learner_update.py --device "$DEVICE" "${N[@]}" --json "$OUT/learner_state.json"
step 220 python benchmarks/learner_update.py --device "$DEVICE" --cameras 2 --image-size "$IMG" --image-encoder resnet18 \
  --freeze-encoder "${NI[@]}" --json "$OUT/learner_2cam.json"
step 120 python benchmarks/smolvla_embedding.py --device "$DEVICE" "${SI[@]}" --json-out "$OUT/smolvla.json"
ls -la "$OUT"
exit "$failed"
