/* bettong send's input held in memory: the records of one or more files back to
 * back, each exactly as it goes on the wire, read the way Wallaroo's giles
 * sender reads them (lines, frames, fixed-size chunks), so the send loops only
 * hand large spans of a ready buffer to send(). */
#ifndef BETTONG_TOOLS_RECORDS_H
#define BETTONG_TOOLS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

/* Records framed back to back: record i is data[off[i] .. off[i+1]). */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t *off;
    size_t n;
} records_t;

typedef enum {
    /* One record per line, framed with a 4-byte big-endian length. As giles
     * (Pony's FileLines): lines end at '\n', a '\r' before it goes too, a last
     * line without '\n' still counts, and empty lines are skipped. */
    REC_LINES,
    /* An already framed file, every frame sent as it is (empty ones too). */
    REC_FRAMED,
    /* giles' --binary --msg-size N: N raw bytes at a time, the last chunk of a
     * file possibly shorter; nothing is added or checked. */
    REC_FIXED,
    /* giles' --binary --variable-size: frames, sent with their length again;
     * giles drops an empty frame (it skips an empty message). */
    REC_VARIABLE,
} rec_format;

/* Load the files in order (path "-" is stdin) into r. For REC_FIXED, msg_size
 * is the chunk size. Anything worth telling that does not stop the send (a
 * file that is no multiple of the chunk size ...) goes to `note` ("" if
 * nothing). Returns 0, or -1 with a message in err. */
int records_load(const char *const *paths, size_t npaths, rec_format fmt, size_t msg_size,
                 records_t *r, char *note, size_t notelen, char *err, size_t errlen);
void records_free(records_t *r);
/* Repeat a small input in memory until it is at least `min_len` bytes, so that a
 * one-line file still goes out in big writes. Returns 0 or -1 (out of memory). */
int records_replicate(records_t *r, size_t min_len);
/* The largest j in (pos, hi] with off[j] - off[pos] <= limit, but at least pos + 1. */
size_t records_last_within(const records_t *r, size_t pos, size_t hi, size_t limit);

#endif
