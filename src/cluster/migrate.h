/* A slot's state on the wire, for the slot's move to a new owner (CL_STATE):
 * u16 slot, u16 n, then per store holding something for the slot: str16 store
 * name, u8 kind (1: the slot's dict key -> state, 2: the to_stateful object, 0:
 * it could not be serialized and is lost), u32 length, the serialized form (the
 * application's serialize, pickle by default). Stores are matched by name, so
 * both workers must run the same application. */
#ifndef BETTONG_MIGRATE_H
#define BETTONG_MIGRATE_H

#include "net/wire.h"
#include "stream/app.h"
#include "util/buf.h"

/* With GIL. Take the slot's state out of every store and append one whole
 * CL_STATE frame to out. Returns 0, or -1 if the frame would be too large (the
 * state is lost; the caller logs). */
int migrate_put_slot(app_t *app, buf_t *out, unsigned slot);
/* With GIL. Install a CL_STATE frame's fields (r is past the type). A part that
 * cannot be installed is logged and lost. Returns 0, or -1 if the frame is
 * malformed. */
int migrate_install(app_t *app, wire_rd_t *r);
/* With GIL. Drop the state of every slot for which owned(ctx, slot) is false. */
void migrate_drop_unowned(app_t *app, int (*owned)(const void *ctx, unsigned slot),
                          const void *ctx);

#endif
