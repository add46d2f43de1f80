#!/usr/bin/env bash
# The demo models that need a GPU, trained side by side on one card; their checkpoints come back in OUTDIR.
#
#   bash bench/gpu_demo_training.sh MINUTES OUTDIR [DEVICE]
#
# Three runs share the card (each is too small to fill it alone):
#   mmdit-words-s   the in-house MM-DiT at width 128 with 2x2 patches (256 image tokens), every prompt kind
#   mmdit-words-l   the same at width 192, 6 heads
#   unet-s2d2       the UNet baseline with 2x2 space-to-depth (the committed recipe, a finer grid)
# The final checkpoints are packed into OUTDIR first (MM-DiT weights exported to fp16, files split under 16 MB),
# then, if REPORT_SECONDS > 0, bench/demo_model_report.py scores every checkpoint and snapshot on the held-out
# prompts (each report stopped after REPORT_SECONDS), and the logs (and reports) are packed into OUTDIR/results.tar.
# The reports are off by default: the checker scores images on one CPU core, so a report of 964 images needs more
# than the card's spare minutes (90 s was not enough on the H200, 2026-12-04); score the checkpoints that come back
# on any machine instead (docs/demo-model.md, "On a GPU").
# DEVICE=cpu with MINUTES=0.3 is a dry run of the whole script on a CPU (tiny widths, a few steps).
# Knobs (environment): MMDIT (which MM-DiT runs, default both), SNAP (snapshot every N steps), UNET_STEPS,
# REPORT_SECONDS, RUNS (scratch folder), PY (python).
#
# The device command used (the repo's checkout travels; `bash bench/gpu_carry.sh` makes the fp16 MiniLM copy in
# .gpu and the diffusers wheels in .whl, carried; `bash bench/gpu_carry.sh empty` keeps the committed
# checkpoints from travelling, `... restore` brings them back; see docs/demo-model.md "On a GPU"):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD HF_HUB_OFFLINE=1 bash bench/gpu_demo_training.sh 7 $OUT cuda   (about 8 minutes of the card)
set -uo pipefail
MINUTES=${1:?minutes of training}
OUTDIR=${2:?output folder}
DEVICE=${3:-cuda}
RUNS=${RUNS:-/tmp/demo-runs}
PY=${PY:-python3}
LOGS=$OUTDIR/logs  # packed into results.tar at the end (what comes back is counted in files)
mkdir -p "$LOGS" "$RUNS"
rm -rf "${RUNS:?}"/*

if [ "$DEVICE" = cpu ]; then  # dry run: same commands, toy sizes
    SIZE_S="--width 32 --depth 2 --heads 2" SIZE_L="--width 48 --depth 2 --heads 2" BATCH=16 SNAP=20 WORKERS=1
    UNET="--widths 32,64 --batch-size 8 --steps 30" SEEDS=1 EVAL_BATCH=512 EVAL_STEPS=2 CALIB=""
else
    # the --minutes plan is timed over steps 300-450 (still in the 500-step warm-up, whose learning rates do not
    # depend on the plan): steps 50-150 ran about 20% slower than the rest, the data workers and the other runs
    # still starting, and the 7-minute runs planned too few steps and ended after 5.6-5.9 minutes (2026-12-04)
    CALIB="--calibration-start 300 --calibration-steps 150"
    SIZE_S="--width 128 --depth 6 --heads 4" SIZE_L="--width 192 --depth 6 --heads 6" BATCH=256 SNAP=${SNAP:-2500}
    WORKERS=5 UNET="--batch-size 64 --steps ${UNET_STEPS:-5000}" SEEDS=2 EVAL_BATCH=512 EVAL_STEPS=28
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null

mmdit() {  # name, size flags
    local name=$1
    shift
    # shellcheck disable=SC2086
    $PY -m generation.mmdit.train --device "$DEVICE" --out "$RUNS/$name" --minutes "$MINUTES" --batch-size $BATCH \
        --patch 2 "$@" --kinds shape=1,position=1,word=1 --lr 2e-3 --warmup-steps 500 --snapshot-every $SNAP \
        --threads 2 --data-workers $WORKERS --log-every 250 --seed 0 $CALIB >"$LOGS/$name.log" 2>&1
}
MMDIT=${MMDIT:-mmdit-words-s mmdit-words-l}  # which of the two MM-DiT runs to train
# shellcheck disable=SC2086
case " $MMDIT " in *" mmdit-words-s "*) mmdit mmdit-words-s $SIZE_S & ;; esac
# shellcheck disable=SC2086
case " $MMDIT " in *" mmdit-words-l "*) mmdit mmdit-words-l $SIZE_L & ;; esac
# shellcheck disable=SC2086
timeout "$($PY -c "print(int($MINUTES * 60 + 30))")" $PY -m generation.unet.train --device "$DEVICE" --out "$RUNS/unet-s2d2" \
    $UNET --lr 2e-3 --warmup-steps 50 --threads 2 --input-skip --guidance-scale 1 --loss-weighting snr+1 \
    --max-loss-weight 100 --space-to-depth 2 --seed 0 >"$LOGS/unet-s2d2.log" 2>&1 &

# fail fast: a run that died in its first minute leaves its log and stops the script
sleep "$($PY -c "print(5 if $MINUTES < 2 else 60)")"
for log in $MMDIT unet-s2d2; do
    if grep -q Traceback "$LOGS/$log.log"; then
        echo "== $log failed"; tail -30 "$LOGS/$log.log"; kill $(jobs -p) 2>/dev/null; exit 1
    fi
done
wait
for log in $MMDIT unet-s2d2; do echo "== $log"; grep -E "planning|saved|steps/s" "$LOGS/$log.log" | tail -3; done

# the checkpoints first: a command stopped at its time limit still brings back what is under OUTDIR
mkdir -p "$RUNS/export"
for name in $MMDIT; do
    $PY -m generation.mmdit.train --export "$RUNS/$name" --out "$RUNS/export/$name" >/dev/null
done
cp -r "$RUNS/unet-s2d2" "$RUNS/export/"
(cd "$RUNS/export" && for d in */; do tar cf "$OUTDIR/${d%/}.tar" "$d"; done)
for t in "$OUTDIR"/*.tar; do  # a file that comes back from the device machine is at most 16 MiB
    if [ "$(stat -c %s "$t")" -gt 16000000 ]; then split -b 15000000 "$t" "$t.part" && rm "$t"; fi
done

REPORT_SECONDS=${REPORT_SECONDS:-0}
report() {  # name, checkpoints... (the report's own flags come from the caller)
    local name=$1
    shift
    timeout "$REPORT_SECONDS" $PY bench/demo_model_report.py "$@" --device "$DEVICE" --batch-size $EVAL_BATCH \
        --steps $EVAL_STEPS --json "$LOGS/report-$name.json" >"$LOGS/report-$name.log" 2>&1
}
if [ "$REPORT_SECONDS" -gt 0 ]; then
    for name in $MMDIT; do  # the final checkpoint first, then the snapshots
        report "$name" "$RUNS/$name" "$RUNS/$name"/step-* --kinds shape,position,word --seeds $SEEDS &
    done
    report unet-s2d2 "$RUNS"/unet-s2d2 --kinds shape --seeds 16 --guidance 1 &
    wait
    cat "$LOGS"/report-*.log
fi
(cd "$OUTDIR" && tar cf results.tar logs && rm -r logs)
ls -la "$OUTDIR"
