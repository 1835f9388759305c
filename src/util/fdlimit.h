/* The open-file limit. Every connection is a descriptor: at the usual soft
 * limit of 1024, a flood of idle connections on one port would leave none for
 * the others (or for files), so the soft limit is raised to the hard one at
 * start. */
#ifndef BETTONG_FDLIMIT_H
#define BETTONG_FDLIMIT_H

/* Raise RLIMIT_NOFILE's soft limit to its hard limit (best effort); remembers
 * the limit before and after for fdlimit_describe. */
void fdlimit_raise(void);
/* The soft limit now (a large number when unlimited). */
unsigned long fdlimit_current(void);
/* "raised from A to B" or "B (already the hard limit)", for a log line. */
const char *fdlimit_describe(void);

#endif
