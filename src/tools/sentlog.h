/* bettong send --sent-log FILE: giles' sent.txt, one line per record sent,
 * "<wall-clock ns>, <payload>", with the time the record's write happened (one
 * time for a whole batch, as giles logs it). The payload is what giles' data
 * source produced: the record without the 4-byte length the send mode put in
 * front of it (--binary --msg-size adds none, so its whole chunk is logged). */
#ifndef BETTONG_TOOLS_SENTLOG_H
#define BETTONG_TOOLS_SENTLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/source.h"

typedef struct {
    FILE *f;
    size_t header; /* bytes at the start of each record that are not logged */
    int failed;
} sentlog_t;

/* Truncates the file, as giles does with sent.txt. Returns 0 or -1 (err). A
 * NULL path makes a log that records nothing. */
int sentlog_open(sentlog_t *l, const char *path, size_t header, char *err, size_t errlen);
/* Wall-clock nanoseconds, the time giles logs (one reading per batch). */
uint64_t sentlog_now(void);
/* Log the span's records as sent at `at`. Returns 0 or -1 once writing failed. */
int sentlog_span(sentlog_t *l, const span_t *sp, uint64_t at);
/* Returns 0, or -1 when something could not be written. */
int sentlog_close(sentlog_t *l);

#endif
