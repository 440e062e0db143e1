#!/usr/bin/env bash
# Writes a seed corpus for fuzz_wire into OUT_DIR: one valid frame of every message type (built
# here, independently of the C++ encoder, from the layout in docs/wire-protocol.md; tests/net checks
# that every seed decodes), plus a few raw payloads for the per-type payload decoders.
#
# Usage: fuzz/make_wire_seeds.sh OUT_DIR
set -euo pipefail
export LC_ALL=C  # ${#s} must count bytes

out=${1:?usage: make_wire_seeds.sh OUT_DIR}
mkdir -p "$out"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# Little-endian field writers (to stdout). Values must be below 2^63.
u8() { printf "\\x$(printf %02x "$(($1 & 255))")"; }
u16() { u8 $(($1)); u8 $(($1 >> 8)); }
u32() { local i; for i in 0 1 2 3; do u8 $(($1 >> (8 * i))); done; }
u64() { local i; for i in 0 1 2 3 4 5 6 7; do u8 $(($1 >> (8 * i))); done; }
str() { u32 ${#1}; printf %s "$1"; }
hash32() { local i; for i in $(seq 0 31); do u8 $(($1 + 7 * i)); done; }  # 32 bytes from a seed
token() { u32 "$1"; u32 "$2"; u8 "$3"; }                                  # seq_id pos want_output

# frame NAME TYPE REQUEST_ID: reads the payload from $tmp, writes NAME.frame (header + payload) and
# NAME.payload (the payload alone, which fuzz_wire also feeds to every payload decoder).
frame() {
  local size
  size=$(wc -c <"$tmp")
  { printf LLNK; u16 1; u16 "$2"; u32 0; u64 "$3"; u32 "$size"; cat "$tmp"; } >"$out/$1.frame"
  cp "$tmp" "$out/$1.payload"
}

{ u16 1; u8 0; str phone-a; u32 4; u64 $((3 << 30)); u64 $((1600 << 20)); str "avx2 fma f16c"; str ""; } >"$tmp"
frame hello 0x0101 0
{ u16 1; u8 1; str origin; u32 1; u64 0; u64 0; str ""; str token; } >"$tmp"
frame hello-coordinator 0x0101 0

{ u64 123456789; u64 42; } >"$tmp"
frame heartbeat 0x0102 7

{ u16 6; u16 0x0201; str "segment needs 2.1 GB, memory limit is 1.6 GB"; } >"$tmp"
frame error 0x0103 9

{
  hash32 1; u32 3; u32 7; u32 512; str "tcp://192.0.2.10:5601"
  u32 8; printf 'GGUF'; u32 3
  u32 3
  str blk.2.attn_norm.weight; u32 0; u32 2; u64 4; u64 2; u64 32; hash32 2    # F32 [4,2]
  str blk.2.ffn_up.weight; u32 8; u32 2; u64 64; u64 3; u64 204; hash32 3     # Q8_0 [64,3]
  str blk.2.attn_q.weight; u32 12; u32 2; u64 256; u64 1; u64 144; hash32 4   # Q4_K [256,1]
  str ""; str ""                                                              # no CURVE keys
  u32 1                                                                       # the last is a spare
} >"$tmp"
frame load-segment 0x0201 11

{ u8 0; u32 3; u32 0; u32 1; u32 5; u32 1; u32 6; } >"$tmp"   # 6: a spare it has no room for
frame segment-status 0x0202 11
{ u8 1; u32 0; u32 0; } >"$tmp"
frame segment-ready 0x0202 11
{ u8 1; u32 1; u32 6; u32 0; } >"$tmp"                           # running; spare 6 still wanted
frame segment-ready-spares 0x0202 11

# data "abc"; xxh64("abc") = 0x44bc2cf5ad770999
{ u32 1; u64 100; u64 204; u64 0x44bc2cf5ad770999; str abc; } >"$tmp"
frame tensor-chunk 0x0203 12

# 2 tokens x n_embd 2, F32: 1, -2, 0.5, 65504
{ u32 2; token 0 0 0; token 5 17 1; u32 2; u8 0; u32 16
  u32 0x3f800000; u32 0xc0000000; u32 0x3f000000; u32 0x477fe000; } >"$tmp"
frame activation-f32 0x0301 13
# same as F16: 0x3c00 0xc000 0x3800 0x7bff
{ u32 2; token 0 0 0; token 5 17 1; u32 2; u8 1; u32 8; u16 0x3c00; u16 0xc000; u16 0x3800; u16 0x7bff; } >"$tmp"
frame activation-f16 0x0301 13

{ u8 0; u32 1; token 2 9 0; u32 3; u8 1; u32 6; u16 0x3800; u16 0xbc00; u16 0x4000; } >"$tmp"
frame result-hidden 0x0302 13
{ u8 1; u32 1; token 1 4 1; u32 3; u8 0; u32 12; u32 0x3dcccccd; u32 0xc0500000; u32 0x40e00000; } >"$tmp"
frame result-logits 0x0302 13
{ u8 2; u32 2; token 1 5 1; token 2 10 1; u32 31999; u32 0; } >"$tmp"
frame result-token-ids 0x0302 13

{ u32 12; } >"$tmp"
frame release-sequence 0x0303 14

# seq 7, temperature 0.8 (0x3f4ccccd), top_k 40, top_p 0.95 (0x3f733333), min_p 0.05 (0x3d4ccccd), seed
{ u32 7; u32 0x3f4ccccd; u32 40; u32 0x3f733333; u32 0x3d4ccccd; u64 0x0123456789abcdef; } >"$tmp"
frame sampling 0x0304 14
# greedy, every filter off: temperature 0, top_k 0, top_p 1.0, min_p 0, seed 0
{ u32 0; u32 0; u32 0; u32 0x3f800000; u32 0; u64 0; } >"$tmp"
frame sampling-greedy 0x0304 14

: >"$tmp"
frame stats-request 0x0401 15

# compute_ms 1234.5 = 0x40934a0000000000
{ u64 60000; u64 $((1 << 20)); u64 $((1 << 21)); u64 100; u64 99; u64 1; u64 4096; u64 $((512 << 20))
  u64 $((600 << 20)); u32 2; u32 3; u64 4096; u64 0x40934a0000000000; u32 4; u64 4096; u64 0; } >"$tmp"
frame stats 0x0402 15

{ u32 9; u32 2; u32 5; } >"$tmp"
frame kv-request 0x0501 16
# seq 9, unit 3, 2 positions x kv_dim 3; k, v: F16 bits [2][3], 12 bytes each
{ u32 9; u32 3; u32 2; u32 3
  u32 12; u16 0x3c00; u16 0xc000; u16 0x0001; u16 0x7bff; u16 0x8000; u16 0x1234
  u32 12; u16 0xabcd; u16 0x7c00; u16 0x7e01; u16 0x3555; u16 0x0400; u16 0xfbff; } >"$tmp"
frame kv-data 0x0502 16
# no positions: both blobs empty
{ u32 9; u32 0; u32 0; u32 8; u32 0; u32 0; } >"$tmp"
frame kv-data-empty 0x0502 16
{ u32 9; u32 3; u32 2; } >"$tmp"
frame kv-stored 0x0503 16
{ str "tcp://192.0.2.14:5601"; str ""; } >"$tmp"
frame join 0x0601 17
{ str "tcp://192.0.2.14:5601"; str "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"; } >"$tmp"
frame join-curve 0x0601 17

echo "wrote $(ls "$out" | wc -l) seeds to $out"
