/* Wallaroo 0.6 applications: the tree that wallaroo.build_application()
 * returns, (app_name, root_idx, vs, es), compiled onto the engine's linear
 * pipelines (stream/app.h).
 *
 * vs[i] lists the stages of node i: a leaf starts with ("source", name,
 * config); a merge node (es[i] names its two inputs) holds the stages after
 * the merge; the root ends with ("to_sink", config) or ("to_sinks", [configs]).
 * Each leaf becomes one pipeline whose steps are the stages from that leaf up
 * to the root. A merge is thus two pipelines that go on with the same steps:
 * a state computation after it has one store (named after its place in the
 * tree) that both pipelines' steps use, and the same sinks. key_by becomes a
 * STEP_KEY_BY that sets the stream's key, collect() one with a constant key,
 * and to_sinks a pipeline with several outputs. Sources run on the cluster's
 * initializer only, as in Wallaroo 0.6.1.
 *
 * wallaroo.experimental's connectors: a "source_connector" is a TCP source of
 * connector frames (net/frame.h) on the config's host:port, a "sink_connector"
 * a sink every worker connects to whose outputs are connector frames; with
 * stream_message_decoder/encoder the framing is done in C and the user's
 * functions see only the payload. */
#ifndef BETTONG_GRAPH_H
#define BETTONG_GRAPH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/app.h"

/* Whether application_setup() returned build_application()'s tuple. */
int graph_is_description(PyObject *desc);

/* With GIL. Fill app (zeroed; its module already set) from the tree. Returns 0,
 * or -1 with a message in err (what was made is freed by app_free). */
int graph_load(app_t *app, PyObject *desc, uint64_t max_frame, char *err, size_t errlen);

#endif
