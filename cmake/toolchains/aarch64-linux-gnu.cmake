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
# The loader must come from the same glibc as libc.so.6. The libraries are the multiarch ones
# (libc6:arm64, pulled in by every -dev:arm64 package), so is the loader: /lib/ld-linux-aarch64.so.1
# on the host root. `-L /usr/aarch64-linux-gnu` would pair the cross package's older ld.so
# (libc6-arm64-cross) with the multiarch libc.so.6, and pthread_create then spins forever in ld.so's
# thread-stack list (GLIBC_PRIVATE layouts differ between the two builds).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /)
