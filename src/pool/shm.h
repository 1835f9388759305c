/* Large payloads on a local pool: shared memory handed over the Unix socket.
 *
 * A payload of at least SHM_MIN bytes that goes between processes of one
 * machine (a worker, the pool, a client on the pool's Unix socket) is written
 * once into a memfd, sealed so that it can neither change nor shrink, and only
 * the descriptor travels: as SCM_RIGHTS ancillary data on the first byte of a
 * small frame that says "the payload is in the attached descriptor, N bytes"
 * (pool/proto.h: DONE_FD, RESULT_FD). The pool passes the descriptor on
 * without touching the bytes; the receiver checks the size and the seals
 * (shm_check) and reads the bytes where they are needed (shm_read), then
 * closes it. The kernel frees the memory when the last descriptor closes, so a
 * process that dies mid-transfer leaks nothing.
 *
 * Descriptors come ahead of or with their frames, never after (the kernel
 * delivers SCM_RIGHTS with the first byte of the sendmsg that carried them),
 * and are taken in order: the receiver keeps them in a small FIFO (shm_fdq_t,
 * at most SHM_MAX_PENDING); a peer that sends more than that without the
 * frames that take them is not speaking the protocol. */
#ifndef BETTONG_SHM_H
#define BETTONG_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Payloads at least this large go through a memfd where both ends can. */
#define SHM_MIN (1024 * 1024)
/* Descriptors a connection may have received ahead of the frames that take
 * them. */
#define SHM_MAX_PENDING 8
/* The environment variable that turns the memfd path off (1: off) in the
 * process that would send: to compare with the socket path. */
#define SHM_ENV_OFF "BETTONG_NO_SHM"

/* A new memfd of size bytes (close-on-exec, sealable, not yet sealed), its
 * pages allocated now with prealloc (fallocate) or as written. Returns the
 * descriptor or -1 with errno set. */
int shm_new(size_t size, int prealloc);
/* A sealed memfd holding the iovecs' bytes, one after the other (total of
 * them). Returns the descriptor (close-on-exec) or -1 with errno set. */
int shm_create(const struct iovec *iov, int n, size_t total);
/* The same into fd, a memfd of exactly `total` bytes not sealed yet (from
 * pool/shmspare.h): writes the iovecs and seals it. Returns 0, or -1 with
 * errno (fd is still the caller's either way). */
int shm_fill(int fd, const struct iovec *iov, int n);
/* Seal fd against every change, as shm_fill does (0 if it is sealed so
 * already), or -1 with errno. */
int shm_seal(int fd);
/* Whether fd is a payload this module made: a regular file of exactly `size`
 * bytes sealed against writes, shrinking and growing. Returns 0, or -1 with
 * the reason in why. */
int shm_check(int fd, uint64_t size, char *why, size_t whylen);
/* Read n bytes at off of fd into dst (all of them). Returns 0 or -1. */
int shm_read(int fd, uint64_t off, void *dst, size_t n);
/* A read-only shared mapping of the first size bytes of fd, its pages mapped
 * at once. NULL on failure. Unmap with munmap(p, size). */
void *shm_map(int fd, size_t size);
/* 1 unless SHM_ENV_OFF is set to a non-empty value other than "0". */
int shm_enabled(void);

/* A successful call's bytes result as an "object file": the memfd laid out
 * so that the receiver can map the bytes as its own bytes object with no
 * copy (py/mapped.h). Page 0 begins with SHM_OBJ_MAGIC and the bytes' length
 * (u64 little-endian), the rest of it zeros; the bytes start at SHM_OBJ_DATA;
 * one 0 byte follows them and ends the file. Every other successful payload
 * is a pickle, and no pickle begins with a 0 byte, so the first bytes tell
 * the two apart. The pool passes them on, or sends their content to a peer
 * without descriptors (a result: as the pickle of the bytes).
 *
 * Two uses: a worker's result that is one bytes object (DONE_FD), and a
 * call whose arguments are one bytes object, ((b,), {}) (CALLS_FD, then
 * TASK_FD; a worker reached over TCP gets the file's content as TASK's
 * payload and reads it the same way). */
#define SHM_OBJ_DATA 4096
#define SHM_OBJ_HEAD 16
#define SHM_OBJ_MAGIC "\0BTGOBJ1"
/* The first SHM_OBJ_HEAD bytes of the object file of len bytes. */
void shm_obj_head(uint8_t head[SHM_OBJ_HEAD], uint64_t len);
/* The four pieces of the object file of data[0..len), written with
 * shm_fill (head is the caller's, filled here). Returns the file's size. */
size_t shm_obj_iov(struct iovec iov[4], uint8_t head[SHM_OBJ_HEAD], const void *data, size_t len);
/* Whether a file of `size` bytes that begins with head[0..n) is an object
 * file whose size matches its length: 1 and *len, or 0. */
int shm_obj_parse(const uint8_t *head, size_t n, uint64_t size, uint64_t *len);

/* A successful call's result pickled with out-of-band buffers (pickle
 * protocol 5's buffer_callback: a numpy array's data, a PickleBuffer) as an
 * "out-of-band file", so that the receiver unpickles it over a private
 * mapping of the file (pickle.loads(..., buffers=...)) with no copy. Page 0:
 * SHM_OOB_MAGIC, u32 the number of buffers, u32 0, u64 the pickle's offset,
 * u64 its length, then each buffer's u64 offset and u64 length (all
 * little-endian); the pickle at SHM_OBJ_DATA; each buffer at the next page
 * boundary after the one before. Told apart from a pickle (and an object
 * file) by its first bytes. The pool passes it on as it is, or sends its
 * bytes to a peer without descriptors, which reads the same layout. */
#define SHM_OOB_MAGIC "\0BTGOOB1"
/* The most buffers a file's page 0 lists; a result with more is pickled
 * in-band. */
#define SHM_OOB_MAX ((SHM_OBJ_DATA - 32) / 16)
/* The pieces of the out-of-band file of parts[0] (the pickle) and parts[1..n)
 * (the buffers, at most SHM_OOB_MAX): page 0 written into head, out[] (room
 * for 2 * n pieces) filled. Returns the file's size; *nout is set. */
size_t shm_oob_iov(uint8_t head[SHM_OBJ_DATA], const struct iovec *parts, int n,
                   struct iovec *out, int *nout);

/* Send p[0..n) on the Unix socket sock with fd attached to its first byte;
 * MSG_NOSIGNAL, and flags (MSG_DONTWAIT, ...). Returns the bytes sent (at
 * least 1 means the descriptor went with them) or -1 with errno. */
ssize_t shm_send_fd(int sock, const void *p, size_t n, int fd, int flags);

/* Received descriptors, oldest first. */
typedef struct {
    int fds[SHM_MAX_PENDING];
    unsigned head, n;
    int overflow; /* more came than fit (they were closed): a broken peer */
    int lost;     /* some could not be received (the open-file limit?) */
} shm_fdq_t;

void shm_fdq_init(shm_fdq_t *q);
/* The oldest descriptor (now the caller's), or -1 if there is none. */
int shm_fdq_pop(shm_fdq_t *q);
/* Close every descriptor in the queue. */
void shm_fdq_close(shm_fdq_t *q);
/* recv(2) on the Unix socket sock that also takes SCM_RIGHTS descriptors
 * (close-on-exec) into q; those beyond its room are closed and set
 * q->overflow; descriptors the kernel could not hand over (MSG_CTRUNC: no
 * room in this process's descriptor table) set q->lost. Returns as recv. */
ssize_t shm_recv(int sock, void *p, size_t n, int flags, shm_fdq_t *q);

#endif
