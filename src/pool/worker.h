/* `bettong worker`: a process that runs tasks for a pool.
 *
 * --connect ADDR (what the pool spawns): connect, the handshake, then run tasks with
 * embedded Python until the connection closes (wio.h: I/O threads; wrun.h:
 * the Python side). The main thread holds the GIL while it runs tasks and
 * releases it only while it waits for the next message.
 *
 * --join HOST:PORT (run by hand on a machine that lends its cores): a small
 * supervisor without Python (join.h). */
#ifndef BETTONG_WORKER_H
#define BETTONG_WORKER_H

int cmd_worker(int argc, char **argv);

#endif
