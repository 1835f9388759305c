/* The `bettong run` command: above both the stream engine and the cluster. It
 * parses the engine's flags (stream/run.c) together with the cluster's, and
 * decides how this process runs: as the parent of `--workers N` local
 * workers (local.c), as a member of a cluster (registering the cluster's ops
 * table with the engine), or as a worker on its own. */
#ifndef BETTONG_RUNCL_H
#define BETTONG_RUNCL_H

int cmd_run(int argc, char **argv);

#endif
