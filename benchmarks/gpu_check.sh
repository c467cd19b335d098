#!/usr/bin/env bash
# The GPU check, one command for a session that is lent a GPU (<= 8 minutes on one GPU):
#   1. the tests marked `cuda` (they skip without a GPU);
#   2. a default ex09 run on CUDA, seed 0, in fp32 and in bf16 (run.amp): wall time and val score of each,
#      beside the CPU figures of the same seed (benchmarks/cpu_reference.json, measured on the 2-core CI CPU);
#   3. a short kp study with 1, 4 and 8 workers sharing the GPU (benchmarks/gpu_study.py): trials/hour, GPU use.
#     bash benchmarks/gpu_check.sh [DATA_DIR]
# Without CUDA it says it skipped, and why, and exits 0 (CI runs it so). Last line: one JSON object.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=${1:-${I2DL_DATA_DIR:-../shared/data}}
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1

reason=$("$PY" - <<'PYEOF'
import shutil
import torch
if not torch.cuda.is_available():
    print("torch sees no CUDA device (torch " + torch.__version__ + ", CUDA build " + str(torch.version.cuda)
          + ("" if shutil.which("nvidia-smi") else ", no nvidia-smi") + ")")
PYEOF
)
if [ -n "$reason" ]; then
  echo "gpu_check: skipped: $reason"
  "$PY" -c 'import json, sys; print(json.dumps({"benchmark": "gpu_check", "skipped": sys.argv[1]}))' "$reason"
  exit 0
fi

tmp=$(mktemp -d /tmp/gpu-check-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
"$PY" -m pytest -q -m cuda -p no:cacheprovider > "$tmp/tests.log" 2>&1
tests_rc=$?
tail -n 1 "$tmp/tests.log"
for amp in false true; do
  started=$(date +%s%N)
  "$PY" -m experiments.run ex09 --data-dir "$DATA" --out "$tmp/ex09-amp-$amp" --no-progress \
    --set run.seed=0 run.device=cuda run.amp=$amp > "$tmp/ex09-$amp.log" 2>&1 \
    || { echo "gpu_check: the ex09 run with run.amp=$amp failed:"; tail -n 20 "$tmp/ex09-$amp.log"; }
  echo $(( ($(date +%s%N) - started) / 1000000 )) > "$tmp/wall-$amp"  # milliseconds
done
"$PY" benchmarks/gpu_study.py --data-dir "$DATA" --budget-s 45 --epochs 6 --workers 1 4 8 > "$tmp/study.log" 2>&1
study_rc=$?
"$PY" - "$tmp" "$tests_rc" "$study_rc" "$(( $(date +%s) - t0 ))" <<'PYEOF'
import json, sys
from pathlib import Path
tmp, tests_rc, study_rc, total = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu = json.loads(Path("benchmarks/cpu_reference.json").read_text())["ex09_default_seed0"]
tests = (tmp / "tests.log").read_text().strip().splitlines()
out = {"benchmark": "gpu_check", "total_s": total, "cuda_tests": tests[-1] if tests else "",
       "cuda_tests_passed": tests_rc == 0, "cpu_reference": cpu}
for amp, name in (("false", "fp32"), ("true", "bf16")):
    summary = tmp / f"ex09-amp-{amp}" / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        wall = int((tmp / f"wall-{amp}").read_text()) / 1000
        out[f"ex09_{name}"] = {"val/score": s["val/score"], "train_wall_s": s["wall_s"], "process_wall_s": wall,
                               "score_vs_cpu": s["val/score"] / cpu["val/score"],
                               "speedup_vs_cpu": cpu["wall_s"] / s["wall_s"]}
lines = (tmp / "study.log").read_text().strip().splitlines()
try:
    out["study"] = json.loads(lines[-1])
except (IndexError, ValueError):
    out["study"] = {"failed": study_rc, "tail": lines[-5:]}
print(json.dumps(out))
PYEOF
