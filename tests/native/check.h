// The pass/fail tally the native test programs share: check() prints one line per failure, and
// report() prints "N passed, M failed" (the line CI reads) and gives the exit status.
#pragma once
#include <cstdio>
#include <string>

namespace bitnet_test {

inline int n_passed = 0, n_failed = 0;

inline void check(bool ok, const std::string &what) {
    if (ok) {
        ++n_passed;
    } else {
        ++n_failed;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

inline int report() {
    std::printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}

}  // namespace bitnet_test
