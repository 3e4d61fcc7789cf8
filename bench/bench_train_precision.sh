#!/usr/bin/env bash
# The training step's precision on this CPU, side by side: the same fine-tune (stage 5's recipe: stage 4's 26
# volumes, 12 x 150 steps of batch 8 at lr 2e-4, seed 1) from the shipped model in each precision, then the
# validation tune (10 volumes, seeds 1901-1904) of each result. Writes bench/results/train_precision.md
# (wall time, ratio to fp32, mean validation 3D SEG per threshold). About 25 minutes on 2 cores.
#
#   bash bench/bench_train_precision.sh                        # bf16 vs fp32
#   PRECISIONS="bf16 fp32" WORK=/tmp/tp S4=<folder with stage 4's volumes> bash bench/bench_train_precision.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-bench/out/train_precision}
S4=${S4:-$WORK/stage4}   # the volumes, named as bench/train_default.sh names them (made here when absent)
OUT=${OUT:-bench/results/train_precision.md}
mkdir -p "$WORK"
source bench/stage4_specs.sh  # volume_dir, stage4_randomized, STAGE4_PLAIN, STAGE4_VAL
synth() { # preset seed anisotropy z y x [--randomize] -> prints the dataset folder
  local d; d=$(volume_dir "$S4" "$@")
  [ -f "$d/dataset.json" ] || "$PY" -m mediar3d synth --preset "$1" --seed "$2" --anisotropy "$3" \
    --shape "$4" "$5" "$6" --frames 1 ${7:-} --out "$d" >/dev/null 2>&1
  printf '%s ' "$d"
}
data="" val=""
while read -r spec; do data+=$(synth $spec); done < <(stage4_randomized; printf '%s\n' "${STAGE4_PLAIN[@]}")
for spec in "${STAGE4_VAL[@]}"; do val+=$(synth $spec); done
# the slices are prepared once, before any timed run
"$PY" -m mediar3d train --data $data --val-data $val --out "$WORK/warmup.pt" --init models/mediar3d_default.pt \
  --context-px 6 --epochs 1 --steps-per-epoch 1 --batch 2 --diameter-px 14 --max-slices-per-view 24 \
  --cache "$WORK/cache" --no-progress >/dev/null 2>&1
for prec in ${PRECISIONS:-bf16 fp32}; do
  start=$(date +%s.%N)
  "$PY" -m mediar3d train --data $data --val-data $val --out "$WORK/$prec.pt" --init models/mediar3d_default.pt \
    --context-px 6 --epochs 12 --steps-per-epoch 150 --lr 2e-4 --val-slices-per-view 8 --encoder mit_b0 \
    --decoder small --batch 8 --crop 128 --diameter-px 14 --max-slices-per-view 24 --seed 1 --threads 2 \
    --no-progress --augment standard --precision "$prec" --cache "$WORK/cache" > "$WORK/train_$prec.log" 2>&1
  echo "$prec $(echo "$(date +%s.%N) - $start" | bc)" >> "$WORK/walls.txt"
  "$PY" bench/tune_postprocess.py --model "$WORK/$prec.pt" --work "$WORK/tune_$prec" --out "$WORK/tune_$prec.md" \
    --thresholds 0.35 0.4 0.45 --min-fractions 0.15 > "$WORK/tune_$prec.log" 2>&1
done
command="PRECISIONS='${PRECISIONS:-bf16 fp32}' WORK=$WORK S4=$S4 bash bench/bench_train_precision.sh"
"$PY" - "$WORK" "$OUT" "${PRECISIONS:-bf16 fp32}" "$command" <<'PYEOF'
import re, sys
from pathlib import Path
sys.path.insert(0, "bench")
from benchutil import machine
from mediar3d.infer import BF16_CPU_FLAGS, cpu_flags
work, out, precisions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split()
walls = {}
for line in (work / "walls.txt").read_text().splitlines():
    name, seconds = line.split()
    walls[name] = float(seconds)  # the last run of each precision
rows = []
for prec in precisions:
    table = (work / f"tune_{prec}.md").read_text()
    seg = {float(t): float(v) for t, v in re.findall(r"^\|\s+([0-9.]+)\s+\|\s+([0-9.]+)\s+\|$", table, re.M)}
    ratio = walls["fp32"] / walls[prec] if "fp32" in walls else float("nan")
    rows.append(f"| {prec} | {walls[prec]:.0f} | {ratio:.2f}x | " + " | ".join(f"{seg[t]:.4f}" for t in sorted(seg)) + " |")
    thresholds = sorted(seg)
text = f"""# Training step precision on the CPU: the same fine-tune in each precision

Command: `{sys.argv[4]}`

Machine: {machine()}; native bf16 units: {', '.join(sorted(BF16_CPU_FLAGS & cpu_flags())) or 'none'}

Stage 5's recipe from the shipped model (stage 4's 26 volumes, 12 x 150 steps of batch 8, lr 2e-4, seed 1,
2 threads), wall time of `mediar3d train` (per-epoch validation included, slices prepared beforehand), then
the mean 3D SEG of the 10 validation volumes (seeds 1901-1904, `bench/tune_postprocess.py`) per threshold.

| precision | train wall s | speed vs fp32 | """ + " | ".join(f"SEG at {t}" for t in thresholds) + """ |
|---|---|---|""" + "---|" * len(thresholds) + "\n" + "\n".join(rows) + "\n"
out.write_text(text)
print(text)
PYEOF
