// <immintrin.h> for the x86 kernel files. GCC 12's AVX-512 headers trip its own
// -W(maybe-)uninitialized on their `__Y = __Y` placeholders (GCC bug 105593, fixed in GCC 13):
// the warnings are about the headers, not us, so they are silenced for the include alone.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
