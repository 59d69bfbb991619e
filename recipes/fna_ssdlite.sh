#!/usr/bin/env bash
# FNA (Fang et al., ICLR 2020) with SSDLite on COCO, from an ImageNet MobileNetV2 seed.
#
#   DATA=/data/coco SEED=mbv2.pth NPROC=8 bash recipes/fna_ssdlite.sh
#
# Hyper-parameters: the defaults of `fnacli search/finetune --task ssdlite`, which follow
# FNA's released configs (search: 30 epochs, 15 warm-up, an α/β step every 5 weight steps,
# cost λ·log_τ(MAdds) with λ=0.15, τ=10, Adam 3e-4 for α/β; finetune: RMSProp, lr 0.2 per
# 512 images, warm-up, step decay; 320x320 input). See docs/search.md, docs/training.md.
# Search space: `fna` ({3,5,7}x{3,6} + skip, max depths 4,4,4,4,4,1, widths fixed).
#
# Paper's result (FNA Table 4, COCO val): FNA-SSDLite 23.0 mAP at 0.88B MAdds / 4.6M params,
# vs MobileNetV2-SSDLite 22.1 mAP at 0.8B / 4.3M. `fnacli madds fna-ssdlite --task ssdlite`
# reproduces the cost column (0.880B, 4.63M).
# Expected cost here: the search is 30 epochs of one-path SSDLite training plus the α/β
# steps (~1.3x a plain SSDLite run of the same length); the finetune is the paper's full
# SSDLite schedule and dominates. Not measured here (no GPU on the build machine).
source "$(dirname "$0")/common.sh"

step "expand the seed into the FNA supernet"
[ -f "$OUT/super.safetensors" ] ||
  $fnacli expand "$SEED" --space fna -o "$OUT/super.safetensors"

step "differentiable search on SSDLite (MAdds-regularised)"
launch search "$OUT/super.safetensors" --task ssdlite --data "$DATA" \
  -o "$OUT/searched.safetensors" "${TINY_ARGS[@]}" "${TINY_DIFF_ARGS[@]}" \
  $(resume_flag "$OUT/searched.safetensors")

step "derive the architecture and remap the seed onto it"
$fnacli derive "$OUT/searched.safetensors" --show --force -o "$OUT/arch.json"
finish ssdlite 320
