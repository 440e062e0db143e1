#!/usr/bin/env bash
# Writes a seed corpus for fuzz_serve_request into OUT_DIR: request bodies for both endpoints (the
# first byte picks the endpoint: even = /v1/completions, odd = /v1/chat/completions).
#
# Usage: fuzz/make_serve_seeds.sh OUT_DIR
set -euo pipefail
out=${1:?usage: make_serve_seeds.sh OUT_DIR}
mkdir -p "$out"
seed() { printf '%s%s' "$2" "$3" >"$out/$1"; }
seed completion-min 0 '{"prompt":"Once upon a time"}'
seed completion-all 0 '{"model":"m","prompt":["Once"],"max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":42,"stop":["a","bb"],"n":1,"stream":true,"stream_options":{"include_usage":true},"top_k":5,"min_p":0.1,"repeat_penalty":1.1,"user":"u","frequency_penalty":0,"presence_penalty":0,"logit_bias":{},"echo":false,"best_of":1,"logprobs":null,"suffix":null}'
seed completion-bad 0 '{"prompt":1,"n":2,"max_tokens":-1,"stop":[1]}'
seed chat-min 1 '{"messages":[{"role":"user","content":"Hi"}]}'
seed chat-all 1 '{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}],"name":"a"},{"role":"assistant","content":"Hi."},{"role":"developer","content":"x"}],"max_tokens":3,"max_completion_tokens":9,"response_format":{"type":"text"},"logprobs":false,"top_logprobs":null,"stream":false}'
seed chat-bad 1 '{"messages":[{"role":"tool","content":5,"tool_calls":[]}],"response_format":{"type":"json_object"}}'
seed deep 0 '{"prompt":"a","user":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}'
seed escapes 1 '{"messages":[{"role":"user","content":"\u00e9\ud83d\ude00 \"q\" \\ <|im_start|>"}]}'
