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
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /usr/aarch64-linux-gnu)
