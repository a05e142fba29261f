#!/usr/bin/env bash
# The reproduction study of studies/README.md, end to end, with kwta-robust commands only.
#   bash studies/run_study.sh   (from anywhere; all three parts took 18.6 minutes on a 2-core CPU under a load
#   average of 5-8, 16.5 under 7-10, 8.1 minutes under a lighter load, 12.6 for parts 1-2 and 6.5 for the 3x3 sweep
#   under a load of 2-4: about 8-19 minutes)
# Writes checkpoints and records under runs/study/ (part 3's sweep: runs/sweep3x3/) and copies the tables/figures
# into studies/results/; STUDY_OUT, STUDY_SWEEP3_OUT and STUDY_RESULTS move them (e.g. into a scratch folder).
# Finished checkpoints are kept and re-used on a re-run; `evaluate`/`compare`/`sweep` resume their records.
# To start over (e.g. after changing a config or the training code): rm -rf runs/study runs/sweep3x3
set -euo pipefail
cd "$(dirname "$0")/.."

KR=${KWTA_ROBUST:-kwta-robust}           # e.g. KWTA_ROBUST=/work/venv/bin/kwta-robust
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${STUDY_OUT:-runs/study}                 # checkpoints and records of parts 1-2 (not committed)
SWEEP3=${STUDY_SWEEP3_OUT:-runs/sweep3x3}    # part 3's sweep directory (not committed)
RES=${STUDY_RESULTS:-studies/results}       # the tables and figures (committed)
PARTS=${PARTS:-"1 2 3"}                   # e.g. PARTS="1 2" to skip the 3x3 sweep
mkdir -p "$OUT/models" "$RES"
want() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }

train() {  # train OUT.pt [train flags...]: the study recipe (eval_configs/study_train_cnn.yaml) plus flags
    local out=$1; shift
    if [ -f "$out" ]; then echo "reusing $out"; return; fi
    "$KR" train --config eval_configs/study_train_cnn.yaml --threads 1 "$@" --out "$out"
}

# ---- Part 1: Xiao et al. (kWTA looks robust) vs Tramer et al. (adaptive attacks break it) --------------------
if want 1; then
# Standard training: the ReLU twin and kWTA at k/N = 0.2, 0.1, 0.05 (3 epochs each).
train "$OUT/models/relu.pt"     --activation relu
train "$OUT/models/kwta0.2.pt"  --activation kwta --k-ratio 0.2
train "$OUT/models/kwta0.1.pt"  --activation kwta --k-ratio 0.1
train "$OUT/models/kwta0.05.pt" --activation kwta --k-ratio 0.05
# PGD adversarial training (Madry et al.), cheap: Linf 0.3, 5 PGD steps, 3 epochs; ReLU twin and kWTA 0.1 only.
train "$OUT/models/relu-at.pt"    --activation relu              --method pgd --eps 0.3 --pgd-steps 5
train "$OUT/models/kwta0.1-at.pt" --activation kwta --k-ratio 0.1 --method pgd --eps 0.3 --pgd-steps 5

"$KR" compare "$OUT/models/relu.pt" "$OUT/models/kwta0.2.pt" "$OUT/models/kwta0.1.pt" "$OUT/models/kwta0.05.pt" \
    --config eval_configs/study_xiao_tramer.yaml --out-dir "$OUT/standard" \
    --labels relu,kwta0.2,kwta0.1,kwta0.05 --no-progress
"$KR" compare "$OUT/models/relu-at.pt" "$OUT/models/kwta0.1-at.pt" \
    --config eval_configs/study_xiao_tramer.yaml --out-dir "$OUT/adversarial" \
    --labels relu-at,kwta0.1-at --no-progress

"$KR" table "$OUT/standard/relu.json" "$OUT/standard/kwta0.2.json" "$OUT/standard/kwta0.1.json" \
    "$OUT/standard/kwta0.05.json" --format wide --out "$RES/part1_standard.md"
"$KR" table "$OUT/adversarial/relu-at.json" "$OUT/adversarial/kwta0.1-at.json" \
    --format wide --out "$RES/part1_adversarial.md"
"$KR" table "$OUT/standard/relu.json" "$OUT/standard/kwta0.2.json" "$OUT/standard/kwta0.1.json" \
    "$OUT/standard/kwta0.05.json" "$OUT/adversarial/relu-at.json" "$OUT/adversarial/kwta0.1-at.json" \
    --format wide --layout long --out "$RES/part1_long.md"
"$KR" table "$OUT/standard/relu.json" "$OUT/standard/kwta0.2.json" "$OUT/standard/kwta0.1.json" \
    "$OUT/standard/kwta0.05.json" "$OUT/adversarial/relu-at.json" "$OUT/adversarial/kwta0.1-at.json" \
    --format csv --out "$RES/part1.csv"
fi

# ---- Part 2: noise robustness across activation x weight sparsity (Ahmad & Scheinkman 2019) -----------------
if want 2; then
"$KR" sweep eval_configs/study_noise_sweep.yaml --out-dir "$OUT/noise" --workers 1 --no-progress
"$KR" table "$OUT"/noise/cells/*/eval-*.json --format wide --layout long --out "$RES/part2_noise_long.md"
"$KR" table "$OUT"/noise/cells/*/eval-*.json --format wide --out "$RES/part2_noise_wide.md"
if [ -f "$OUT/noise/matrices.md" ]; then cp "$OUT/noise/matrices.md" "$RES/part2_noise_matrices.md"; fi
if [ -d "$OUT/noise/plots" ]; then mkdir -p "$RES/part2_plots" && cp "$OUT"/noise/plots/* "$RES/part2_plots/"; fi
fi

# ---- Part 3: the 3x3 robustness matrix of the sweep --------------------------------------------------------------
# Re-uses the sweep's own output directory (runs/sweep3x3); the sweep resumes, so a finished one costs nothing.
if want 3; then
"$KR" sweep eval_configs/sweep_mnist5k_3x3.yaml --out-dir "$SWEEP3" --no-progress
# The sweep renders its matrices itself (the same renderer as `kwta-robust table --matrix`, fed exactly the records
# of this sweep's cells; a glob over runs/sweep3x3/cells could also pick up cells of an older code version).
cp "$SWEEP3/matrices.md" "$RES/part3_matrices.md"
if [ -d "$SWEEP3/plots" ]; then mkdir -p "$RES/part3_plots" && cp "$SWEEP3"/plots/* "$RES/part3_plots/"; fi
fi
echo "study finished: tables in $RES"
