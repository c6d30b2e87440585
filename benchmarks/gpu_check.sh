#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one call of the lent GPU machine (the `device` tool's `run`).
#
# Here, once:  bash benchmarks/gpu_wheels.sh          (the wheels that machine lacks, into .whl/)
# Then:        device run, carry [".whl"], timeout_s 600, command "bash benchmarks/gpu_check.sh"
#
# Steps, most important first, each under its own time cap and all under one deadline (GPU_CHECK_SECONDS,
# default 570 s, inside the tool's 600 s): install the wheels; compile gsplat's CUDA kernels (JIT, first
# use, sm_90 only); the CUDA tests (`pytest -m cuda`: gsplat against the CPU rasterizer, values and
# gradients); the render benchmark (semantic FPS at 640x480); the demo pipeline with `device: cuda`
# (splat and evaluate through gsplat); the real extract backend's throughput (random CLIP / SAM weights).
# $OUT gets two files, within the tool's eight: summary.txt and logs.tar.gz (every step's log, the environment and
# the CUDA demo's metrics, packed on exit); a step that fails or runs out of time is reported and the next one
# still runs. A second call on a fresh machine compiles again. Without a GPU
# (GPU_PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh, then PYTHON=<a venv's python> here) it rehearses the
# install and the imports, and stops with exit 5.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
LOGS=$(mktemp -d)  # packed into $OUT/logs.tar.gz on exit: the device tool brings back at most eight files
mkdir -p "$OUT"
trap 'tar czf "$OUT/logs.tar.gz" -C "$LOGS" . && rm -rf "$LOGS"' EXIT
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-570}))
SITE=/tmp/site  # where the carried wheels install
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$SITE" MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_EXTENSIONS_DIR=/tmp/torch_extensions
PYTHON=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME CAP_SECONDS COMMAND...: run under min(cap, time left), log to $LOGS/NAME.log, one summary line
    local name=$1 cap=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        echo "$name: skipped (no time left)" | tee -a "$SUMMARY"
        return 1
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    local t0=$(date +%s)
    timeout "$cap" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    local status="ok"
    [ "$rc" -eq 124 ] && status="timed out after ${cap} s"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && status="failed (exit $rc)"
    echo "$name: $status in $(($(date +%s) - t0)) s" | tee -a "$SUMMARY"
    tail -n 3 "$LOGS/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
    return "$rc"
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version | tail -n 2
    $PYTHON -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$LOGS/environment.log" 2>&1
tee -a "$SUMMARY" < "$LOGS/environment.log"

if ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash benchmarks/gpu_wheels.sh' here and carry .whl" | tee -a "$SUMMARY"
    exit 2
fi
step install 120 $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 3
step imports 60 $PYTHON -c "import econsg.cli, econsg.render.gsplat_backend, gsplat, zarr, pydantic, open_clip, segment_anything; print('imports ok')" || exit 4
if ! $PYTHON -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    # a rehearsal on a machine without a GPU: the install and the imports are what it can check
    echo "no CUDA device: the wheels install and econsg imports; the CUDA steps are left out" | tee -a "$SUMMARY"
    exit 5
fi
step compile_gsplat 330 $PYTHON -c "from gsplat.cuda._backend import _C; print('gsplat CUDA extension:', _C.__file__)"
step pytest_cuda 120 $PYTHON -m pytest -q -m cuda -p no:cacheprovider tests/
step render_benchmark 90 $PYTHON benchmarks/render.py --device cuda --repeats 5
DEMO=/tmp/gpu_demo  # the demo pipeline, stage by stage as dvc repro runs it, on CUDA, outside the checkout
SETS="--set device=cuda --set paths.data=$DEMO/data --set paths.artifacts=$DEMO/artifacts --set paths.metrics=$DEMO/metrics \
--set paths.plots=$DEMO/plots --set paths.checkpoints=$DEMO/checkpoints"
step demo_cuda 150 bash -c "set -e; for stage in synth ingest extract crr fuse autoencode splat evaluate; do
    $PYTHON -m econsg run \$stage $SETS; done; cp $DEMO/metrics/*.json $LOGS/ && grep -hE '\"(miou|teacher_miou|psnr|render_fps|query_latency_ms|train_seconds)\"' $DEMO/metrics/*.json"
step extract_benchmark 120 $PYTHON benchmarks/extract.py --device cuda --views 16
echo "total $(($(date +%s) - START)) s" | tee -a "$SUMMARY"
