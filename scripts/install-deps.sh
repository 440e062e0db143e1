#!/usr/bin/env bash
# Installs the Debian packages LinguaLinked needs to build, test and run (idempotent; skips
# apt-get entirely when everything is already there).
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config git
  clang lld libclang-rt-14-dev            # libFuzzer target and sanitizers
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev libtomlplusplus-dev libcpp-httplib-dev
  libzmq3-dev cppzmq-dev coinor-libcbc-dev
  libssl-dev                              # libcrypto SHA-256 (SHA-NI / ARMv8 crypto) for tensor hashes
  libicu-dev                              # Unicode character classes for BPE pre-tokenizers
  nodejs                                  # the openai npm client test of `lingua serve`
  chromium                                # the headless check of the cluster page
)
# npm: Debian's package, unless a nodejs that bundles it (e.g. NodeSource's, which conflicts with
# Debian's npm) is already installed.
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The openai client for tests/e2e/openai_client, at the versions in its package-lock.json (from the
# npm registry; skipped when already there).
client_dir="$(dirname "$0")/../tests/e2e/openai_client"
if [ ! -f "$client_dir/node_modules/openai/package.json" ]; then
  echo "npm ci in tests/e2e/openai_client"
  (cd "$client_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
