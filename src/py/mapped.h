/* Bytes objects whose bytes are a private mapping of a file (a memfd that
 * came from another process): a large result taken with no copy.
 *
 * Why: copying 100 MB out of a memfd into a new bytes object means faulting
 * in 100 MB of fresh memory, and on this kind of VM that is the costly part
 * (measured: 70-100 ms in 4 KiB pages, 280-320 ms in huge pages the guest has
 * not used lately), against ~5 ms to map the memfd's pages, which are already
 * there. A bytes object keeps its bytes inline, right after a 32-byte header,
 * so the file range is mapped one page early: the header goes at the end of
 * that page, which this process writes and so gets its own copy of
 * (MAP_PRIVATE), while the data pages stay the file's, shared with whoever
 * else maps them.
 *
 * Such an object is freed through Python's raw allocator (the object
 * allocator hands blocks above 512 bytes to it), which this module wraps: a
 * block it mapped is unmapped, a realloc of one moves to a normal block, and
 * everything else goes to the allocator that was there. When the object
 * allocator does not pass large blocks straight through (debug hooks:
 * PYTHONMALLOC=debug, -X dev), nothing is mapped and callers copy as before. */
#ifndef BETTONG_MAPPED_H
#define BETTONG_MAPPED_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Wrap the raw allocator (Python running; GIL held) once per process, and
 * check that the object allocator would free a mapped object through it.
 * Returns 1 when mapped_bytes can work, 0 when not. */
int mapped_install(void);

/* A new bytes object of the len bytes at [off, off + len) of fd, mapped
 * privately: no copy; the caller may close fd afterwards. off must be a
 * multiple of the page size and at least one page; byte off + len must be in
 * the file and 0 (the bytes object's terminating NUL). NULL without an
 * exception set when it cannot be done (not installed, or the mapping
 * failed): copy instead. GIL held. */
PyObject *mapped_bytes(int fd, uint64_t off, size_t len);

/* A new object exposing the first size bytes of fd, mapped privately
 * (copy-on-write, so writable: what is written stays in this process), as a
 * buffer (memoryview(obj)) and len(obj) == size; unmapped when it and every
 * view of it are gone. The receiver of an out-of-band file (pool/shm.h)
 * unpickles over views of it. NULL with an exception on failure. GIL held. */
PyObject *mapped_file(int fd, size_t size);

/* Objects made by mapped_bytes still alive (tests, metrics). */
size_t mapped_live(void);

#endif
