/* How one worker takes part in a cluster: the Wallaroo flags, resolved. */
#ifndef BETTONG_CLUSTER_CONFIG_H
#define BETTONG_CLUSTER_CONFIG_H

#include "cluster/cproto.h"

typedef struct {
    char name[CL_NAME_MAX];        /* this worker's name, unique in the cluster */
    int initializer;               /* --cluster-initializer: also runs the coordinator */
    unsigned worker_count;         /* the cluster forms once this many have joined */
    char control[CL_ADDR_MAX];     /* the coordinator's control address */
    int control_fd;                /* >= 0: the coordinator's socket, made by a parent */
    char my_control[CL_ADDR_MAX];  /* where this worker hears the coordinator */
    char my_data[CL_ADDR_MAX];     /* where this worker hears its peers (--data/--my-data) */
    cl_secret_t secret;
    unsigned timeout_ms;           /* silence after which a peer is lost */
    unsigned handshake_ms;         /* a connection not through the handshake by then is
                                      closed (0: CL_HANDSHAKE_MS) */
    double stop_timeout_s;         /* how long a cluster-wide stop may take */
    double rebalance_s;            /* how often the coordinator evens out the load (0: never) */
    /* --run-with-resilience: the coordinator starts a checkpoint every
     * checkpoint_interval_ns and keeps its record in resilience_dir/coordinator. */
    int resilience;
    char resilience_dir[4096];
    uint64_t checkpoint_interval_ns;
} cluster_config_t;

#endif
