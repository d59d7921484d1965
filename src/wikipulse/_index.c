/* wikipulse._index: the tail of a sealed bucket's top-list index, built in C.
 *
 * A sealed 5-minute or hour bucket keeps its users and pages past the head as one string of
 * UTF-8 keys sorted bytewise, with their offsets and counts as little-endian uint32 arrays
 * (window_index.py explains why). Built in Python that is six passes over every key, each
 * making an object a key (an hour holds ~200,000 pages at the live rate): ~0.5 s an hour of
 * the writer's time, which holds the GIL. Here it is one pass that encodes, one sort of
 * indices and one copy.
 *
 * `tail(keys, counts, start)` takes the keys from position `start` on: each a str (a user) or
 * a pair of str (a page: wiki, title; the pair's wiki and title joined by NUL). It returns
 * (keys, offsets, counts) as bytes, or None where the Python version returns None (a wiki
 * name holding NUL, or the keys longer than 4 GiB in all). A key that is not valid UTF-8 (a
 * lone surrogate) raises UnicodeEncodeError: the caller then builds the tail in Python,
 * which encodes it with "surrogatepass". tests/test_window_index.py checks every answer
 * against the Python version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *data; /* while the keys are gathered: an offset into the arena */
    Py_ssize_t size;
    Py_ssize_t position; /* where the key's count is, from `start` */
} Key;

typedef struct {
    char *data;
    Py_ssize_t used, capacity;
} Arena;

static int
compare_keys(const void *a, const void *b)
{
    const Key *x = a, *y = b;
    Py_ssize_t n = x->size < y->size ? x->size : y->size;
    int c = memcmp(x->data, y->data, (size_t)n);
    if (c != 0) {
        return c;
    }
    return (x->size > y->size) - (x->size < y->size);
}

static void
put_u32(unsigned char *out, uint32_t v)
{
    out[0] = (unsigned char)(v & 0xff);
    out[1] = (unsigned char)((v >> 8) & 0xff);
    out[2] = (unsigned char)((v >> 16) & 0xff);
    out[3] = (unsigned char)((v >> 24) & 0xff);
}

static char *
reserve(Arena *arena, Py_ssize_t size)
{
    if (arena->data == NULL || arena->used + size > arena->capacity) {
        Py_ssize_t grown = (arena->capacity + size) * 2 + 4096;
        char *bigger = PyMem_Realloc(arena->data, (size_t)grown);
        if (bigger == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        arena->data = bigger;
        arena->capacity = grown;
    }
    return arena->data + arena->used;
}

/* Append a str's UTF-8 to the arena (the str keeps no cached copy of it); -1 on error. */
static int
put_text(Arena *arena, PyObject *text, Py_ssize_t *size)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "tail(): a key must be a str or a pair of str");
        return -1;
    }
    if (PyUnicode_IS_ASCII(text)) { /* its characters are its UTF-8 */
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        char *at = reserve(arena, n);
        if (at == NULL) {
            return -1;
        }
        memcpy(at, PyUnicode_DATA(text), (size_t)n);
        arena->used += n;
        *size = n;
        return 0;
    }
    PyObject *encoded = PyUnicode_AsUTF8String(text); /* strict: a lone surrogate raises */
    if (encoded == NULL) {
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(encoded);
    char *at = reserve(arena, n);
    if (at != NULL) {
        memcpy(at, PyBytes_AS_STRING(encoded), (size_t)n);
        arena->used += n;
        *size = n;
    }
    Py_DECREF(encoded);
    return at == NULL ? -1 : 0;
}

/* Gather one key into the arena: 1 when done, 0 when a page's wiki holds NUL, -1 on error. */
static int
put_key(Arena *arena, PyObject *key, Key *out)
{
    Py_ssize_t first = arena->used;
    out->data = (const char *)(uintptr_t)first;
    if (PyUnicode_Check(key)) {
        return put_text(arena, key, &out->size) < 0 ? -1 : 1;
    }
    if (!(PyTuple_Check(key) || PyList_Check(key)) || PySequence_Fast_GET_SIZE(key) != 2) {
        PyErr_SetString(PyExc_TypeError, "tail(): a key must be a str or a pair of str");
        return -1;
    }
    Py_ssize_t wiki, title;
    if (put_text(arena, PySequence_Fast_GET_ITEM(key, 0), &wiki) < 0) {
        return -1;
    }
    if (memchr(arena->data + first, 0, (size_t)wiki) != NULL) {
        return 0;
    }
    char *sep = reserve(arena, 1);
    if (sep == NULL) {
        return -1;
    }
    *sep = '\0';
    arena->used += 1;
    if (put_text(arena, PySequence_Fast_GET_ITEM(key, 1), &title) < 0) {
        return -1;
    }
    out->size = wiki + 1 + title;
    return 1;
}

static PyObject *
tail(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "tail() takes keys, counts and start");
        return NULL;
    }
    (void)module;
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *keys = PySequence_Fast(args[0], "tail(): keys must be a sequence");
    if (keys == NULL) {
        return NULL;
    }
    PyObject *counts = PySequence_Fast(args[1], "tail(): counts must be a sequence");
    if (counts == NULL) {
        Py_DECREF(keys);
        return NULL;
    }
    PyObject *result = NULL, *joined = NULL, *offsets = NULL, *ns = NULL;
    Key *items = NULL;
    Arena arena = {NULL, 0, 0};
    Py_ssize_t total = PySequence_Fast_GET_SIZE(keys);
    if (start < 0 || PySequence_Fast_GET_SIZE(counts) != total) {
        PyErr_SetString(PyExc_ValueError, "tail(): start below 0, or counts not as long as keys");
        goto done;
    }
    if (start > total) { /* a head longer than the keys: no tail, as keys[start:] */
        start = total;
    }
    Py_ssize_t n = total - start;
    items = PyMem_Malloc(sizeof(Key) * (size_t)(n > 0 ? n : 1));
    if (items == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int ok = put_key(&arena, PySequence_Fast_GET_ITEM(keys, start + i), &items[i]);
        if (ok <= 0) {
            result = ok == 0 ? Py_NewRef(Py_None) : NULL;
            goto done;
        }
        items[i].position = start + i;
    }
    if (arena.used >= ((Py_ssize_t)1 << 32)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* the arena is final: offsets become pointers */
        items[i].data = arena.data + (uintptr_t)items[i].data;
    }
    /* The sort reads only the arena: other threads (the event loop) run meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    qsort(items, (size_t)n, sizeof(Key), compare_keys);
    Py_END_ALLOW_THREADS
    joined = PyBytes_FromStringAndSize(NULL, arena.used);
    offsets = PyBytes_FromStringAndSize(NULL, 4 * (n + 1));
    ns = PyBytes_FromStringAndSize(NULL, 4 * n);
    if (joined == NULL || offsets == NULL || ns == NULL) {
        goto done;
    }
    char *to = PyBytes_AS_STRING(joined);
    unsigned char *off = (unsigned char *)PyBytes_AS_STRING(offsets);
    unsigned char *cnt = (unsigned char *)PyBytes_AS_STRING(ns);
    Py_ssize_t at = 0;
    put_u32(off, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(to + at, items[i].data, (size_t)items[i].size);
        at += items[i].size;
        put_u32(off + 4 * (i + 1), (uint32_t)at);
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(counts, items[i].position));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            goto done;
        }
        if (v > UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "tail(): a count does not fit 32 bits");
            goto done;
        }
        put_u32(cnt + 4 * i, (uint32_t)v);
    }
    result = PyTuple_Pack(3, joined, offsets, ns);
done:
    Py_XDECREF(joined);
    Py_XDECREF(offsets);
    Py_XDECREF(ns);
    PyMem_Free(items);
    PyMem_Free(arena.data);
    Py_DECREF(keys);
    Py_DECREF(counts);
    return result;
}

static PyMethodDef methods[] = {
    {"tail", (PyCFunction)(void (*)(void))tail, METH_FASTCALL,
     "tail(keys, counts, start, /)\n--\n\nThe keys from `start` on, sorted bytewise as UTF-8 "
     "(pages' wiki and title joined by NUL), with their offsets and counts (little-endian "
     "uint32); None if a wiki holds NUL or they exceed 4 GiB."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wikipulse._index", "Top-list index tails, built in C.", 0, methods,
};

PyMODINIT_FUNC
PyInit__index(void)
{
    return PyModule_Create(&module);
}
