# Cross-compiling for 64-bit ARM Linux with Debian's GNU cross toolchain
# (apt-get install g++-aarch64-linux-gnu; its libc comes as libc6-arm64-cross):
#
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#
# (aarch64-linux-gnu-clang.cmake beside it: the same with clang.) The binaries run on an aarch64
# machine, or on this one under qemu-user: CMAKE_CROSSCOMPILING_EMULATOR lets ctest start them
# through `qemu-aarch64 -L /usr/aarch64-linux-gnu`, the -L prefix being where the emulated
# program's dynamic loader and libc live. tests/cross/run_neon_qemu.sh does it all.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BITNET_CROSS_SYSROOT /usr/aarch64-linux-gnu)
if(NOT CMAKE_CXX_COMPILER)
  set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
endif()

# Headers and libraries from the target's tree only; programs (the build's tools) from the host.
set(CMAKE_FIND_ROOT_PATH ${BITNET_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(BITNET_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(BITNET_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${BITNET_QEMU_AARCH64} -L ${BITNET_CROSS_SYSROOT})
endif()
