/* bettong send's command line: its own flags, Wallaroo 0.6.1 giles sender's
 * flags with giles' meaning, and the Pony runtime's (ignored, with a note). */
#ifndef BETTONG_TOOLS_SEND_ARGS_H
#define BETTONG_TOOLS_SEND_ARGS_H

#include "tools/send.h"

/* Parse the command line into o. Returns -1 to go on, or the exit code (0 after
 * --help, 2 on bad usage, with the message printed). Free o with
 * send_opts_free either way. */
int send_parse_args(int argc, char **argv, send_opts_t *o);
/* Does o use giles' batches (--batch-size, --interval or --vary-by)? */
int send_batched(const send_opts_t *o);
void send_opts_free(send_opts_t *o);

#endif
