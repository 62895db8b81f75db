#!/usr/bin/env bash
# One GPU session's worth of figures (issue 14, part 4), in under 8 minutes, with no network.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # OUT_DIR defaults to $OUT, else results/gpu_check
#
# Runs, each step under its own time cap and a global budget (GPU_CHECK_BUDGET_S, default 480 s,
# so the whole script ends within 8 minutes; a step is cut to what is left of the budget):
#   1. env.json          jax devices, nvidia-smi, versions
#   2. time_exits.json   python -m profiling.time_exits on the GPU (batch 1 and 64), timed
#   3. throughput/       python -m benchmarks.throughput (JAX vs batched torch on cuda), B = 16 ..
#                        131,072 (throughput.json rewritten after every cell; a cell that fails, say
#                        out of memory, is recorded and the next one runs). Without torch:
#                        benchmarks.sim_throughput, JAX only, same B
#   4. train_speed/      python -m benchmarks.train_speed, GRLE and DROO, 1, 64, 1,024 and 8,192 runs
#                        side by side, one process per policy (its JSON is rewritten after every run
#                        count, so an out-of-memory at 8,192 runs loses nothing measured before)
#   5. paper_quick/      python -m train.experiments paper --quick, cold (a fresh, empty compile
#                        cache), wall time in steps.jsonl, the grid's own timing.json inside
# and summary.json: every step's command, exit status, wall seconds and JSON files. A step that
# runs past its cap is killed (exit status 124) and the next one starts; what it wrote stays.
#
# Wheels to carry (the GPU machine has no network): only what its image lacks. The lent H200
# (2026-11-29) had jax 0.11.2 with jax-cuda13-plugin, flax, optax, chex, orbax-checkpoint,
# matplotlib and torch 2.11.0+cu130 (a cuda build: the torch side runs on the GPU); it lacked jraph:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl jraph==0.0.6.dev0
# and there, from the repository's root (no install needed):
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   PYTHON=python3 bash benchmarks/gpu_check.sh "$OUT/gpu"
# On a machine without jax's CUDA build, carry "jax[cuda13]" (or cuda12, to match the driver) and
# its nvidia-* wheels the same way.
# GPU_CHECK_ONLY=throughput,train_speed,paper_quick,time_exits (the default: all) runs a subset.
# GPU_CHECK_SMOKE=1 runs every step at toy sizes on whatever backend there is (a check of this
# script itself, on a CPU); GPU_CHECK_ALLOW_CPU=1 runs the real sizes without a GPU.
set -u
OUT_DIR="${1:-${OUT:-results/gpu_check}}"
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
SMOKE="${GPU_CHECK_SMOKE:-0}"
PY="${PYTHON:-python}"
ONLY=",${GPU_CHECK_ONLY:-throughput,train_speed,paper_quick,time_exits},"
mkdir -p "$OUT_DIR/throughput" "$OUT_DIR/train_speed" "$OUT_DIR/paper_quick"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
START=$(date +%s)
STEPS="$OUT_DIR/steps.jsonl"
: > "$STEPS"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME CAP_S CMD...: run CMD under min(CAP_S, budget left), log one JSON line
step() {
  local name="$1" cap="$2"; shift 2
  local group="${name%_grle}"; group="${group%_droo}"; group="${group/#sim_throughput/throughput}"
  [[ "$ONLY" == *",$group,"* ]] || return 0
  local l; l=$(left)
  if (( l < 5 )); then
    echo "skip $name: budget spent"; printf '{"step": "%s", "skipped": "budget spent"}\n' "$name" >> "$STEPS"; return
  fi
  (( cap > l )) && cap=$l
  echo "== $name (cap ${cap} s): $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout --signal=TERM --kill-after=5 "$cap" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  tail -n 15 "$OUT_DIR/$name.log"
  "$PY" - "$name" "$rc" "$t0" "$t1" "$cap" "$*" >> "$STEPS" <<'PYEOF'
import json, sys
name, rc, t0, t1, cap, cmd = sys.argv[1:]
print(json.dumps({"step": name, "rc": int(rc), "wall_s": round(float(t1) - float(t0), 2),
                  "cap_s": int(cap), "timed_out": int(rc) in (124, 137), "command": cmd}))
PYEOF
}

# --- 1. the machine ------------------------------------------------------------------------------
"$PY" - "$OUT_DIR/env.json" <<'PYEOF'
import json, platform, subprocess, sys
import jax
info = {"jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()], "python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
except ImportError:
    info["torch"] = None
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
PYEOF
BACKEND=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['backend'])" "$OUT_DIR/env.json")
if [[ "$BACKEND" != "gpu" && "$BACKEND" != "cuda" && "$SMOKE" != "1" && "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]]; then
  echo "error: backend: jax sees no GPU ($BACKEND); install jax[cuda12] (see the top of this script)" >&2
  exit 2
fi
HAVE_TORCH=$("$PY" -c "import json,sys; print(int(json.load(open(sys.argv[1]))['torch'] is not None))" "$OUT_DIR/env.json")

if [[ "$SMOKE" == "1" ]]; then
  BATCHES=2,4; RUNS="1 2"; TS_SLOTS=10; TS_REPS=1; TP_EXTRA=(--reps 1 --sim-slots 5 --cand-steps 1 --train-slots 10
    --grle-reps 1 --target-s 0.05 --loop-target-s 0.05 --loop-max-batch 2)
  PAPER=(--quick --policies random --n-values 4 --seeds 1 --slots 20); EXITS=(--exits 1,2 --width 0.125 --reps 2 --warmup 1)
  CAP_TP=300; CAP_TS_GRLE=200; CAP_TS_DROO=200; CAP_PAPER=300; CAP_EXITS=120
else  # caps: from the H200 run of 2026-11-29 (time_exits 24 s, paper --quick cold 106 s, GRLE's
      # train_speed about 80 s to 1,024 runs; compiles dominate); their sum stays under 8 minutes
  BATCHES=16,1024,8192,131072; RUNS="1 64 1024 8192"; TS_SLOTS=10; TS_REPS=3
  # torch on cuda: one thread count (the CPU threads do not matter there), no Python-loop form (a
  # CPU figure, measured on the CPU machine), the training metrics to B = 8,192, the metrics most
  # asked about first (the budget skips what is left)
  TP_EXTRA=(--reps 3 --grle-reps 2 --loop-max-batch 0 --threads "$(nproc)" --target-s 0.3
    --train-batches 16,1024,8192 --metrics sim,cand_k64,train_droo,train_grle,cand_k16 --budget-s 130)
  PAPER=(--quick); EXITS=(--devices gpu --batch 64 --reps 50 --warmup 5)
  CAP_TP=150; CAP_TS_GRLE=120; CAP_TS_DROO=45; CAP_PAPER=120; CAP_EXITS=35
fi

# --- 2. the profiling stage's exit timing (first: short, and the profile's own figure) ---------
step time_exits "$CAP_EXITS" "$PY" -m profiling.time_exits --out "$OUT_DIR/time_exits.json" "${EXITS[@]}"

# --- 3. throughput ---------------------------------------------------------------------------------
if [[ "$HAVE_TORCH" == "1" ]]; then
  step throughput "$CAP_TP" env XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 "$PY" -m benchmarks.throughput --out "$OUT_DIR/throughput" --batches "$BATCHES" "${TP_EXTRA[@]}"
else
  step sim_throughput "$CAP_TP" "$PY" -m benchmarks.sim_throughput --batches "$BATCHES" --states 8192 \
    --json "$OUT_DIR/throughput/sim_throughput.json"
fi

# --- 4. training speed, one process per policy -----------------------------------------------------
for policy in grle droo; do
  cap=CAP_TS_${policy^^}
  step "train_speed_$policy" "${!cap}" "$PY" -m benchmarks.train_speed --policy "$policy" --runs $RUNS \
    --slots "$TS_SLOTS" --reps "$TS_REPS" --json "$OUT_DIR/train_speed/$policy.json"
done

# --- 5. the paper's --quick grid, cold -------------------------------------------------------------
rm -rf "$OUT_DIR/paper_quick/jax_cache"
JAX_COMPILATION_CACHE_DIR="$OUT_DIR/paper_quick/jax_cache" \
  step paper_quick "$CAP_PAPER" "$PY" -m train.experiments paper "${PAPER[@]}" --out "$OUT_DIR/paper_quick/results"
rm -rf "$OUT_DIR/paper_quick/jax_cache"  # compiled programs: large, and not figures

# --- summary ---------------------------------------------------------------------------------------
"$PY" - "$OUT_DIR" "$START" <<'PYEOF'
import glob, json, os, sys, time
out, start = sys.argv[1], float(sys.argv[2])
steps = [json.loads(l) for l in open(os.path.join(out, "steps.jsonl")) if l.strip()]
files = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "**", "*.json"), recursive=True)
               if "jax_cache" not in p)
summary = {"total_wall_s": round(time.time() - start, 1), "steps": steps, "json_files": files}
rates = {}
for p in glob.glob(os.path.join(out, "train_speed", "*.json")):
    for row in json.load(open(p))["results"]:
        rates[f"{row['policy']}_{row['runs']}"] = row["agent_slots_per_s"]
summary["train_speed_agent_slots_per_s"] = dict(sorted(rates.items(), key=lambda kv: (kv[0].split('_')[0], int(kv[0].split('_')[1]))))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps({k: summary[k] for k in ("total_wall_s", "train_speed_agent_slots_per_s")}, indent=2))
PYEOF
