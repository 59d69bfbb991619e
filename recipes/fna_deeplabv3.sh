#!/usr/bin/env bash
# FNA (Fang et al., ICLR 2020) with DeepLabv3 on Cityscapes, from an ImageNet MobileNetV2 seed.
#
#   DATA=/data/cityscapes SEED=mbv2.pth NPROC=8 bash recipes/fna_deeplabv3.sh
#
# DATA is the Cityscapes layout (leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and
# gtFine/{train,val}/CITY/*_gtFine_labelIds.png; 19 train ids, the rest ignored).
# Hyper-parameters: the defaults of `fnacli search/finetune --task deeplabv3`, which follow
# FNA §4.1 (search: 80 epochs, α/β from epoch 30 with Adam 1e-3 wd 4e-5 on 20% of the
# training images, cost λ·log_τ(MAdds) with λ=9e-3, τ=45; weights SGD 0.9 wd 5e-4, lr 0.02
# for 16 images, warm-up from 1e-4, cosine; images rescaled by 0.5 and cropped to 321x321;
# finetune: 769x769 crops of images rescaled by 0.75-2.0, flips; BN statistics recomputed at
# the end). DeepLabv3 runs at output stride 16 with a separable ASPP on the last stage; the
# 1280 head conv is not used. Search space: `fna-seg` (max depths 4,4,6,6,4,1).
# See docs/segmentation.md.
#
# Paper's result (FNA Table 1, Cityscapes val): FNA-DeepLabv3 76.6 mIoU at 24.17B MAdds /
# 2.55M params, vs MobileNetV2-DeepLabv3 75.5 at 24.52B / 2.57M (MAdds at 1024x2048).
# `fnacli madds fna-deeplabv3 --task deeplabv3` gives 24.17B / 2.47M (docs/madds.md).
# Expected cost: not measured here (no GPU on the build machine).
SYNTH=segmentation
FINETUNE_ARGS=(--bn-recalibrate 100)
source "$(dirname "$0")/common.sh"
if [ "$TINY" = 1 ]; then FINETUNE_ARGS=(--bn-recalibrate 1); fi

step "expand the seed into the FNA segmentation supernet"
[ -f "$OUT/super.safetensors" ] ||
  $fnacli expand "$SEED" --space fna-seg -o "$OUT/super.safetensors"

step "differentiable search on DeepLabv3 (MAdds-regularised)"
launch search "$OUT/super.safetensors" --task deeplabv3 --data "$DATA" \
  -o "$OUT/searched.safetensors" "${TINY_ARGS[@]}" "${TINY_DIFF_ARGS[@]}" \
  $(resume_flag "$OUT/searched.safetensors")

step "derive the architecture and remap the seed onto it"
$fnacli derive "$OUT/searched.safetensors" --show --force -o "$OUT/arch.json"
finish deeplabv3 2048x1024
