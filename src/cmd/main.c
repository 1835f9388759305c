/* bettong: one binary, one subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "cluster/admin.h"
#include "pool/pool.h"
#include "pool/worker.h"
#include "store/store.h"
#include "cluster/runcl.h"
#include "tools/tools.h"
#include "tools/top.h"
#include "util/fdlimit.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bettong COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  run       run a Wallaroo-API streaming application (bettong run --help)\n"
            "  send      send framed records to a TCP address (bettong send --help)\n"
            "  receive   listen and write what arrives (bettong receive --help)\n"
            "  pool      run a task pool for parallel functions (bettong pool --help)\n"
            "  worker    run a pool's tasks, or lend this machine's cores to a pool\n"
            "            (bettong worker --help)\n"
            "  store     run the persistent-object data service (bettong store --help)\n"
            "  cluster   ask a running stream cluster: status, shrink, shutdown\n"
            "            (bettong cluster --help)\n"
            "  top       a terminal view of running services' metrics\n"
            "            (bettong top --help)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* Every connection is a descriptor; the listeners log the limit. */
    fdlimit_raise();
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "send") == 0)
        return cmd_send(argc - 1, argv + 1);
    if (strcmp(cmd, "receive") == 0)
        return cmd_receive(argc - 1, argv + 1);
    if (strcmp(cmd, "pool") == 0)
        return cmd_pool(argc - 1, argv + 1);
    if (strcmp(cmd, "worker") == 0)
        return cmd_worker(argc - 1, argv + 1);
    if (strcmp(cmd, "cluster") == 0)
        return cmd_cluster(argc - 1, argv + 1);
    if (strcmp(cmd, "top") == 0)
        return cmd_top(argc - 1, argv + 1);
    if (strcmp(cmd, "store") == 0)
        return cmd_store(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "bettong: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
