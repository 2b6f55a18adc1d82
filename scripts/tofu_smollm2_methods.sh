#!/usr/bin/env bash
# GD vs NPO vs NPO+GUARD on real data with a real model, on a CPU (issue 11, item 8): SmolLM2-135M on TOFU
# forget01 with EVERY forget item (40 QA pairs of 2 authors; the other splits are cut to the same count),
# the full TOFU metric set under the open-unlearning protocol (forget quality = KS test of the truth
# ratios against the retain model, model utility, ROUGE-L / probability / truth ratio per split,
# privleak, extraction strength, sacrifice rates). Not part of CI; about an hour on a quiet 2-core machine.
#
#   bash scripts/tofu_smollm2_methods.sh [RUNS_DIR] [LIMIT] [SPLIT]
#     RUNS_DIR  default runs/tofu-methods
#     LIMIT     items per TOFU split, default 40 (= every forget01 item); 0 = every item of every split
#     SPLIT     forget split, default forget01 (forget05: 200 items, about 5x longer)
#   SMOKE=1 bash scripts/tofu_smollm2_methods.sh /tmp/x 2   tiny limits: checks the pipeline in minutes
#
# Steps (each a plain `lethe` command; every step's wall and CPU time goes to RUNS_DIR/times.tsv):
#  1. "full": SmolLM2 fine-tuned on the forget split's QA pairs (SmolLM2 never saw TOFU's fictitious
#     authors, so SmolLM2 as shipped is the retain model of this setting, as in scripts/tofu_smollm2.sh);
#  2. the retain model's TOFU evaluation: the reference of forget_quality and privleak;
#  3. NPO+GUARD, NPO, GD unlearning from "full" with configs/unlearn-tofu-smollm2.yaml; the first run
#     evaluates "full" (tofu_eval_before.json), the others reuse that evaluation (eval.before);
#  4. one table of every method's metrics (RUNS_DIR/summary.md, summary.json).
# A step whose run directory already holds its result is skipped (lethe's runs are resumable), so the
# same command finishes an interrupted sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/tofu-methods}
LIMIT=${2:-40}
SPLIT=${3:-forget01}
TOFU=${TOFU:-/work/shared/data/tofu}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
THREADS=$OMP_NUM_THREADS
FT_EPOCHS=5; UL_EPOCHS=3; GUARD_SAMPLES=64; MAX_NEW=200
if [[ "${SMOKE:-0}" == 1 ]]; then FT_EPOCHS=0.2; UL_EPOCHS=0.2; GUARD_SAMPLES=4; MAX_NEW=8; fi
case $SPLIT in forget01) RETAIN=retain99 ;; forget05) RETAIN=retain95 ;; forget10) RETAIN=retain90 ;;
  *) echo "error: SPLIT must be forget01, forget05 or forget10, got $SPLIT" >&2; exit 2 ;; esac

mkdir -p "$RUNS"
TIMES="$RUNS/times.tsv"
[[ -f "$TIMES" ]] || printf 'step\twall_s\tcpu_s\tmax_rss_kb\n' > "$TIMES"
timed() {  # timed NAME COMMAND...: runs the command under /usr/bin/time, appends wall/CPU time
  local name=$1; shift
  local log; log=$(mktemp)
  /usr/bin/time -f '%e\t%U\t%S\t%M' -o "$log" "$@"
  awk -v n="$name" -F'\t' '{printf "%s\t%s\t%.1f\t%s\n", n, $1, $2 + $3, $4}' "$log" | tee -a "$TIMES"
  rm -f "$log"
}
LETHE=("$PY" -m lethe)

FULL="$RUNS/full"
[[ -f "$FULL/model/config.json" ]] || timed "fine-tune full on $SPLIT" "${LETHE[@]}" train configs/tofu-qa-smollm2.yaml \
  data.source="$TOFU" data.file="$SPLIT" train.epochs=$FT_EPOCHS train.lr=0.0001 train.batch_size=8 \
  train.threads="$THREADS" --run-dir "$FULL" --quiet
RETAIN_EVAL="$RUNS/retain-eval/tofu_eval.json"
[[ -f "$RETAIN_EVAL" ]] || timed "retain-model eval" "${LETHE[@]}" eval tofu --model smollm2-135m --data "$TOFU" \
  --split "$SPLIT" --limit "$LIMIT" --max-new-tokens $MAX_NEW --run-dir "$RUNS/retain-eval" --quiet

BEFORE=""
for arm in npo-guard npo gd; do
  method=${arm%-guard}
  guard=false; [[ $arm == *-guard ]] && guard=true
  dir="$RUNS/$arm"
  extra=()
  [[ -n "$BEFORE" ]] && extra+=(eval.before="$BEFORE")
  [[ -f "$dir/metrics.json" ]] || timed "unlearn $arm + eval" "${LETHE[@]}" unlearn configs/unlearn-tofu-smollm2.yaml \
    method="$method" guard.enabled=$guard guard.retain_samples=$GUARD_SAMPLES model.name="$FULL/model" \
    data.source="$TOFU" data.forget_split="$SPLIT" data.retain_split="$RETAIN" train.epochs=$UL_EPOCHS \
    train.threads="$THREADS" eval.limit="$LIMIT" eval.max_new_tokens=$MAX_NEW eval.retain_eval="$RETAIN_EVAL" \
    "${extra[@]}" --run-dir "$dir" --quiet
  BEFORE="$RUNS/npo-guard/tofu_eval_before.json"
done

"$PY" - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
arms = ("gd", "npo", "npo-guard")
summary = lambda path: json.loads(path.read_text())["summary"]
metrics = {arm: json.loads((runs / arm / "metrics.json").read_text()) for arm in arms}
rows = {"retain model": summary(runs / "retain-eval" / "tofu_eval.json"),
        "full (before)": summary(runs / "npo-guard" / "tofu_eval_before.json"),
        **{arm: summary(runs / arm / "tofu_eval.json") for arm in arms}}
fmt = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "-"
keys = [k for k, v in rows["full (before)"].items() if isinstance(v, (int, float))]
lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
lines += [f"| {name} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for name, r in rows.items()]
sac = sorted({k for m in metrics.values() for k in m.get("sacrifice_rate", {})})
lines += ["", "| method | " + " | ".join(f"sacrifice {k}" for k in sac) + " |", "|---" * (len(sac) + 1) + "|"]
lines += [f"| {a} | " + " | ".join(fmt(m["sacrifice_rate"].get(k)) for k in sac) + " |" for a, m in metrics.items()]
(runs / "summary.md").write_text("\n".join(lines) + "\n")
(runs / "summary.json").write_text(json.dumps({"tofu": rows, "sacrifice_rate": {a: m.get("sacrifice_rate")
                                                                               for a, m in metrics.items()}}, indent=1))
print("\n".join(lines))
EOF
cat "$TIMES"
