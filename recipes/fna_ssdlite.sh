#!/usr/bin/env bash
# FNA (Fang et al., ICLR 2020) with SSDLite on COCO, from an ImageNet MobileNetV2 seed.
#
#   DATA=/data/coco SEED=mbv2.pth NPROC=8 bash recipes/fna_ssdlite.sh
#
# Hyper-parameters: the defaults of `fnacli search/finetune --task ssdlite`, which follow
# FNA's appendix (search: 24 epochs, α/β from epoch 12, one α/β step per weight step,
# RMSProp wd 4e-5 warmed up over 500 iterations to 0.03, x0.1 at 16 and 22, cost
# λ·log_τ(γ·MAdds of the searched blocks) with λ=0.2, τ=10, γ=10, Adam 3e-4 for α/β;
# finetune: RMSProp, lr 0.2 per 512 images, 60 epochs, x0.1 at 36/50/56; 320x320 input).
# docs/search.md lists where FNA's released configs differ; docs/training.md.
# Search space: `fna` ({3,5,7}x{3,6} + skip, max depths 4,4,4,4,4,1, widths fixed).
#
# Paper's result (FNA Table 4, COCO val): FNA-SSDLite 23.0 mAP at 0.88B MAdds / 4.6M params,
# vs MobileNetV2-SSDLite 22.1 mAP at 0.8B / 4.3M. `fnacli madds fna-ssdlite --task ssdlite`
# reproduces the cost column (0.880B, 4.63M).
# Expected cost here: the search is 24 epochs of one-path SSDLite training plus the α/β
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
