/* Wallaroo's external channel (--external H:P): a TCP port on which a worker
 * takes operators' messages. The one acted on is the clean shutdown (what
 * Wallaroo's `cluster_shutdown H:P` sends, and `bettong cluster shutdown
 * --external H:P`): the worker stops, and in a cluster it asks the coordinator
 * to stop every worker together (each flushes its sinks and exits 0).
 *
 * Frames, both of Wallaroo's versions (told apart by the first byte after the
 * length, which is 0x00 for 0.6 message ids and 0x01 for 0.4's type tag):
 *   0.6: u32 BE length (= 2 + n), u16 BE id, n bytes of payload
 *        (1 Print, 3 CleanShutdown; lib/wallaroo_labs/messages at 0.6.1)
 *   0.4: u32 BE length (= 7 + n), u8 1, u16 BE id, u32 BE n, n bytes
 *        (11 Print, 13 CleanShutdown; the same file at 0.4.x)
 * The payload of a CleanShutdown is an optional reason (UTF-8); a Print's is
 * logged. Any other message is refused (logged, the connection closed):
 * nothing is accepted and ignored. After a CleanShutdown the worker closes
 * the connection, so a client that waits for the end of the stream knows it
 * was taken.
 *
 * Who may talk: the channel listens where it is told (loopback unless given
 * another address, which needs the cluster secret). A peer on loopback may
 * send Wallaroo's frames at once, as Wallaroo's tools do. Any other peer must
 * first pass the handshake of net/auth.h for the service "external", keyed
 * with the cluster secret; the channel then answers a frame of one byte,
 * EXT_WELCOME, or EXT_REFUSED + str16 why, and closes. A frame from such a
 * peer before that is refused. */
#ifndef BETTONG_EXTERNAL_H
#define BETTONG_EXTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define EXT_SERVICE "external"
#define EXT_WELCOME 4
#define EXT_REFUSED 5
#define EXT_MAX_FRAME 65536u
#define EXT_HANDSHAKE_MS 10000 /* a peer beyond loopback proves the secret by then */

/* Wallaroo's message ids. */
enum { EXT06_PRINT = 1, EXT06_CLEAN_SHUTDOWN = 3, EXT04_PRINT = 11, EXT04_CLEAN_SHUTDOWN = 13 };

/* A Wallaroo external frame's body (what follows its u32 length), either
 * version: 0 with *version (4 or 6), *id and the payload (pointing into
 * body), or -1 if it is neither. */
int external_decode(const uint8_t *body, size_t len, int *version, unsigned *id,
                    const uint8_t **payload, size_t *n);

typedef struct external external_t;

typedef struct {
    const char *addr;       /* H:P, or a bare port for 127.0.0.1 */
    const char *secret;     /* for peers beyond loopback (len 0: loopback only) */
    size_t secret_len;
    /* A clean shutdown came (reason: its payload, maybe ""). */
    void (*shutdown)(void *ctx, const char *reason);
    void *ctx;
} external_config_t;

/* Listen (and log the address bound). Returns 0, or -1 with err set; either
 * way *out (NULL only when out of memory) is to be closed and freed. cfg's
 * strings are kept by reference. */
int external_start(external_t **out, uv_loop_t *loop, const external_config_t *cfg, char *err,
                   size_t errlen);
/* The address bound (the real port). */
const char *external_address(const external_t *x);
/* Close the listener and its connections (the loop then ends without them). */
void external_close(external_t *x);
/* After the loop ended. */
void external_free(external_t *x);

#endif
