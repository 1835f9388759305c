/* Signal dispositions of a child process between fork and exec (or in a
 * child that will not exec). */
#ifndef BETTONG_SIGRESET_H
#define BETTONG_SIGRESET_H

/* Every handled signal back to the default, as exec would do: ignored signals
 * stay ignored. Async-signal-safe. For a child whose parent's handlers (libuv's,
 * Python's, which write to pipes shared with the parent) must never run in it. */
void sig_reset_handlers(void);

#endif
