/* The pool protocol's codec is net/wire.c; proto.h gives it the pool's names and
 * frame limit. What is left here are the checks that the limit and the message
 * numbering fit the wire format. */
#include "pool/proto.h"

#include <stdint.h>

_Static_assert(PROTO_MAX_FRAME <= UINT32_MAX, "a frame length is a u32");
_Static_assert(MSG_SKIP <= UINT8_MAX, "a message type is a u8");

void proto_bytes_pickle(uint8_t head[PROTO_BYTES_HEAD], uint8_t tail[PROTO_BYTES_TAIL],
                        uint32_t n)
{
    head[0] = 0x80; /* PROTO 5 */
    head[1] = 5;
    head[2] = 'B'; /* BINBYTES */
    for (int i = 0; i < 4; i++)
        head[3 + i] = (uint8_t)(n >> (8 * i));
    tail[0] = 0x94; /* MEMOIZE */
    tail[1] = '.';  /* STOP */
}
