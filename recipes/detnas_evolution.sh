#!/usr/bin/env bash
# DetNAS-style one-shot search (Chen et al., NeurIPS 2019) on FNA's space with RetinaNet:
# supernet trained with uniform single-path sampling, then an evolutionary search where
# each candidate's BN statistics are recalibrated on a training subset before its COCO mAP
# on the held-out split; every candidate under a MAdds limit. A random-search baseline
# on the same trained supernet is a control (set BASELINE=1); DetNAS's own baseline (random
# architectures, each fine-tuned) is recipes/detnas_random_baseline.sh. Fitness is scored on
# images held out of the training split (DetNAS: 5k of trainval35k), never on val.
#
#   DATA=/data/coco SEED=mbv2.pth NPROC=8 MAX_MADDS=4.85G bash recipes/detnas_evolution.sh
#
# Hyper-parameters: DetNAS's evolution defaults (population 50, top-10 parents, mutation
# probability 0.1, crossover, 20 generations), 256 calibration images; supernet training:
# `fnacli search --strategy evolution` defaults (12 epochs for RetinaNet, finetune recipe).
# MAX_MADDS caps the backbone's MAdds (DetNAS's constraint) counted at 1088x800; 4.85G is
# MobileNetV2's backbone there (the whole MobileNetV2-RetinaNet is 133G).
#
# Paper's result: DetNAS searches a ShuffleNetV2-based space with an ImageNet-pretrained
# supernet and FPN/RetinaNet detectors; its numbers are not comparable to this space. Use
# the random baseline (BASELINE=1) as the control of your own run.
# Expected cost: supernet training ~ one RetinaNet schedule; the search evaluates up to
# 50 x 20 = 1000 candidates, each a BN recalibration (256 images) plus a val-set pass.
source "$(dirname "$0")/common.sh"
MAX_MADDS=${MAX_MADDS:-4.85G}
if [ "$TINY" = 1 ]; then MAX_MADDS=20G; fi  # no real limit at the tiny size

step "expand the seed into the FNA supernet"
[ -f "$OUT/super.safetensors" ] ||
  $fnacli expand "$SEED" --space fna -o "$OUT/super.safetensors"

step "train the supernet with uniform single-path sampling"
launch search "$OUT/super.safetensors" --strategy evolution --task retinanet --data "$DATA" \
  --train-only --trained "$OUT/trained.safetensors" -o "$OUT/searched.safetensors" \
  "${TINY_ARGS[@]}" $(resume_flag "$OUT/trained.safetensors")

step "evolutionary search under the MAdds limit"
strategy=evolution
if [ "${BASELINE:-0}" = 1 ]; then strategy=random; fi
launch search "$OUT/trained.safetensors" --strategy $strategy --skip-training --task retinanet \
  --data "$DATA" --max-madds "$MAX_MADDS" -o "$OUT/searched.safetensors" --force \
  "${TINY_EVO_ARGS[@]}"

step "derive the best architecture and remap the seed onto it"
$fnacli derive "$OUT/searched.safetensors" --top 5 --force -o "$OUT/arch.json"
finish retinanet 1088x800
