#!/usr/bin/env bash
# FNA (Fang et al., ICLR 2020) with RetinaNet on COCO, from an ImageNet MobileNetV2 seed.
#
#   DATA=/data/coco SEED=mbv2.pth NPROC=8 bash recipes/fna_retinanet.sh
#
# Hyper-parameters: the defaults of `fnacli search/finetune --task retinanet`, which follow
# FNA's appendix (search: 14 epochs, 8 weight-only, then one weight step and one α/β step,
# SGD 0.9 wd 1e-4 warmed up over 500 iterations to 0.02 at batch 8, x0.1 at 8 and 11, Adam
# 3e-4 wd 1e-3 for α/β, no random flip, cost λ·log_τ(γ·MAdds of the searched blocks at
# 1088x800) with λ=0.02, τ=10, γ=5; finetune: SGD lr 0.05 per 32 images, wd 5e-5,
# gradient clip 35, x0.1 at epochs 8 and 11 of 12, 1333x800 input). The FPN sits on the
# stride-8/16/32 stage outputs with P6 from C5; the 1280 head conv is not used.
# Search space: `fna`.
#
# Paper's result (FNA Table 3, COCO val): FNA-RetinaNet 33.9 mAP at 133.03B MAdds / 11.73M
# params, vs MobileNetV2-RetinaNet 32.8 mAP at 133.05B / 11.49M (MAdds at 1088x800).
# `fnacli madds fna-retinanet --task retinanet --size 1088x800` gives 132.97B / 11.73M
# (the 0.04% gap is conv bias additions, see docs/madds.md).
# Expected cost: a 14-epoch one-path RetinaNet run (~1.3x a plain one) for the search plus
# the 12-epoch finetune. Not measured here (no GPU on the build machine).
source "$(dirname "$0")/common.sh"

step "expand the seed into the FNA supernet"
[ -f "$OUT/super.safetensors" ] ||
  $fnacli expand "$SEED" --space fna -o "$OUT/super.safetensors"

step "differentiable search on RetinaNet (MAdds-regularised)"
launch search "$OUT/super.safetensors" --task retinanet --data "$DATA" \
  -o "$OUT/searched.safetensors" "${TINY_ARGS[@]}" "${TINY_DIFF_ARGS[@]}" \
  $(resume_flag "$OUT/searched.safetensors")

step "derive the architecture and remap the seed onto it"
$fnacli derive "$OUT/searched.safetensors" --show --force -o "$OUT/arch.json"
finish retinanet 1088x800
