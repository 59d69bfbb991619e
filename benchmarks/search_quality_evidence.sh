#!/usr/bin/env bash
# The evidence run of docs/search-quality.md ("A short-budget search, redone"): FNA's
# differentiable search at the settings this page argues for, 3 search seeds, each derived two
# ways, then every arm fine-tuned through `fnacli compare` against the seed and random
# architectures of matched MAdds. Resumable: rerun it and finished pieces are reused.
#   EVIDENCE=.cache/evidence SEEDS=5 JOBS=2 bash benchmarks/search_quality_evidence.sh
# DERIVATIONS=layer compares the per-layer argmax only (the depth-prior arms can follow later:
# the runs are cached by content, so a later run with both reuses these).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${EVIDENCE:-$ROOT/.cache/evidence}
SEEDS=${SEEDS:-5}          # fine-tuning seeds per arm
SEARCH_SEEDS=${SEARCH_SEEDS:-3}
JOBS=${JOBS:-2}
ARCH_LR=${ARCH_LR:-0.166}  # --arch-lr auto's value for 96 α/β steps over 7 candidates
DERIVATIONS=${DERIVATIONS:-"layer depth-prior"}  # which derivations of each search are arms
SPACE=$ROOT/recipes/spaces/fna-mbv2-0.5-demo.json
FNACLI=(nice -n 5 python -m fnacli)
export OMP_NUM_THREADS=1
mkdir -p "$W/archs" "$W/search"
cd "$W"
# the data, the seed and the supernet: the page's (see its Set-up)
[ -f data/annotations/instances_val.json ] || "${FNACLI[@]}" data synth data --variant context \
    --train 256 --val 128 --size 96 --seed 0 --format png --force
[ -f seed.pth ] || "${FNACLI[@]}" pretrain-seed seed.pth --width 0.5 --size 64 \
    --seconds 604800 --max-steps 500 --seed 0 --json --force > seed.json
[ -f super.safetensors ] || "${FNACLI[@]}" expand seed.pth --space "$SPACE" \
    --masks non-overlapping -o super.safetensors --force
SEED_MADDS=18796640                       # the seed's SSDLite (3 classes) at 80x80
TARGET=$((SEED_MADDS * 9 / 10))
WINDOW=(--min-madds $((TARGET * 95 / 100)) --max-madds $((TARGET * 105 / 100)) --cost-scope detector)
# weight steps on the page's fine-tuning recipe; α/β lr sized to the 96 α/β steps
search() {
  local s=$1 out=search/diff-s$1.safetensors
  [ -f "search/diff-s$s.done" ] && return 0
  "${FNACLI[@]}" search super.safetensors --task ssdlite --data data -o "$out" --size 80 \
      --epochs 24 --warmup-epochs 12 --batch-size 16 --workers 0 --seed "$s" --arch-every 1 \
      --arch-lr "$ARCH_LR" --target-madds "$TARGET" --cost-scope detector \
      --optimizer sgd --lr 0.03 --warmup-iters 100 --clip-grad 10 --device cpu \
      $( [ -f "$out.ckpt" ] && echo --resume || echo --force ) 2> "search/diff-s$s.log"
  touch "search/diff-s$s.done"
}
export -f search; export FNACLI_BIN="${FNACLI[*]}" ARCH_LR TARGET
for s in $(seq 0 $((SEARCH_SEEDS - 1))); do echo "$s"; done | \
  xargs -P "$JOBS" -I{} bash -c 'FNACLI=($FNACLI_BIN); search {}'
ARMS=()
declare -A MEMBERS
for s in $(seq 0 $((SEARCH_SEEDS - 1))); do
  for d in $DERIVATIONS; do
    case $d in
      layer) how=() ;;
      depth-prior) how=(--by depth --remap-prior 1) ;;
      *) echo "DERIVATIONS: unknown $d" >&2; exit 2 ;;
    esac
    "${FNACLI[@]}" derive "search/diff-s$s.safetensors" "${WINDOW[@]}" "${how[@]}" \
        -o "archs/$d-s$s.json" --force
    ARMS+=("$d-s$s=archs/$d-s$s.json")
    MEMBERS[$d]+="${MEMBERS[$d]:+,}$d-s$s"
  done
done
POOLS=()  # each derivation pooled over the search seeds
for d in $DERIVATIONS; do POOLS+=(--group "$d=${MEMBERS[$d]}"); done
COMPARE=("${FNACLI[@]}" compare seed.pth "${ARMS[@]}" -w compare --task ssdlite --data data
         --epochs 24 --batch-size 16 --size 80 --optimizer sgd --lr 0.03 --schedule cosine
         --warmup-iters 100 --clip-grad 10 --augment ssdlite --seeds "$SEEDS" --random 2
         --space "$SPACE" --target-madds "$TARGET" --window 0.05 --workers 0 --threads 1
         --device cpu --plot compare.svg "${POOLS[@]}" --json)
for j in $(seq 1 "$JOBS"); do "${COMPARE[@]}" > "compare-$j.json" 2> "compare-$j.log" & done
wait
echo "done: $W/compare-1.json"
