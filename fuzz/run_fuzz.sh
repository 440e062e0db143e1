#!/usr/bin/env bash
# Runs a fuzz target (fuzz_gguf, fuzz_wire or fuzz_serve_request) for a bounded time on a fresh seed corpus; exits non-zero on any crash,
# sanitizer report, leak, timeout (hang) or out-of-memory. Crashing inputs are kept in
# <binary dir>/fuzz-artifacts/ for reproduction:  build-fuzz/fuzz_gguf <artifact>
#
# Usage: fuzz/run_fuzz.sh FUZZ_BINARY [SECONDS=60] [CORPUS_DIR=<binary dir>/<target>-corpus]
set -euo pipefail

bin=${1:?usage: run_fuzz.sh FUZZ_BINARY [SECONDS] [CORPUS_DIR]}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=$(cd "$(dirname "$bin")" && pwd)
case $(basename "$bin") in
  fuzz_gguf) seeds=make_seeds.sh; dict=gguf.dict; corpus_name=gguf-corpus ;;
  fuzz_wire) seeds=make_wire_seeds.sh; dict=wire.dict; corpus_name=wire-corpus ;;
  fuzz_serve_request) seeds=make_serve_seeds.sh; dict=serve.dict; corpus_name=serve-corpus ;;
  *) echo "run_fuzz.sh: unknown target $bin" >&2; exit 2 ;;
esac
corpus=${3:-$bin_dir/$corpus_name}
artifacts=$bin_dir/fuzz-artifacts/

mkdir -p "$artifacts"
"$here/$seeds" "$corpus"
# -max_len: the seeds are at most 16 KiB; room to grow without slow megabyte inputs.
# -timeout: a single input taking 10 s is a hang.
exec "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
  -dict="$here/$dict" -artifact_prefix="$artifacts" -print_final_stats=1 "$corpus"
