/* bettong send --resumable: the client side of the resumable source protocol of
 * docs/resilience.md (hello, 'R' resume position, 'A' acknowledgements, 'E'
 * refusal), with reconnects and resends from the engine's position. */
#ifndef BETTONG_TOOLS_RSEND_H
#define BETTONG_TOOLS_RSEND_H

#include <stdint.h>
#include <sys/socket.h>

#include "tools/send.h"

/* Send records [0, total) of the input (record i is r's record i mod r->n) to
 * addr, resuming after every drop, and wait for them to be acknowledged.
 * Prints the summary. Returns the exit code: 0 all acknowledged (or
 * --ack-timeout 0), 1 gave up (connecting, or waiting for acknowledgements),
 * 2 the engine refused the stream. */
int rsend_run(const send_opts_t *o, const records_t *r, uint64_t total,
              const struct sockaddr_storage *addr);

#endif
