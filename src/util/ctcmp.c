#include "util/ctcmp.h"

#include <stdint.h>

int ct_equal(const void *secret, size_t secret_len, const void *given, size_t n)
{
    const uint8_t *s = secret, *g = given;
    unsigned diff = (unsigned)(n != secret_len);
    for (size_t i = 0; i < secret_len; i++)
        diff |= (unsigned)s[i] ^ (unsigned)(i < n ? g[i] : 0);
    return diff == 0;
}
