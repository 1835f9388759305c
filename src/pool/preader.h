/* A file-like Python object over a payload's memfd (pool/shm.h), for
 * pickle.load: the worker unpickles a TASK_FD's arguments straight from the
 * descriptor, and a large bytes object in them is read with one pread(2) into
 * the bytes object the unpickler makes (its readinto), with no mapping.
 *
 * Why not a mapping: on a VM each 4 KiB page a process first touches through a
 * new page-table entry costs a trap (the memfd's pages are 4 KiB: shared
 * memory gets no transparent huge pages by default), while the kernel's copy
 * in pread goes through its own mapping, already there. Measured on 100 MB:
 * mmap + loads 80-110 ms, load through this reader 30-37 ms.
 *
 * The reader keeps its own offset (pread at it): the descriptor's file offset
 * is shared with every process holding it (the pool keeps it for a retry) and
 * is never moved. It reads bytes [0, size) of fd and never closes fd: the
 * caller does, after the load, and must keep fd open while the reader can be
 * used (preader_detach makes it unusable). */
#ifndef BETTONG_PREADER_H
#define BETTONG_PREADER_H

#include <Python.h>
#include <stdint.h>

/* A new reader of bytes [0, size) of fd (a new reference), or NULL with a
 * Python exception. */
PyObject *preader_new(int fd, uint64_t size);
/* Make the reader fail any further read (it no longer refers to fd): call
 * before closing fd, in case the unpickler let the reader escape. */
void preader_detach(PyObject *reader);

#endif
