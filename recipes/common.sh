# Shared by the paper recipes (sourced, not run). Settings come from the environment:
#   DATA     COCO folder (annotations/instances_{train,val}2017.json + train2017/ val2017/)
#   SEED     the seed MobileNetV2 (a .pth/.safetensors, or torchvision:IMAGENET1K_V1)
#   OUT      output folder (default: runs/<recipe>)
#   NPROC    processes (GPUs) per node for torchrun (default 8)
#   TORCHRUN_ARGS  extra torchrun arguments, e.g. multi-node rendezvous:
#            "--nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint host0:29400"
#   STEPS    run only the first STEPS steps of the recipe (default: all)
#   TINY=1   smoke-test mode: synthetic data, a briefly pre-trained width-0.35 seed (both
#            made under OUT unless DATA/SEED are set), one CPU process, tiny images and
#            one epoch on 8 images (what the test suite runs)
set -euo pipefail

recipe=$(basename "$0" .sh)
OUT=${OUT:-runs/$recipe}
NPROC=${NPROC:-8}
TORCHRUN_ARGS=${TORCHRUN_ARGS:-}
STEPS=${STEPS:-99}
TINY=${TINY:-0}
fnacli=${FNACLI:-fnacli}
mkdir -p "$OUT"

step_no=0
step() {  # step "description": announce the next step, or stop when STEPS are done
  step_no=$((step_no + 1))
  if [ "$step_no" -gt "$STEPS" ]; then
    echo "$recipe: stopping after $STEPS step(s) (STEPS)" >&2
    exit 0
  fi
  printf '\n== %s %d: %s\n' "$recipe" "$step_no" "$*" >&2
}

# Multi-process commands go through torchrun (DDP; NCCL on GPUs, gloo on CPU).
launch() {
  if [ "$NPROC" -gt 1 ]; then
    # shellcheck disable=SC2086
    torchrun --nproc-per-node "$NPROC" $TORCHRUN_ARGS -m fnacli "$@"
  else
    $fnacli "$@"
  fi
}

# A long step resumes from its training state when one is there.
resume_flag() { if [ -f "$1.ckpt" ]; then echo --resume; else echo --force; fi; }

# In TINY mode these shrink the commands to a smoke test; they are empty for the real recipe.
TINY_ARGS=()         # any training run (finetune, search)
TINY_DIFF_ARGS=()    # the differentiable search
TINY_EVO_ARGS=()     # the one-shot evolutionary/random search
if [ "$TINY" = 1 ]; then
  NPROC=1
  DATA=${DATA:-$OUT/data}
  SEED=${SEED:-$OUT/seed.pth}
  [ -f "$DATA/annotations/instances_val.json" ] ||
    $fnacli data synth "$DATA" --train 8 --val 4 --size 96 --seed 0 --force
  [ -f "$SEED" ] || $fnacli pretrain-seed "$SEED" --width 0.35 --size 32 --max-steps 2
  TINY_ARGS=(--size 96 --batch-size 4 --workers 0 --epochs 1 --device cpu)
  TINY_DIFF_ARGS=(--warmup-epochs 0)
  TINY_EVO_ARGS=(--population 2 --parents 1 --generations 1 --calib-images 4 --calib-batch 4)
fi
: "${DATA:?set DATA to the COCO folder}"
: "${SEED:=torchvision:IMAGENET1K_V1}"

# The tail every recipe shares once "$OUT/arch.json" is derived: remap the seed onto it,
# finetune, evaluate.   finish TASK MADDS_INPUT
finish() {
  $fnacli remap "$SEED" --spec "$OUT/arch.json" --force -o "$OUT/target.safetensors"
  step "finetune $1"
  launch finetune "$OUT/target.safetensors" --task "$1" --data "$DATA" \
    -o "$OUT/final.safetensors" "${TINY_ARGS[@]}" $(resume_flag "$OUT/final.safetensors")
  step "evaluate with COCOeval"
  $fnacli eval "$OUT/final.safetensors" --data "$DATA" --json > "$OUT/metrics.json"
  $fnacli madds "$OUT/arch.json" --task "$1" --size "$2"
}
