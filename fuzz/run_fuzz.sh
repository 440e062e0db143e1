#!/usr/bin/env bash
# Runs the GGUF fuzz target for a bounded time on a fresh seed corpus; exits non-zero on any crash,
# sanitizer report, leak, timeout (hang) or out-of-memory. Crashing inputs are kept in
# <binary dir>/fuzz-artifacts/ for reproduction:  build-fuzz/fuzz_gguf <artifact>
#
# Usage: fuzz/run_fuzz.sh FUZZ_BINARY [SECONDS=60] [CORPUS_DIR=<binary dir>/gguf-corpus]
set -euo pipefail

bin=${1:?usage: run_fuzz.sh FUZZ_BINARY [SECONDS] [CORPUS_DIR]}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=$(cd "$(dirname "$bin")" && pwd)
corpus=${3:-$bin_dir/gguf-corpus}
artifacts=$bin_dir/fuzz-artifacts/

mkdir -p "$artifacts"
"$here/make_seeds.sh" "$corpus"
# -max_len: the seeds are at most 16 KiB; room to grow without slow megabyte inputs.
# -timeout: a single input taking 10 s is a hang.
exec "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
  -dict="$here/gguf.dict" -artifact_prefix="$artifacts" -print_final_stats=1 "$corpus"
