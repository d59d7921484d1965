/* wikipulse._merge: the top-list index (head and tail) of one ranked `u` or `p` blob: `index`.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_INDEX_H
#define WIKIPULSE_MERGE_INDEX_H

/* ---- index: head and tail of one ranked blob ---- */

typedef struct {
    const unsigned char *a, *b; /* a page: wiki and title; a user: a only */
    uint32_t alen, blen;
    uint64_t count;
} Entry;

/* What the tail's sort compares: most pairs are told apart without touching the text, by a
 * page's wiki's rank among the tail's wikis and the first 16 bytes of its title (a user's
 * name), big-endian, zero-padded; the bytes decide where these tie. Sorting the entries
 * themselves bytewise took 0.2 s for an hour's 200,000 pages: every comparison read two
 * entries scattered over megabytes (and compared their shared wiki names again); these keys
 * are small and sorted in place. */
typedef struct {
    const Entry *entry;
    uint64_t high, low;
    uint32_t rank;
} SortKey;

static uint64_t
prefix_of(const unsigned char *s, uint32_t n, uint32_t from)
{
    uint64_t v = 0;
    for (uint32_t i = from; i < from + 8; i++) {
        v = (v << 8) | (i < n ? s[i] : 0);
    }
    return v;
}

static int
compare_bytes(const Entry *p, const Entry *q)
{
    /* bytewise on a, then (pages) NUL, then b: what joining them by NUL would sort as */
    uint32_t n = p->alen < q->alen ? p->alen : q->alen;
    int c = memcmp(p->a, q->a, n);
    if (c != 0) {
        return c;
    }
    if (p->alen != q->alen) {
        /* the shorter one continues with NUL (a page: its wiki holds none, or it has no
         * index) or ends (a user): either way it sorts first */
        return p->alen > q->alen ? 1 : -1;
    }
    if (p->b == NULL) {
        return 0;
    }
    n = p->blen < q->blen ? p->blen : q->blen;
    c = memcmp(p->b, q->b, n);
    if (c != 0) {
        return c;
    }
    return (p->blen > q->blen) - (p->blen < q->blen);
}

static int
compare_wikis(const void *x, const void *y)
{
    return compare_bytes(x, y);
}

static inline int
compare_keys(const SortKey *p, const SortKey *q)
{
    if (p->rank != q->rank) {
        return p->rank < q->rank ? -1 : 1;
    }
    if (p->high != q->high) {
        return p->high < q->high ? -1 : 1;
    }
    if (p->low != q->low) {
        return p->low < q->low ? -1 : 1;
    }
    return compare_bytes(p->entry, q->entry);
}

/* Sort keys in place: a quicksort with the comparison inlined (qsort's call per comparison
 * made it 3x slower), insertion sort for short runs, the shorter side first (log n depth). */
static void
sort_range(SortKey *keys, size_t n)
{
    while (n > 16) {
        size_t mid = n / 2, last = n - 1;
        /* the median of the first, middle and last key as the pivot, moved to the end */
        if (compare_keys(&keys[mid], &keys[0]) < 0) {
            SortKey t = keys[mid]; keys[mid] = keys[0]; keys[0] = t;
        }
        if (compare_keys(&keys[last], &keys[0]) < 0) {
            SortKey t = keys[last]; keys[last] = keys[0]; keys[0] = t;
        }
        if (compare_keys(&keys[mid], &keys[last]) < 0) {
            SortKey t = keys[mid]; keys[mid] = keys[last]; keys[last] = t;
        }
        SortKey pivot = keys[last];
        size_t store = 0;
        for (size_t i = 0; i < last; i++) {
            if (compare_keys(&keys[i], &pivot) < 0) {
                SortKey t = keys[i]; keys[i] = keys[store]; keys[store] = t;
                store++;
            }
        }
        keys[last] = keys[store];
        keys[store] = pivot;
        size_t left = store, right = n - store - 1;
        if (left < right) {
            sort_range(keys, left);
            keys += store + 1;
            n = right;
        } else {
            sort_range(keys + store + 1, right);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++) {
        SortKey key = keys[i];
        size_t j = i;
        while (j > 0 && compare_keys(&key, &keys[j - 1]) < 0) {
            keys[j] = keys[j - 1];
            j--;
        }
        keys[j] = key;
    }
}

/* Pages: the keys grouped by their wiki's rank first (a counting sort), then each group
 * sorted; an hour's ~900 wikis cut the comparisons by half. Frees `keys`; NULL when out of
 * memory. */
static SortKey *
sort_grouped(SortKey *keys, size_t n, uint32_t groups)
{
    SortKey *out = PyMem_RawMalloc(sizeof(SortKey) * (n ? n : 1));
    size_t *starts = PyMem_RawCalloc((size_t)groups + 1, sizeof(size_t));
    if (out == NULL || starts == NULL) {
        PyMem_RawFree(out);
        PyMem_RawFree(starts);
        PyMem_RawFree(keys);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        starts[keys[i].rank + 1]++;
    }
    for (uint32_t g = 0; g < groups; g++) {
        starts[g + 1] += starts[g];
    }
    for (size_t i = 0; i < n; i++) {
        out[starts[keys[i].rank]++] = keys[i]; /* starts[g] ends where group g + 1 begins */
    }
    size_t from = 0;
    for (uint32_t g = 0; g < groups; g++) {
        sort_range(out + from, starts[g] - from);
        from = starts[g];
    }
    PyMem_RawFree(starts);
    PyMem_RawFree(keys);
    return out;
}

/* The entries' sort keys, in byte order of their keys (NULL when out of memory). */
static SortKey *
sort_keys(const Entry *entries, uint32_t n, int is_pages)
{
    SortKey *keys = PyMem_RawMalloc(sizeof(SortKey) * (n ? n : 1));
    Table wikis;
    memset(&wikis, 0, sizeof(wikis));
    Entry *names = NULL;
    uint32_t *rank = NULL;
    int error = keys == NULL || (is_pages && table_init(&wikis, 1024));
    for (uint32_t i = 0; !error && i < n; i++) {
        const Entry *e = &entries[i];
        const unsigned char *text = is_pages ? e->b : e->a;
        uint32_t len = is_pages ? e->blen : e->alen;
        keys[i] = (SortKey){e, prefix_of(text, len, 0), prefix_of(text, len, 8), 0};
        if (is_pages) {
            int64_t id = table_find(&wikis, e->a, e->alen, NULL, 0);
            error = id < 0;
            keys[i].rank = (uint32_t)id;
        }
    }
    if (!error && is_pages) {
        /* the wikis in byte order (a few hundred); each key's wiki id becomes that rank */
        names = PyMem_RawMalloc(sizeof(Entry) * (wikis.used ? wikis.used : 1));
        rank = PyMem_RawMalloc(sizeof(uint32_t) * (wikis.used ? wikis.used : 1));
        error = names == NULL || rank == NULL;
        for (uint32_t w = 0; !error && w < wikis.used; w++) {
            names[w] = (Entry){wikis.keys[w].a, NULL, wikis.keys[w].alen, 0, w};
        }
        if (!error) {
            qsort(names, wikis.used, sizeof(Entry), compare_wikis);
            for (uint32_t w = 0; w < wikis.used; w++) {
                rank[names[w].count] = w;
            }
            for (uint32_t i = 0; i < n; i++) {
                keys[i].rank = rank[keys[i].rank];
            }
        }
    }
    uint32_t groups = is_pages ? wikis.used : 0;
    PyMem_RawFree(names);
    PyMem_RawFree(rank);
    table_free(&wikis);
    if (error) {
        PyMem_RawFree(keys);
        return NULL;
    }
    return groups > 1 ? sort_grouped(keys, n, groups) : (sort_range(keys, n), keys);
}

static void
put_u32le(unsigned char *at, uint32_t v)
{
    at[0] = (unsigned char)v;
    at[1] = (unsigned char)(v >> 8);
    at[2] = (unsigned char)(v >> 16);
    at[3] = (unsigned char)(v >> 24);
}

static int
build_index(const Blob *blob, int is_pages, uint32_t head, Out *ho, Out *to)
{
    Reader r = {blob->data, blob->data + blob->size};
    uint32_t fields, count, counts;
    if (read_array(&r, &fields) || fields != (is_pages ? 2u : 3u) || read_array(&r, &count)) {
        return E_FORMAT;
    }
    Entry *entries = PyMem_RawMalloc(sizeof(Entry) * (count ? count : 1));
    if (entries == NULL) {
        return E_MEMORY;
    }
    int error = OK, nul_wiki = 0;
    for (uint32_t i = 0; i < count; i++) {
        Entry *e = &entries[i];
        uint32_t pair;
        e->b = NULL;
        e->blen = 0;
        if (is_pages) {
            if (read_array(&r, &pair) || pair != 2 || read_str(&r, &e->a, &e->alen) ||
                read_str(&r, &e->b, &e->blen)) {
                error = E_FORMAT;
                break;
            }
            if (i >= head && memchr(e->a, 0, e->alen) != NULL) {
                nul_wiki = 1;
            }
        } else if (read_str(&r, &e->a, &e->alen)) {
            error = E_FORMAT;
            break;
        }
    }
    if (!error && (read_array(&r, &counts) || counts != count)) {
        error = E_FORMAT;
    }
    for (uint32_t i = 0; !error && i < count; i++) {
        if (read_uint(&r, &entries[i].count)) {
            error = E_FORMAT;
        }
    }
    if (error || nul_wiki) {
        PyMem_RawFree(entries);
        return error ? error : E_NONE;
    }
    uint32_t kept = count < head ? count : head;
    /* head: [keys, n, tail_max] */
    put_array(ho, 3);
    put_array(ho, kept);
    for (uint32_t i = 0; i < kept; i++) {
        if (is_pages) {
            put_array(ho, 2);
            put_str(ho, entries[i].a, entries[i].alen);
            put_str(ho, entries[i].b, entries[i].blen);
        } else {
            put_str(ho, entries[i].a, entries[i].alen);
        }
    }
    put_array(ho, kept);
    for (uint32_t i = 0; i < kept; i++) {
        put_uint(ho, entries[i].count);
    }
    put_uint(ho, count > head ? entries[head].count : 0);
    /* tail: [keys, offsets, counts], the keys past the head sorted bytewise */
    uint32_t rest = count - kept;
    const Entry *tail = entries + kept;
    uint64_t size = 0;
    for (uint32_t i = 0; i < rest; i++) {
        size += tail[i].alen + (is_pages ? 1 + (uint64_t)tail[i].blen : 0);
        if (tail[i].count > UINT32_MAX) {
            error = E_FORMAT;
        }
    }
    if (size >= ((uint64_t)1 << 32) || error) {
        PyMem_RawFree(entries);
        return error ? error : E_NONE;
    }
    SortKey *order = sort_keys(tail, rest, is_pages);
    unsigned char *offsets = PyMem_RawMalloc(4 * ((size_t)rest + 1));
    unsigned char *ns = PyMem_RawMalloc(4 * (size_t)(rest ? rest : 1));
    if (order == NULL || offsets == NULL || ns == NULL) {
        error = E_MEMORY;
    } else {
        /* [keys, offsets, counts]: the keys written straight into the output */
        put_array(to, 3);
        put_bin(to, NULL, size);
        unsigned char *joined = to->failed ? NULL : to->data + to->used - size;
        uint32_t at = 0;
        put_u32le(offsets, 0);
        for (uint32_t i = 0; joined != NULL && i < rest; i++) {
            const Entry *e = order[i].entry;
            memcpy(joined + at, e->a, e->alen);
            at += e->alen;
            if (is_pages) {
                joined[at++] = 0;
                memcpy(joined + at, e->b, e->blen);
                at += e->blen;
            }
            put_u32le(offsets + 4 * ((size_t)i + 1), at);
            put_u32le(ns + 4 * (size_t)i, (uint32_t)e->count);
        }
        put_bin(to, offsets, 4 * ((size_t)rest + 1));
        put_bin(to, ns, 4 * (size_t)rest);
    }
    PyMem_RawFree(order);
    PyMem_RawFree(offsets);
    PyMem_RawFree(ns);
    PyMem_RawFree(entries);
    if (error) {
        return error;
    }
    return ho->failed || to->failed ? E_MEMORY : OK;
}

static PyObject *
index_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "index() takes a blob (bytes), pages and head");
        return NULL;
    }
    int is_pages = PyObject_IsTrue(args[1]);
    Py_ssize_t head = PyLong_AsSsize_t(args[2]);
    if (is_pages < 0 || (head == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (head < 0 || head > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "index(): head out of range");
        return NULL;
    }
    Blob blob = {(const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])};
    Out ho = {NULL, 0, 0, 0}, to = {NULL, 0, 0, 0};
    int error;
    Py_BEGIN_ALLOW_THREADS
    error = build_index(&blob, is_pages, (uint32_t)head, &ho, &to);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (error == E_NONE) {
        result = Py_NewRef(Py_None);
    } else if (error) {
        fail(error);
    } else {
        PyObject *h = take_out(&ho), *t = take_out(&to);
        if (h != NULL && t != NULL) {
            result = PyTuple_Pack(2, h, t);
        }
        Py_XDECREF(h);
        Py_XDECREF(t);
    }
    PyMem_RawFree(ho.data);
    PyMem_RawFree(to.data);
    return result;
}

#endif /* WIKIPULSE_MERGE_INDEX_H */
