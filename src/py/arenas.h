/* Python's small-object arenas populated in one call when they are made.
 *
 * Why: obmalloc takes its small objects from arenas of 1 MiB that it maps as
 * it grows, and each of their 256 pages is then faulted in on first use. On
 * a VM that is one trap into the hypervisor per page (measured here: ~20 us a
 * fault, against ~2 us a page for madvise(MADV_POPULATE_WRITE) of the whole
 * arena), and a process that makes objects at a high rate (a client with
 * 20,000 futures in flight, a worker loading a batch) spends a fifth of its
 * time in those faults. A new arena is only made when the others are full,
 * so its pages are used soon anyway: at most one arena's worth (1 MiB) is
 * populated ahead of need.
 *
 * This wraps the arena allocator that is there (arenas made before are
 * freed by it as before); kernels without MADV_POPULATE_WRITE (before 5.14)
 * just fault as before. */
#ifndef BETTONG_ARENAS_H
#define BETTONG_ARENAS_H

/* Wrap the arena allocator (Python running; GIL held). Once per process; a
 * process forked after it keeps it. */
void arenas_install(void);

#endif
