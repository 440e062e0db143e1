# Cross-compile for 64-bit Arm Linux (phones under Termux, single-board computers) with Debian's
# cross compiler (g++-aarch64-linux-gnu) and multiarch libraries (dpkg --add-architecture arm64;
# libzmq3-dev:arm64, coinor-libcbc-dev:arm64, ...). Test binaries run under qemu-aarch64-static.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# Libraries and headers come from the host's multiarch tree (/usr/lib/aarch64-linux-gnu, /usr/include);
# programs (protoc-like tools, pkg-config) from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
# Test binaries (ctest, gtest discovery) run under user-mode qemu. The arm64 loader and libc come
# from the multiarch libc6:arm64 (/lib/ld-linux-aarch64.so.1, /lib/aarch64-linux-gnu), which the
# arm64 -dev packages pull in, so no -L prefix: qemu 7.2 with `-L /usr/aarch64-linux-gnu` hangs in
# the first pthread_create of a dynamically linked program (seen on Debian 12's 7.2+dfsg-7).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
