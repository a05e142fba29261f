#!/usr/bin/env bash
# Issue 13's GPU checks as one prepared run, for a session lent a device machine (benchmarks/README.md, "On a GPU").
# There, from the repository root, with .device-wheels/ carried (scripts/device-wheels.sh made it here):
#   bash scripts/device-check.sh "$OUT"
# Installs this package from those wheels (no index: nothing can be fetched there), then runs each step with its own
# time limit and log under OUT (at most 8 files come back; a benchmark's log holds its report): the GPU-path tests,
# the quickstart on the GPU, the peers benchmark on the three attacks that missed issue 13's GPU target (PGD,
# APGD-CE, CW: their loops now read on the host every 8 steps, unmeasured on a GPU) and the kWTA layer benchmark (in
# context). The limits sum to 560 s, inside one device call (600 s). DEVICE (default cuda) picks the device; DRY=1
# prints the steps and runs none (tests/test_device_check.py reads them so). Every step's rc and time are in
# OUT/summary.txt.
set -u
out=${1:?usage: bash scripts/device-check.sh OUT_DIR}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
scratch=${SCRATCH:-/tmp/kwta-device-check}
# name | time limit in seconds | command (run by bash in the repository root)
install="$py -m pip install -q --no-index --no-deps"
tests="tests/test_attack_progress.py tests/test_simulated_device.py tests/test_devices_fuzz.py"
tests="$tests tests/test_attack_contract.py tests/test_device_audit.py"
quickstart="$py -m kwta_robust.cli quickstart --device $device --out-dir $scratch/quickstart --no-progress"
steps=(
  "install|60|$install .device-wheels/*.whl && $install --no-build-isolation -e ."
  "tests|90|$py -m pytest -q -x $tests"
  "quickstart|150|$quickstart && cp $scratch/quickstart/quickstart.md $out/quickstart.md"
  "peers|200|$py -m benchmarks.bench_peers --device $device --repeats 3 --attacks pgd apgd-ce cw"
  "kwta_layer|60|$py -m benchmarks.bench_kwta_layer --device $device --repeats 5"
)
if [ -n "${DRY:-}" ]; then
  for step in "${steps[@]}"; do echo "$step"; done
  exit 0
fi
mkdir -p "$out" "$scratch"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())' 2>&1
} > "$out/summary.txt"
for step in "${steps[@]}"; do
  name=${step%%|*}; rest=${step#*|}; limit=${rest%%|*}; command=${rest#*|}
  start=$(date +%s)
  timeout "$limit" bash -c "$command" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name: rc $rc in $(( $(date +%s) - start )) s (limit $limit)" | tee -a "$out/summary.txt"
  tail -n 15 "$out/$name.log"
done
