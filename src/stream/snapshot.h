/* One checkpoint's snapshot file: what a worker's state and source positions
 * were at checkpoint N, or (incremental) what changed since checkpoint N-1.
 * The file is a run of net/wire frames: a header, entries, and a trailer that
 * holds a CRC-32 of every byte before it; it is written to a temporary name,
 * fsynced and renamed, so a reader sees a whole file or detects a damaged one.
 * No Python here: entries carry pickles as opaque bytes (stream/stsnap.c makes
 * and applies them). */
#ifndef BETTONG_SNAPSHOT_H
#define BETTONG_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "net/wire.h"
#include "util/buf.h"

#define SNAP_MAGIC "BTSNAP01"
#define SNAP_MAX_ENTRY (0xffffffffu)

/* Entry types. */
#define SNAP_HEADER 'H'  /* magic, u64 n, u64 base, u8 full */
#define SNAP_STORE 'N'   /* u16 id, str16 name: a state store's id in this file */
#define SNAP_SLOT 'F'    /* u16 store, u16 slot, rest pickle(dict): the whole slot */
#define SNAP_DELTA 'D'   /* u16 store, rest pickle([slot, {key: state}, ...]): changed keys */
#define SNAP_SINGLE 'S'  /* u16 store, rest pickle(obj): a to_stateful object */
#define SNAP_STREAM 'R'  /* u64 position, str16 name: a resumable source */
#define SNAP_GEN 'G'     /* u16 pipeline, rest pickle(last value) */
#define SNAP_TRAILER 'Z' /* u64 bytes before the trailer, u32 crc32 of them */

typedef struct {
    uint64_t n;     /* checkpoint number */
    uint64_t base;  /* the full snapshot this one builds on (n itself if full) */
    int full;
    uint64_t size;  /* bytes in the file */
    uint32_t crc;   /* CRC-32 of the bytes before the trailer */
} snap_info_t;

/* Start a snapshot in b (cleared first): its header. */
void snap_begin(buf_t *b, uint64_t n, uint64_t base, int full);
/* Append the trailer and fill info (size, crc and the header's fields).
 * Returns 0, or -1 when memory ran out. */
int snap_finish(buf_t *b, snap_info_t *info);

/* DIR/ckpt-<n>.snap */
void snap_path(char *out, size_t outlen, const char *dir, uint64_t n);
/* Write b's bytes as checkpoint n's file: a temporary file, fsync, rename,
 * fsync of the directory. Returns 0, or -1 with the real cause in err (a
 * partial temporary file is removed). Safe on any thread. */
int snap_write_file(const char *dir, uint64_t n, const buf_t *b, char *err, size_t errlen);
/* Read and check checkpoint n's file: whole, magic, trailer and CRC, and the
 * size and CRC the catalog expects (when want is not NULL). On success b holds
 * the file and info its header's fields. Returns 0 or -1 with err set. */
int snap_read_file(const char *dir, uint64_t n, const snap_info_t *want, buf_t *b,
                   snap_info_t *info, char *err, size_t errlen);
/* Remove checkpoint n's file (missing is fine). */
void snap_remove_file(const char *dir, uint64_t n);

/* Walk the entries of a checked file (header and trailer skipped). */
typedef struct {
    const uint8_t *p, *end;
} snap_iter_t;

void snap_iter_init(snap_iter_t *it, const buf_t *b);
/* The next entry: its type and a reader of its fields. Returns 1, or 0 at the
 * end, or -1 on a malformed entry. */
int snap_next(snap_iter_t *it, uint8_t *type, wire_rd_t *fields);

#endif
