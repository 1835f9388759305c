/* Accounting of exceptions raised by user code. The first occurrence of each
 * distinct error (where it was raised: step, exception type, file and line; for
 * an exception raised in C, with no Python frame, its text instead) is
 * logged with its full traceback; repeats are only counted, and summarised at most
 * every few seconds and at exit, so a bad message stream cannot flood the log. */
#ifndef BETTONG_PYERR_H
#define BETTONG_PYERR_H

#include <stdint.h>

/* With GIL and an exception set: log or count it, then clear it. `where` names the
 * step or callback ("computation 'split'", "encoder", ...). */
void pyerr_report(const char *where);
/* Log repeats counted since the last summary (rate-limited unless `force`). */
void pyerr_summary(int force);
uint64_t pyerr_total(void);
/* Forget everything (tests). */
void pyerr_reset(void);

#endif
