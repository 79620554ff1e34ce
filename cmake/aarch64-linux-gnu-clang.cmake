# aarch64-linux-gnu.cmake with clang (the compiler CMakeLists prefers on the host) in place of
# aarch64-linux-gnu-g++. clang targets aarch64 itself; it takes the headers, libstdc++ and the
# linker from Debian's GNU cross toolchain, so g++-aarch64-linux-gnu is needed all the same.
find_program(BITNET_CROSS_CLANGXX NAMES clang++-19 clang++-18 clang++-17 clang++ REQUIRED)
set(CMAKE_CXX_COMPILER ${BITNET_CROSS_CLANGXX})
set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/aarch64-linux-gnu.cmake)
