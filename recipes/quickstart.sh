#!/usr/bin/env bash
# The quickstart: FNA's whole pipeline on the built-in synthetic data, on a CPU, in minutes.
#
#   synthetic data -> seed MobileNetV2 (pre-trained briefly on synthetic shapes, standing in
#   for ImageNet) -> expand -> search -> derive | remap -> finetune -> eval, plus the seed's
#   own architecture finetuned the same way, and a summary table of both.
#
# Re-runnable: finished steps are skipped, interrupted search/finetune runs resume.
# Expected cost: about 6 minutes on an idle 2-core CPU after installation (the paper
# settings are in the other recipes). FNA's arch optimiser (Adam 3e-4) is tuned for COCO-length
# searches; this short search uses --arch-lr 0.05 and an α/β step after every weight step.
#
# Environment: FNACLI_DEMO_DIR (default ./demo), SEED_SECONDS (seed pre-training budget, 60),
# FNACLI (the fnacli command, default `fnacli`), TINY=1 (a smoke test of every step in well
# under a minute: 24 images at 96x96, one epoch each; the test suite runs it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${FNACLI_DEMO_DIR:-demo}
fnacli=${FNACLI:-fnacli}
space="$here/spaces/fna-mbv2-0.5-demo.json"  # FNA's op space on a width-0.5 MobileNetV2
if [ "${TINY:-0}" = 1 ]; then
  seed_args=(--seconds "${SEED_SECONDS:-2}" --size 32 --max-steps 5)
  size=96
  data_args=(--train 16 --val 8)
  search_run=(--epochs 1 --warmup-epochs 0 --batch-size 4 --workers 0)
  finetune_run=(--epochs 1 --batch-size 4 --warmup-iters 1 --workers 0)
else
  seed_args=(--seconds "${SEED_SECONDS:-60}")
  size=128
  data_args=(--train 192 --val 48)
  search_run=(--epochs 3 --warmup-epochs 1 --batch-size 16 --workers 1)
  finetune_run=(--epochs 4 --batch-size 16 --warmup-iters 20 --workers 1)
fi
mkdir -p "$dir"
cd "$dir"

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# A long step resumes from its training state if one is there, else starts afresh.
resume_flag() { if [ -f "$1.ckpt" ]; then echo --resume; else echo --force; fi; }

say "1/8 synthetic COCO-format data (data/)"
[ -f data/annotations/instances_val.json ] ||
  $fnacli data synth data "${data_args[@]}" --size $size --seed 0

say "2/8 seed: torchvision MobileNetV2-0.5 pre-trained briefly on synthetic shapes (seed.pth)"
[ -f seed.pth ] || $fnacli pretrain-seed seed.pth --width 0.5 "${seed_args[@]}"

say "3/8 expand the seed into FNA's super network (super.safetensors)"
[ -f super.safetensors ] || $fnacli expand seed.pth --space "$space" -o super.safetensors

say "4/8 differentiable search on SSDLite under a MAdds-regularised loss (searched.safetensors)"
[ -f searched.safetensors ] && [ ! -f searched.safetensors.ckpt ] ||
  $fnacli search super.safetensors --task ssdlite --data data -o searched.safetensors \
    --size $size "${search_run[@]}" --seed 0 \
    --arch-every 1 --arch-lr 0.05 \
    $(resume_flag searched.safetensors)

say "5/8 derive the architecture and remap the seed onto it (target.safetensors)"
if [ ! -f target.safetensors ]; then
  $fnacli derive searched.safetensors --show --force -o arch.json
  $fnacli derive searched.safetensors | $fnacli remap seed.pth --spec - -o target.safetensors
fi
# the seed's own architecture, remapped the same way, is the baseline
[ -f seed-arch.safetensors ] || $fnacli remap seed.pth --spec mobilenetv2-0.5 -o seed-arch.safetensors

finetune() {  # finetune IN OUT (OUT is written once, when training has finished)
  [ -f "$2" ] && return 0
  $fnacli finetune "$1" --task ssdlite --data data -o "$2" --size $size "${finetune_run[@]}" \
    --optimizer sgd --lr 0.03 --schedule cosine --augment ssdlite --seed 0 \
    $(resume_flag "$2")
}
say "6/8 finetune SSDLite on the searched architecture (final.safetensors)"
finetune target.safetensors final.safetensors
say "7/8 finetune SSDLite on the seed's architecture (final-seed-arch.safetensors)"
finetune seed-arch.safetensors final-seed-arch.safetensors

evaluate() {  # evaluate CKPT OUT.json
  [ -f "$2" ] && return 0
  $fnacli eval "$1" --data data --json > "$2.tmp"
  mv "$2.tmp" "$2"
}
say "8/8 evaluate both with COCOeval, and compare"
evaluate final-seed-arch.safetensors metrics-seed-arch.json
evaluate final.safetensors metrics.json
$fnacli madds final-seed-arch.safetensors final.safetensors --task ssdlite --size $size \
  --num-classes 3 --jsonl > madds.jsonl
python3 "$here/summary.py" madds.jsonl metrics-seed-arch.json metrics.json
