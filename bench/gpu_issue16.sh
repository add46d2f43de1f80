#!/usr/bin/env bash
# Issue 16 item 3's GPU figures in one device call; every log comes back in OUTDIR.
#
#   bash bench/gpu_issue16.sh OUTDIR [DEVICE]
#
# 1. bench/diffusers_throughput.py, sd15 at 512 px (batch 8) and sd3 at 1024 px (batch 4), 28 steps: eager fp16
#    and bf16, compiled (default mode, channels-last, max-autotune with CUDA graphs), images/s against eager fp16
#    in the same run, the peak memory and the batch size "auto" would choose.
# 2. bench/mmdit_forward.py, the in-house MM-DiT against diffusers' SD3 at the SD3-medium size, compiled whole
#    with CUDA graphs (reduce-overhead) and with max-autotune (the issue's goal: >= 1.1x in every mode).
# Each step has its own time limit (STEP_SECONDS, default 130), so one slow compile costs its own rows only; a
# step that ran out says "timed out" in its log. Worker throughput at GPU speed (bench/task_overhead.py
# --device cuda) needs Django, Celery and the site's packages on the card's machine, which these calls do not have.
#
# The device command (bash bench/gpu_carry.sh first, which puts the diffusers wheel in .whl; carry .whl):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 bash bench/gpu_issue16.sh $OUT cuda   (about 9 minutes of the card)
# DEVICE=cpu is a dry run of the same script at the benches' tiny sizes.
set -uo pipefail
OUTDIR=${1:?output folder}
DEVICE=${2:-cuda}
PY=${PY:-python3}
LIMIT=${STEP_SECONDS:-130}
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
if [ "$DEVICE" = cpu ]; then
    SIZE="--tiny --steps 2 --repeats 1" MMDIT="--tiny"
    SD15_MODES=fp32,fp32+compile SD3_MODES=fp32,bf16
else
    SIZE="--steps 28 --repeats 2" MMDIT=""
    SD15_MODES=fp16,bf16,fp16+compile,fp16+compile+cl,fp16+compile=max-autotune
    SD3_MODES=fp16,bf16,fp16+compile,fp16+compile=max-autotune
fi
step() {  # name, command...
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUTDIR/summary.log"
    timeout "$LIMIT" "$@" >"$OUTDIR/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "timed out after $LIMIT s" >>"$OUTDIR/$name.log"
    grep -E '^\||^  sd|^ +[0-9]+ +(in-house|diffusers)|timed out' "$OUTDIR/$name.log" | tee -a "$OUTDIR/summary.log"
    echo "rc=$rc" | tee -a "$OUTDIR/summary.log"
}
nvidia-smi --query-gpu=name,memory.total --format=csv >"$OUTDIR/gpu.txt" 2>&1 || true
# shellcheck disable=SC2086
step sd15 $PY bench/diffusers_throughput.py --device "$DEVICE" --pipelines sd15 --batch 8 $SIZE --modes "$SD15_MODES"
# shellcheck disable=SC2086
step sd3 $PY bench/diffusers_throughput.py --device "$DEVICE" --pipelines sd3 --batch 4 $SIZE --modes "$SD3_MODES"
# shellcheck disable=SC2086
step mmdit_reduce_overhead $PY bench/mmdit_forward.py --device "$DEVICE" $MMDIT --compile-scope full \
    --compile-mode reduce-overhead
# shellcheck disable=SC2086
step mmdit_max_autotune $PY bench/mmdit_forward.py --device "$DEVICE" $MMDIT --compile-scope full \
    --compile-mode max-autotune
