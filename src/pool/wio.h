/* A worker process's connection to its pool, with no Python in it.
 *
 * After the handshake (wio_connect, wio_hello: the pool must prove it knows the
 * secret before any of its frames is read) two threads run: a reader that
 * cuts frames off the blocking socket and queues FUNCDEF / FUNCDROP / TASK for
 * the main thread, and a writer that sends the DONE frames the main thread
 * queues, as many as have piled up per write (so quick tasks share writes and
 * a slow task never holds back the previous result).
 *
 * The main thread takes one message at a time, so a TASK still in the queue
 * has not started: a SKIP for it (handled by the reader itself) removes it and
 * answers DONE(CALL_CANCELLED) at once, even while a long task runs.
 *
 * The pool stops a stuck call by closing the connection: when the reader sees
 * EOF or an error (or the writer cannot write) the process exits at once with
 * _exit(0), whatever the main thread is doing. A frame the worker cannot make
 * sense of ends the process too (status 1, with a log line): the connection is
 * all a worker has. */
#ifndef BETTONG_WIO_H
#define BETTONG_WIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Exit statuses of `bettong worker --connect`, read by the join supervisor. */
#define WORKER_EXIT_OK 0          /* the pool closed the connection */
#define WORKER_EXIT_ERROR 1       /* anything else that went wrong */
#define WORKER_EXIT_NO_CONNECT 3  /* could not connect / no answer to the handshake */
#define WORKER_EXIT_REFUSED 4     /* the pool refused us (version, stopping, proof) */
#define WORKER_EXIT_UNPROVEN 5    /* the pool could not prove the secret: not ours */

typedef struct wmsg {
    struct wmsg *next;
    uint8_t type;        /* MSG_FUNCDEF, MSG_FUNCDROP or MSG_TASK (SKIP never queued;
                            a TASK_FD is queued as a TASK) */
    uint64_t id;         /* task_id (TASK) or func_gid */
    uint64_t gid;        /* TASK: func_gid */
    const uint8_t *payload;
    size_t len;
    int fd;              /* TASK_FD: the payload's memfd (pool/shm.h), checked, to
                            read with pread (payload NULL, len its size); closed
                            by wio_msg_free. -1 otherwise */
    uint8_t body[];      /* the frame body the fields point into */
} wmsg_t;

/* Connect (net/bconn.h) to "unix:PATH", "host:port" or "tls:host:port"
 * (TLS 1.3), within 30 s. Returns 0 or -1 with err. */
int wio_connect(const char *addr, char *err, size_t errlen);
/* The handshake (net/auth.h, keyed with secret; "" for none) as worker `name`
 * near store backend `near` (NULL: none), within 30 s. Returns 0 (WELCOME: *peer_id set), WORKER_EXIT_REFUSED (the
 * reason in err), WORKER_EXIT_UNPROVEN (the pool could not prove the secret, or
 * does not speak the handshake: nothing it sent was read, let alone unpickled),
 * WORKER_EXIT_NO_CONNECT or WORKER_EXIT_ERROR. Bytes read past WELCOME are kept
 * for wio_start's reader. */
int wio_hello(const char *addr, const char *name, const char *near, const char *secret,
              uint32_t *peer_id, char *err, size_t errlen);
/* Start the reader and writer threads on the connection. Returns 0 or -1. */
int wio_start(char *err, size_t errlen);

/* The next message. With wait, blocks until there is one; without, returns
 * NULL if there is none. */
wmsg_t *wio_take(int wait);
void wio_msg_free(wmsg_t *m);

/* Queue a DONE frame. The payload is copied, unless `pin` is given: then it is
 * written from where it lies and `pin` comes back through wio_released once
 * written (the caller keeps it alive until then). Returns 0, or -1 if the
 * frame would exceed PROTO_MAX_FRAME or memory ran out (nothing queued; the
 * caller still owns `pin`). */
int wio_done(uint64_t task_id, uint8_t status, uint64_t started_us, uint64_t finished_us,
             const void *payload, size_t len, void *pin);
/* The same for a payload sent between a few bytes of its own (head and tail,
 * up to 64 bytes together, copied): head, payload, tail make the DONE payload.
 * A large result that is a bytes object goes out this way, wrapped in the
 * opcodes of its pickle, written from the bytes object itself. */
int wio_done_wrapped(uint64_t task_id, uint8_t status, uint64_t started_us,
                     uint64_t finished_us, const void *head, size_t hlen, const void *payload,
                     size_t len, void *pin, const void *tail, size_t tlen);
/* A successful result pickled with out-of-band buffers: parts[0] the pickle,
 * parts[1..nparts) the buffers (at most SHM_OOB_MAX), written as an
 * out-of-band file (pool/shm.h) from where they lie; `pin` keeps them alive
 * and comes back through wio_released. Only on a connection that passes
 * descriptors (wio_passes_fds). Returns 0, or -1 (nothing queued; the
 * caller still owns `pin`). */
int wio_done_parts(uint64_t task_id, uint8_t status, uint64_t started_us, uint64_t finished_us,
                   const struct iovec *parts, int nparts, void *pin);
/* Whether large payloads go to the pool as memfds (its WELCOME said so). */
int wio_passes_fds(void);
/* Pins whose bytes were written: call release(pin) for each (main thread). */
void wio_released(void (*release)(void *pin));

#endif
