#!/usr/bin/env bash
# Packs a cross-built lingua with every shared library it loads, for devices that lack them
# (Android under Termux, a bare arm64 board):
#
#   OUT/lingua            the binary, stripped; its DT_RPATH is $ORIGIN (set at link time), so the
#                         libraries beside it are found first, also those of its libraries
#   OUT/*.so*             its libraries, except glibc's
#   OUT/glibc/            glibc itself (the loader ld-linux-aarch64.so.1, libc.so.6, libm.so.6, ...)
#   OUT/lingua-glibc      a launcher for systems without glibc (Android's libc is Bionic): runs
#                         lingua through the bundled loader with only the bundled libraries
#
# usage: scripts/make-dist.sh LINGUA OUT [EMULATOR ARGS...]
#   EMULATOR (e.g. qemu-aarch64-static) runs the target's loader to list the libraries (ld.so --list);
#   an -L prefix among its arguments, if given, is searched first for each library.
set -euo pipefail
if (($# < 2)); then
  echo "usage: $0 LINGUA OUT [EMULATOR ARGS...]" >&2
  exit 2
fi
bin=$1
out=$2
shift 2
emulator=("$@")
prefix=""
for ((i = 0; i < ${#emulator[@]}; ++i)); do
  if [ "${emulator[$i]}" = "-L" ] && ((i + 1 < ${#emulator[@]})); then prefix=${emulator[$((i + 1))]}; fi
done

interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || { echo "make-dist: $bin has no program interpreter (static?)" >&2; exit 1; }
host_path() {  # a guest path as the emulator resolves it: the -L prefix first, then the host's own
  if [ -n "$prefix" ] && [ -e "$prefix$1" ]; then echo "$prefix$1"; else echo "$1"; fi
}

listing=$("${emulator[@]}" "$(host_path "$interp")" --list "$bin")
if grep -q "not found" <<<"$listing"; then
  echo "make-dist: unresolved libraries:" >&2
  grep "not found" <<<"$listing" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/glibc"
strip_cmd=${STRIP:-strip}
cp "$bin" "$out/lingua"
"$strip_cmd" "$out/lingua"
# glibc's own libraries must come from one build, with its loader: they go to glibc/ and are used
# only through lingua-glibc, never picked up through the RPATH next to another glibc.
is_glibc() {
  case "$1" in
    ld-linux-*.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
      libutil.so.* | libanl.so.* | libnss_*.so.*) return 0 ;;
    *) return 1 ;;
  esac
}
cp -L "$(host_path "$interp")" "$out/glibc/$(basename "$interp")"
n=0
while read -r path; do
  name=$(basename "$path")
  if is_glibc "$name"; then dest="$out/glibc/$name"; else dest="$out/$name"; fi
  cp -L "$(host_path "$path")" "$dest"
  chmod 644 "$dest"
  n=$((n + 1))
done < <(sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p' <<<"$listing")
chmod 755 "$out/glibc/$(basename "$interp")"
# glibc's name-service modules for numeric addresses and files (getaddrinfo loads them at run time).
for extra in libnss_files.so.2 libnss_dns.so.2; do
  for dir in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
    if [ -e "$(host_path "$dir/$extra")" ]; then cp -L "$(host_path "$dir/$extra")" "$out/glibc/$extra"; break; fi
  done
done

cat >"$out/lingua-glibc" <<LAUNCHER
#!/bin/sh
# Runs lingua with the glibc bundled beside it (for Android/Termux, whose libc is Bionic).
d=\$(cd "\$(dirname "\$0")" && pwd)
exec "\$d/glibc/$(basename "$interp")" --inhibit-cache --library-path "\$d/glibc:\$d" "\$d/lingua" "\$@"
LAUNCHER
chmod 755 "$out/lingua-glibc"
echo "make-dist: $out: lingua, $n libraries ($(du -sh "$out" | cut -f1))"
