#!/usr/bin/env bash
# Installs the Debian packages LinguaLinked needs to build, test and run (idempotent; skips
# apt-get entirely when everything is already there), and the npm client the serve tests use.
#   scripts/install-deps.sh          the native (x86-64) build
#   scripts/install-deps.sh --arm64  also the aarch64 cross build (make arm64): Debian's cross
#                                    compiler, qemu-user-static for its tests, and the arm64 -dev
#                                    libraries through multiarch (dpkg --add-architecture arm64)
set -euo pipefail
arm64=0
for a in "$@"; do
  case "$a" in
    --arm64) arm64=1 ;;
    *) echo "usage: $0 [--arm64]" >&2; exit 2 ;;
  esac
done
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
if ((arm64)); then
  pkgs+=(
    g++-aarch64-linux-gnu qemu-user-static
    # Header-only packages (cppzmq, nlohmann-json, CLI11) serve both architectures from above.
    libzmq3-dev:arm64 coinor-libcbc-dev:arm64 libicu-dev:arm64 libssl-dev:arm64
    libtomlplusplus-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64 libcpp-httplib-dev:arm64
    zlib1g-dev:arm64                      # -lz for coinutils (cbc.pc names it without a .pc of its own)
  )
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  if ((arm64)) && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
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
