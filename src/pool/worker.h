/* `bettong worker`: a process that runs tasks for a pool.
 *
 * --connect ADDR: one worker process with the binary's embedded Python
 * (wproc.h; by hand, or what the pool starts when python3 cannot host its
 * workers: spawn.h).
 *
 * --join HOST:PORT (run by hand on a machine that lends its cores): a small
 * supervisor without Python (join.h). */
#ifndef BETTONG_WORKER_H
#define BETTONG_WORKER_H

int cmd_worker(int argc, char **argv);

#endif
