/* An independent UTF-8 check for the harnesses to compare the store's
 * utf8_valid with: Python's "strict" rules (no overlong forms, no surrogates,
 * nothing above U+10FFFF), written as the table of well-formed byte sequences
 * in the Unicode standard (table 3-7) rather than by decoding code points. */
#ifndef FUZZ_UTF8_REF_H
#define FUZZ_UTF8_REF_H

#include <stddef.h>
#include <stdint.h>

static inline int utf8_ref(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t k;
        if (c <= 0x7f) { i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c == 0xe0) { k = 2; lo = 0xa0; }
        else if (c >= 0xe1 && c <= 0xec) k = 2;
        else if (c == 0xed) { k = 2; hi = 0x9f; }
        else if (c >= 0xee && c <= 0xef) k = 2;
        else if (c == 0xf0) { k = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) k = 3;
        else if (c == 0xf4) { k = 3; hi = 0x8f; }
        else return 0;
        if (n - i - 1 < k)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return 0;
        i += k + 1;
    }
    return 1;
}

#endif
