#!/usr/bin/env bash
# Writes a seed corpus for fuzz_gguf into OUT_DIR: small hand-built GGUF files covering every value
# type, nested arrays, a custom alignment and tensors of every dtype we read, plus (if ../shared is
# present) the first 16 KiB of some real files, which hold their whole metadata and tensor tables.
#
# Usage: fuzz/make_seeds.sh OUT_DIR [SHARED_DIR]   (SHARED_DIR defaults to <repo>/../shared)
set -euo pipefail
export LC_ALL=C  # ${#s} must count bytes

out=${1:?usage: make_seeds.sh OUT_DIR [SHARED_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${2:-$repo/../shared}
mkdir -p "$out"

# Little-endian field writers (to stdout). Values must be below 2^63.
u8() { printf "\\x$(printf %02x "$(($1 & 255))")"; }
u16() { u8 $(($1)); u8 $(($1 >> 8)); }
u32() { local i; for i in 0 1 2 3; do u8 $(($1 >> (8 * i))); done; }
u64() { local i; for i in 0 1 2 3 4 5 6 7; do u8 $(($1 >> (8 * i))); done; }
str() { u64 ${#1}; printf %s "$1"; }
header() { printf GGUF; u32 "${3:-3}"; u64 "$1"; u64 "$2"; }  # n_tensors n_kv [version]
kv() { str "$1"; u32 "$2"; }                                     # key value_type (value follows)
tensor() {                                                       # name type offset dims...
  local name=$1 type=$2 offset=$3 d
  shift 3
  str "$name"; u32 $#
  for d in "$@"; do u64 "$d"; done
  u32 "$type"; u64 "$offset"
}
# Pad FILE with zeros to a multiple of ALIGN, then append N more zero bytes.
pad() {
  local file=$1 align=$2 extra=${3:-0} size
  size=$(wc -c <"$file")
  head -c $(((align - size % align) % align + extra)) /dev/zero >>"$file"
}

header 0 0 >"$out/empty-v3.gguf"
{ header 0 1 2; kv general.name 8; str v2-file; } >"$out/v2.gguf"

{
  header 0 13
  kv u8 0; u8 255
  kv i8 1; u8 128
  kv u16 2; u16 65535
  kv i16 3; u16 32768
  kv u32 4; u32 4294967295
  kv i32 5; u32 2147483648
  kv f32 6; u32 0x3fc00000
  kv bool 7; u8 1
  kv general.architecture 8; str llama
  kv u64 10; u64 0x7fffffffffffffff
  kv i64 11; u64 0x4000000000000000
  kv f64 12; u64 0x400921fb54442d18
  kv empty.string 8; str ""
} >"$out/scalars.gguf"

{
  header 0 6
  kv tokenizer.ggml.tokens 9; u32 8; u64 4; str "<unk>"; str "<s>"; str "</s>"; str "hello"
  kv tokenizer.ggml.scores 9; u32 6; u64 3; u32 0; u32 0xbf800000; u32 0x40000000
  kv tokenizer.ggml.token_type 9; u32 5; u64 3; u32 2; u32 3; u32 1
  kv bytes 9; u32 0; u64 5; printf 'abcde'
  kv empty 9; u32 4; u64 0
  # [[[[1, 2]], []]] : four levels, the deepest allowed
  kv nested 9; u32 9; u64 2
    u32 9; u64 1
      u32 9; u64 1
        u32 3; u64 2; u16 1; u16 2
    u32 9; u64 0
} >"$out/arrays.gguf"

f=$out/aligned64.gguf
{ header 2 2; kv general.alignment 4; u32 64; kv general.architecture 8; str llama
  tensor a 0 0 8; tensor b 0 64 4 2; } >"$f"
pad "$f" 64 96

# One tensor of every dtype we read: F32 F16 BF16 Q8_0 Q4_0 Q4_K Q6_K (ids 0 1 30 8 2 12 14).
f=$out/dtypes.gguf
{
  header 7 1; kv general.architecture 8; str llama
  tensor f32 0 0 4 2
  tensor f16 1 32 16
  tensor bf16 30 64 4 2 2
  tensor q8_0 8 96 32 2
  tensor q4_0 2 192 32
  tensor q4_k 12 224 256
  tensor q6_k 14 384 256
} >"$f"
pad "$f" 32 600

# Real files: their first 16 KiB hold the metadata and tensor tables (data is cut off).
for real in models/stories260K.gguf models/tiny-random-q4_k_m.gguf models/tiny-random-bf16.gguf \
            vocab/ggml-vocab-llama-spm.gguf; do
  if [[ -f $shared/$real ]]; then
    head -c 16384 "$shared/$real" >"$out/real-$(basename "$real" .gguf).gguf"
  fi
done
echo "wrote $(ls "$out" | wc -l) seeds to $out"
