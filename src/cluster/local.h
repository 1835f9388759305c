/* `bettong run --workers N ...`: N worker processes on this machine as one
 * cluster. This parent process runs no Python: it makes the coordinator's
 * listening socket (handed to the first worker, so no port is guessed), a
 * random cluster secret (in the workers' environment, not on a command line),
 * starts the workers with the same arguments plus the cluster flags, passes
 * SIGINT/SIGTERM on (the first worker's coordinator then stops them together),
 * and reports a worker that dies. The workers share each --in port; a port 0
 * there is picked once, by this parent, and kept for them. */
#ifndef BETTONG_LOCAL_H
#define BETTONG_LOCAL_H

/* argv[0] is "run"; returns the exit code (the worst of the workers'). */
int local_cluster_run(int argc, char **argv, unsigned workers);

#endif
