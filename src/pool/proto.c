/* The pool protocol's codec is net/wire.c; proto.h gives it the pool's names and
 * frame limit. What is left here are the checks that the limit and the message
 * numbering fit the wire format. */
#include "pool/proto.h"

#include <stdint.h>

_Static_assert(PROTO_MAX_FRAME <= UINT32_MAX, "a frame length is a u32");
_Static_assert(MSG_SKIP <= UINT8_MAX, "a message type is a u8");
