/* wikipulse._merge: window buckets summed, and indexed, on their stored blobs, in C.
 *
 * The SQL stores' writer seals a 5-minute bucket from its minutes and an hour from its
 * 5-minute buckets. In Python that meant decoding every blob into dicts, summing the dicts,
 * ranking the keys and encoding them again: ~1 s of the writer's thread (holding the GIL)
 * for an hour of the live stream (~200,000 pages, ~70,000 users), most of a replay's serial
 * part. Here the blobs are read as msgpack in place (keys stay slices of the input), summed in
 * a hash table, ranked, and written as msgpack again, without the GIL and without a Python
 * object per key; events are summed per minute into such blobs the same way.
 *
 * merge(buckets) -> (t, c, u, p): the sum of buckets given as their four blobs (see
 *   window_blobs.py); names and pages ranked by count, highest first (ties in the order met),
 *   each wiki's users a set union (_merge_buckets.h).
 * minutes(rows) / decoded_minutes(events, canary, cache, minute_of) -> {minute: [(dim, blob)]}:
 *   recorded window rows, or decoded events read in place, summed per minute
 *   (_merge_minutes.h, _merge_decoded.h).
 * index(blob, pages, head) -> (head, tail) | None: the top-list index of one ranked `u` or `p`
 *   blob (window_index.index_blobs, which tests/test_window_merge.py compares it with byte for
 *   byte): None where index_blobs gives None (a wiki holding NUL, a tail over 4 GiB)
 *   (_merge_index.h).
 *
 * Malformed input raises ValueError, what does not fit 64 bits OverflowError (the callers
 * then sum in Python). The blobs are bytes; their buffers are read while the GIL is released,
 * which is safe because bytes are immutable and referenced by the caller. The parts below are
 * headers of static functions, included in order into this one translation unit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_merge_msgpack.h"
#include "_merge_table.h"
#include "_merge_users.h"
#include "_merge_totals.h"
#include "_merge_buckets.h"
#include "_merge_minutes.h"
#include "_merge_decoded.h"
#include "_merge_index.h"

static PyMethodDef methods[] = {
    {"merge", merge, METH_O,
     "merge(buckets, /)\n--\n\nThe sum of some buckets, each (t, c, u, p) blobs, as (t, c, u, "
     "p) blobs."},
    {"minutes", minutes, METH_O,
     "minutes(events, /)\n--\n\nRecorded events (window_packing.RawWindowEvent) summed per "
     "minute: {minute: [(dimension, blob)]} for t, c, u and p."},
    {"decoded_minutes", (PyCFunction)(void (*)(void))decoded_minutes, METH_FASTCALL,
     "decoded_minutes(events, canary, cache, minute_of, /)\n--\n\nDecoded events "
     "(events.RecentChange) summed per minute as `minutes` sums their recorded rows, canaries "
     "and events without a minute left out: the minute of `meta.dt` is read as window_rows "
     "reads it (the cache windows.MINUTE_CACHE, else minute_of)."},
    {"index", (PyCFunction)(void (*)(void))index_of, METH_FASTCALL,
     "index(blob, pages, head, /)\n--\n\nThe top-list index (head, tail) of one ranked `u` or "
     "`p` blob, as window_index.index_blobs makes it; None where that gives None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wikipulse._merge", "Window blobs summed and indexed in C.", 0,
    methods,
};

PyMODINIT_FUNC
PyInit__merge(void)
{
    return PyModule_Create(&module);
}
