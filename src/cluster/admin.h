/* `bettong cluster status|shrink --control H:P`: ask a running cluster's
 * coordinator, print its answer, exit with its code (status: 1 if a worker is
 * lost; shrink: 0 once the worker has left). */
#ifndef BETTONG_ADMIN_H
#define BETTONG_ADMIN_H

int cmd_cluster(int argc, char **argv);

#endif
