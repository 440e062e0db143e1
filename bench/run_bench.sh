#!/usr/bin/env bash
# Engine benchmark on TinyLlama-1.1B-shaped random models (Q8_0 and Q4_0), 1 and 2 threads.
# usage: bench/run_bench.sh [BUILD_DIR]   (default: build). Models are cached in $BUILD_DIR/bench-models.
# Prints one JSON line per run (see bench_engine.cpp) and a table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
models=$build/bench-models
mkdir -p "$models"
vocab=../shared/vocab/ggml-vocab-llama-spm.gguf
vocab_arg=()
[ -f "$vocab" ] && vocab_arg=(--vocab "$vocab")
results=()
for type in q8_0 q4_0; do
  m=$models/tinyllama-1.1b-$type.gguf
  [ -f "$m" ] || "$build/lingua" gen-model --preset tinyllama-1.1b --type $type "${vocab_arg[@]}" -o "$m"
  for t in 1 2; do
    line=$("$build/bench_engine" "$m" -t $t --prefill 64 --decode 64 --reps 3 --json)
    echo "$line"
    results+=("$type $t $line")
  done
done
echo
printf '%-6s %-7s %12s %12s %10s %12s\n' type threads prefill_tok_s decode_tok_s of_bound peak_rss_MiB
for r in "${results[@]}"; do
  set -- $r
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
t, th, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"{t:<6} {th:<7} {j['prefill_tok_s']:12.2f} {j['decode_tok_s']:12.2f} {100*j['decode_fraction_of_bound']:9.0f}% {j['peak_rss_bytes']/2**20:12.1f}")
PY
done
