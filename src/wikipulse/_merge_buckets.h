/* wikipulse._merge: pages summed, and whole buckets (t, c, u and p blobs) summed: `merge`.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_BUCKETS_H
#define WIKIPULSE_MERGE_BUCKETS_H

/* ---- pages ---- */

/* Write the summed pages as a `p` blob: [wiki, title] pairs by count, and their counts. */
static int
put_pages(Out *o, const Table *t)
{
    uint32_t *order = ranked(t);
    if (order == NULL) {
        return E_MEMORY;
    }
    put_array(o, 2);
    put_array(o, t->used);
    for (uint32_t i = 0; i < t->used; i++) {
        const Key *k = &t->keys[order[i]];
        put_array(o, 2);
        put_str(o, k->a, k->alen);
        put_str(o, k->b, k->blen);
    }
    put_array(o, t->used);
    for (uint32_t i = 0; i < t->used; i++) {
        put_uint(o, t->keys[order[i]].count);
    }
    PyMem_RawFree(order);
    return o->failed ? E_MEMORY : OK;
}

static int
merge_pages(Table *t, Out *o, const Blob *blobs, Py_ssize_t n)
{
    uint64_t keys = 0;
    for (Py_ssize_t b = 0; b < n; b++) { /* size the table from the blobs' key counts */
        Reader r = {blobs[b].data, blobs[b].data + blobs[b].size};
        uint32_t fields, count;
        if (read_array(&r, &fields) || fields != 2 || read_array(&r, &count)) {
            return E_FORMAT;
        }
        keys += count;
    }
    if (keys >= UINT32_MAX / 4) {
        return E_MEMORY;
    }
    if (table_init(t, (uint32_t)keys)) {
        return E_MEMORY;
    }
    uint32_t *local = PyMem_RawMalloc(sizeof(uint32_t) * (keys ? keys : 1));
    if (local == NULL) {
        return E_MEMORY;
    }
    int error = OK;
    for (Py_ssize_t b = 0; b < n && !error; b++) {
        Reader r = {blobs[b].data, blobs[b].data + blobs[b].size};
        uint32_t fields = 0, count = 0, pair, counts;
        read_array(&r, &fields);
        read_array(&r, &count);
        for (uint32_t i = 0; i < count && !error; i++) {
            const unsigned char *wiki, *title;
            uint32_t wlen, tlen;
            if (read_array(&r, &pair) || pair != 2 || read_str(&r, &wiki, &wlen) ||
                read_str(&r, &title, &tlen)) {
                error = E_FORMAT;
                break;
            }
            /* a title may be empty: the key's second slice is then "" but not NULL */
            int64_t id = table_find(t, wiki, wlen, title, tlen);
            if (id < 0) {
                error = E_MEMORY;
                break;
            }
            local[i] = (uint32_t)id;
        }
        if (error || read_array(&r, &counts) || counts != count) {
            error = error ? error : E_FORMAT;
            break;
        }
        for (uint32_t i = 0; i < counts; i++) {
            uint64_t v;
            if (read_uint(&r, &v)) {
                error = E_FORMAT;
                break;
            }
            t->keys[local[i]].count += v;
        }
        if (!error && r.p != r.end) {
            error = E_FORMAT;
        }
    }
    PyMem_RawFree(local);
    if (error) {
        return error;
    }
    return put_pages(o, t);
}

/* ---- buckets: t, c, u and p blobs summed ---- */

typedef struct {
    Blob *c, *u, *p;
    Py_ssize_t n;
} Buckets;

static int
merge_buckets(const Buckets *in, Out out[4])
{
    Totals totals;
    Table pages;
    UserSum users;
    memset(&pages, 0, sizeof(Table));
    memset(&users, 0, sizeof(users));
    int error = totals_init(&totals) ? E_MEMORY : OK;
    for (Py_ssize_t b = 0; !error && b < in->n; b++) {
        error = totals_add_blob(&totals, &in->c[b]);
    }
    error = error ? error : merge_users(&users, in->u, in->n);
    error = error ? error : merge_pages(&pages, &out[3], in->p, in->n);
    error = error ? error : put_totals(&totals, &users, &out[0], &out[1]);
    if (!error) {
        put_bytes(&out[2], users.out.data, users.out.used);
        error = out[2].failed ? E_MEMORY : OK;
    }
    totals_free(&totals);
    table_free(&pages);
    user_sum_free(&users);
    return error;
}

static PyObject *
merge(PyObject *module, PyObject *arg)
{
    (void)module;
    PyObject *fast = PySequence_Fast(arg, "merge(): expected a sequence of (t, c, u, p) blobs");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Buckets in = {PyMem_Malloc(sizeof(Blob) * (size_t)(n ? n : 1)),
                  PyMem_Malloc(sizeof(Blob) * (size_t)(n ? n : 1)),
                  PyMem_Malloc(sizeof(Blob) * (size_t)(n ? n : 1)), n};
    PyObject *result = NULL;
    Out out[4];
    memset(out, 0, sizeof(out));
    int ok = in.c != NULL && in.u != NULL && in.p != NULL;
    if (!ok) {
        PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        ok = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 4;
        for (Py_ssize_t d = 0; ok && d < 4; d++) {
            ok = PyBytes_Check(PyTuple_GET_ITEM(item, d));
        }
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "merge(): a bucket must be a tuple of 4 bytes");
            break;
        }
        Blob *to[3] = {&in.c[i], &in.u[i], &in.p[i]};
        for (int d = 1; d < 4; d++) {
            PyObject *data = PyTuple_GET_ITEM(item, d);
            *to[d - 1] = (Blob){(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)};
        }
    }
    if (ok) {
        int error;
        Py_BEGIN_ALLOW_THREADS
        error = merge_buckets(&in, out);
        Py_END_ALLOW_THREADS
        if (error) {
            fail(error);
        } else {
            result = PyTuple_New(4);
            for (int d = 0; result != NULL && d < 4; d++) {
                PyObject *blob = take_out(&out[d]);
                if (blob == NULL) {
                    Py_CLEAR(result);
                    break;
                }
                PyTuple_SET_ITEM(result, d, blob);
            }
        }
    }
    for (int d = 0; d < 4; d++) {
        PyMem_RawFree(out[d].data);
    }
    PyMem_Free(in.c);
    PyMem_Free(in.u);
    PyMem_Free(in.p);
    Py_DECREF(fast);
    return result;
}

#endif /* WIKIPULSE_MERGE_BUCKETS_H */
