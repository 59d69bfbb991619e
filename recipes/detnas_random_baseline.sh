#!/usr/bin/env bash
# DetNAS's random baseline (Chen et al., NeurIPS 2019): "randomly pick 5 networks" of the
# search space under the same MAdds limit and train each "with exactly the same settings" as
# the searched architecture. No supernet is trained and nothing is scored by one: each
# architecture is remapped from the seed, fine-tuned with the task's fine-tuning recipe (what
# recipes/detnas_evolution.sh gives its searched architecture) and evaluated on val.
#
#   DATA=/data/coco SEED=mbv2.pth NPROC=8 N=5 MAX_MADDS=4.85G bash recipes/detnas_random_baseline.sh
#
# MAX_MADDS limits the backbone's MAdds at 1088x800 (DetNAS's constraint; 4.85G is
# MobileNetV2's backbone). Compare $OUT/baseline.tsv with the searched architecture's
# metrics.json from recipes/detnas_evolution.sh run with the same MAX_MADDS and settings.
# Expected cost: N RetinaNet fine-tuning schedules (12 epochs each).
source "$(dirname "$0")/common.sh"
N=${N:-5}
MAX_MADDS=${MAX_MADDS:-4.85G}
if [ "$TINY" = 1 ]; then N=2; MAX_MADDS=20G; fi

step "expand the seed into the FNA supernet (its space is what is sampled)"
[ -f "$OUT/super.safetensors" ] ||
  $fnacli expand "$SEED" --space fna -o "$OUT/super.safetensors"

step "draw $N random architectures under the backbone limit"
$fnacli search "$OUT/super.safetensors" --strategy random --retrain "$N" --task retinanet \
  --max-madds "$MAX_MADDS" -o "$OUT/baseline" --force --seed "${BASELINE_SEED:-0}"

printf 'arch\tAP\tAP50\tbackbone MAdds\n' > "$OUT/baseline.tsv"
for k in $(seq 1 "$N"); do
  step "fine-tune and evaluate random architecture $k of $N"
  arch="$OUT/baseline/random-$k.json"
  $fnacli remap "$SEED" --spec "$arch" --force -o "$OUT/baseline/target-$k.safetensors"
  launch finetune "$OUT/baseline/target-$k.safetensors" --task retinanet --data "$DATA" \
    -o "$OUT/baseline/final-$k.safetensors" "${TINY_ARGS[@]}" \
    $(resume_flag "$OUT/baseline/final-$k.safetensors")
  $fnacli eval "$OUT/baseline/final-$k.safetensors" --data "$DATA" --json \
    > "$OUT/baseline/metrics-$k.json"
  python3 - "$OUT/baseline" "$k" >> "$OUT/baseline.tsv" <<'PY'
import json, sys
d, k = sys.argv[1], int(sys.argv[2])
m = json.load(open(f"{d}/metrics-{k}.json"))
a = json.load(open(f"{d}.baseline.json"))["architectures"][k - 1]
print(f"random-{k}\t{m['AP']:.4f}\t{m['AP50']:.4f}\t{a['madds'] / 1e9:.3f}G")
PY
done
cat "$OUT/baseline.tsv" >&2
