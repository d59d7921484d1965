/* wikipulse._merge: msgpack read in place and written in the smallest form (as msgspec writes it), the
 * error codes, and the blobs handed in.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_MSGPACK_H
#define WIKIPULSE_MERGE_MSGPACK_H

/* ---- errors (set once the GIL is held again) ---- */

enum { OK = 0, E_MEMORY = 1, E_FORMAT = 2, E_NONE = 3, E_RANGE = 4 };

/* ---- msgpack reading ---- */

typedef struct {
    const unsigned char *p, *end;
} Reader;

static int
need(Reader *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? OK : E_FORMAT;
}

static uint64_t
be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* A length-prefixed header: fix range [lo, lo + fixmax], or the 1/2/4-byte forms given. */
static int
read_header(Reader *r, unsigned lo, unsigned fixmax, int c8, int c16, int c32, uint32_t *n)
{
    if (need(r, 1)) {
        return E_FORMAT;
    }
    unsigned b = *r->p++;
    if (b >= lo && b <= lo + fixmax) {
        *n = b - lo;
        return OK;
    }
    int width = (int)b == c8 ? 1 : (int)b == c16 ? 2 : (int)b == c32 ? 4 : 0;
    if (width == 0 || need(r, (size_t)width)) {
        return E_FORMAT;
    }
    *n = (uint32_t)be(r->p, width);
    r->p += width;
    return OK;
}

static int
read_array(Reader *r, uint32_t *n)
{
    return read_header(r, 0x90, 15, -1, 0xdc, 0xdd, n);
}

static int
read_map(Reader *r, uint32_t *n)
{
    return read_header(r, 0x80, 15, -1, 0xde, 0xdf, n);
}

static int
read_str(Reader *r, const unsigned char **s, uint32_t *n)
{
    if (read_header(r, 0xa0, 31, 0xd9, 0xda, 0xdb, n) || need(r, *n)) {
        return E_FORMAT;
    }
    *s = r->p;
    r->p += *n;
    return OK;
}

static int
read_uint(Reader *r, uint64_t *v)
{
    if (need(r, 1)) {
        return E_FORMAT;
    }
    unsigned b = *r->p++;
    if (b <= 0x7f) {
        *v = b;
        return OK;
    }
    int width = b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : b == 0xcf ? 8 : 0;
    if (width == 0 || need(r, (size_t)width)) {
        return E_FORMAT; /* counts are never negative */
    }
    *v = be(r->p, width);
    r->p += width;
    return OK;
}

/* ---- msgpack writing, in the smallest form (as msgspec writes it) ---- */

typedef struct {
    unsigned char *data;
    size_t used, capacity;
    int failed;
} Out;

static unsigned char *
grow(Out *o, size_t n)
{
    if (o->failed) {
        return NULL;
    }
    if (o->used + n > o->capacity) {
        size_t bigger = (o->capacity + n) * 2 + 4096;
        unsigned char *moved = PyMem_RawRealloc(o->data, bigger);
        if (moved == NULL) {
            o->failed = 1;
            return NULL;
        }
        o->data = moved;
        o->capacity = bigger;
    }
    unsigned char *at = o->data + o->used;
    o->used += n;
    return at;
}

static void
put_be(Out *o, unsigned char code, uint64_t v, int width)
{
    unsigned char *at = grow(o, 1 + (size_t)width);
    if (at == NULL) {
        return;
    }
    at[0] = code;
    for (int i = width; i > 0; i--) {
        at[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static void
put_uint(Out *o, uint64_t v)
{
    if (v <= 0x7f) {
        put_be(o, (unsigned char)v, 0, 0);
    } else if (v <= 0xff) {
        put_be(o, 0xcc, v, 1);
    } else if (v <= 0xffff) {
        put_be(o, 0xcd, v, 2);
    } else if (v <= 0xffffffffu) {
        put_be(o, 0xce, v, 4);
    } else {
        put_be(o, 0xcf, v, 8);
    }
}

static void
put_header(Out *o, unsigned fix, unsigned fixmax, int c8, int c16, int c32, uint32_t n)
{
    if (n <= fixmax) {
        put_be(o, (unsigned char)(fix + n), 0, 0);
    } else if (c8 >= 0 && n <= 0xff) {
        put_be(o, (unsigned char)c8, n, 1);
    } else if (n <= 0xffff) {
        put_be(o, (unsigned char)c16, n, 2);
    } else {
        put_be(o, (unsigned char)c32, n, 4);
    }
}

static void
put_array(Out *o, uint32_t n)
{
    put_header(o, 0x90, 15, -1, 0xdc, 0xdd, n);
}

static void
put_map(Out *o, uint32_t n)
{
    put_header(o, 0x80, 15, -1, 0xde, 0xdf, n);
}

/* Append n bytes: a copy of `data`, or left for the caller to fill when it is NULL. */
static void
put_bytes(Out *o, const void *data, size_t n)
{
    unsigned char *at = grow(o, n);
    if (at != NULL && data != NULL && n > 0) {
        memcpy(at, data, n);
    }
}

static void
put_str(Out *o, const unsigned char *s, uint32_t n)
{
    put_header(o, 0xa0, 31, 0xd9, 0xda, 0xdb, n);
    put_bytes(o, s, n);
}

static void
put_bin(Out *o, const void *data, size_t n)
{
    if (n <= 0xff) {
        put_be(o, 0xc4, n, 1);
    } else if (n <= 0xffff) {
        put_be(o, 0xc5, n, 2);
    } else {
        put_be(o, 0xc6, n, 4);
    }
    put_bytes(o, data, n);
}

/* ---- the blobs handed in ---- */

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
} Blob;

static PyObject *
fail(int error)
{
    if (error == E_MEMORY) {
        return PyErr_NoMemory();
    }
    if (error == E_RANGE) {
        PyErr_SetString(PyExc_OverflowError, "a window sum beyond 64 bits");
        return NULL;
    }
    PyErr_SetString(PyExc_ValueError, "a window blob is not in the expected msgpack form");
    return NULL;
}

static PyObject *
take_out(Out *o)
{
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)o->data, (Py_ssize_t)o->used);
    PyMem_RawFree(o->data);
    o->data = NULL;
    return bytes;
}

#endif /* WIKIPULSE_MERGE_MSGPACK_H */
