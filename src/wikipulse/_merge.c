/* wikipulse._merge: sum a bucket's stored `u` or `p` blobs, and index one, in C.
 *
 * The SQL stores' writer seals a 5-minute bucket from its minutes and an hour from its
 * 5-minute buckets. In Python that meant decoding every blob into dicts, summing the dicts,
 * ranking the keys and encoding them again: ~1 s of the writer's thread (holding the GIL)
 * for an hour of the live stream (~200,000 pages, ~70,000 users), most of a replay's serial
 * part. Here the blobs are read as msgpack in place (keys stay slices of the input), summed in
 * a hash table, ranked, and written as msgpack again, without the GIL and without a Python
 * object per key.
 *
 * users(blobs) -> (blob, names, distinct): the sum of `Users` blobs ([names, n, members]; see
 *   window_blobs.py): every name with its summed count, highest first (ties in the order the
 *   names were first met), and each wiki's members as a set union; `names` is how many names
 *   there are, `distinct` each wiki's number of members (dict str -> int).
 * pages(blobs) -> blob: the sum of `Pages` blobs ([keys, n], a key a [wiki, title] pair).
 * index(blob, pages, head) -> (head, tail) | None: the top-list index of one ranked `u` or `p`
 *   blob (window_index.index_blobs, which tests/test_window_merge.py compares it with byte for
 *   byte): None where index_blobs gives None (a wiki holding NUL, a tail over 4 GiB).
 *
 * Malformed input raises ValueError. The blobs are bytes; their buffers are read while the
 * GIL is released, which is safe because bytes are immutable and referenced by the caller.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- keys: one or two slices of the input, summed in an open-addressing table ---- */

typedef struct {
    const unsigned char *a, *b; /* b: a page's title (NULL for a user or a wiki) */
    uint32_t alen, blen;
    uint64_t count;
    uint64_t hash;
} Key;

typedef struct {
    Key *keys;
    uint32_t used, cap; /* keys */
    uint32_t *slots;    /* 1 + index into keys, 0 for empty */
    uint32_t mask;
} Table;

static uint64_t
hash_bytes(const unsigned char *p, uint32_t n, uint64_t h)
{
    const uint64_t m = 0x9E3779B97F4A7C15ull;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * m;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w ^ ((uint64_t)n << 56)) * m;
    h ^= h >> 32;
    return h;
}

static int
table_init(Table *t, uint32_t expected)
{
    uint32_t slots = 64;
    while (slots < expected * 2u + 2u) {
        slots <<= 1;
    }
    t->cap = expected > 16 ? expected : 16;
    t->used = 0;
    t->mask = slots - 1;
    t->keys = PyMem_RawMalloc(sizeof(Key) * t->cap);
    t->slots = PyMem_RawCalloc(slots, sizeof(uint32_t));
    return t->keys != NULL && t->slots != NULL ? OK : E_MEMORY;
}

static void
table_free(Table *t)
{
    PyMem_RawFree(t->keys);
    PyMem_RawFree(t->slots);
}

static int
table_rehash(Table *t)
{
    uint32_t slots = (t->mask + 1) * 2;
    uint32_t *fresh = PyMem_RawCalloc(slots, sizeof(uint32_t));
    if (fresh == NULL) {
        return E_MEMORY;
    }
    for (uint32_t i = 0; i < t->used; i++) {
        uint32_t at = (uint32_t)t->keys[i].hash & (slots - 1);
        while (fresh[at] != 0) {
            at = (at + 1) & (slots - 1);
        }
        fresh[at] = i + 1;
    }
    PyMem_RawFree(t->slots);
    t->slots = fresh;
    t->mask = slots - 1;
    return OK;
}

static int
same(const Key *k, const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    return k->alen == alen && k->blen == blen && memcmp(k->a, a, alen) == 0 &&
           (blen == 0 || memcmp(k->b, b, blen) == 0);
}

/* A key's hash: of its first slice, then (a page) its second seeded by the first's. */
static const uint64_t SEED = 0x51ED270B27E5F3A1ull;

static uint64_t
hash_key(const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    uint64_t h = hash_bytes(a, alen, SEED);
    return b != NULL ? hash_bytes(b, blen, h ^ 0xA5) : h;
}

/* The index of the key (a, b) whose hash_key is h, added with count 0 if new; -1 when out of
 * memory. A caller that looks one slice up in several tables hashes it once this way. */
static int64_t
table_find_hashed(Table *t, uint64_t h, const unsigned char *a, uint32_t alen,
                  const unsigned char *b, uint32_t blen)
{
    uint32_t at = (uint32_t)h & t->mask;
    for (;;) {
        uint32_t slot = t->slots[at];
        if (slot == 0) {
            break;
        }
        Key *k = &t->keys[slot - 1];
        if (k->hash == h && same(k, a, alen, b, blen)) {
            return (int64_t)(slot - 1);
        }
        at = (at + 1) & t->mask;
    }
    if (t->used == t->cap) {
        uint32_t cap = t->cap * 2;
        Key *bigger = PyMem_RawRealloc(t->keys, sizeof(Key) * cap);
        if (bigger == NULL) {
            return -1;
        }
        t->keys = bigger;
        t->cap = cap;
    }
    uint32_t i = t->used++;
    t->keys[i] = (Key){a, b, alen, blen, 0, h};
    t->slots[at] = i + 1;
    if ((uint64_t)t->used * 2 > t->mask) {
        if (table_rehash(t)) {
            return -1;
        }
    }
    return (int64_t)i;
}

/* The index of the key (a, b), added with count 0 if new; -1 when out of memory. */
static int64_t
table_find(Table *t, const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    return table_find_hashed(t, hash_key(a, alen, b, blen), a, alen, b, blen);
}

/* ---- pairs: a set of (wiki, name) ids, each two 30-bit numbers in one word ---- */

/* Open addressing over words (0: empty); sized once for every pair it may be given. */
typedef struct {
    uint64_t *slots;
    uint32_t mask, used, cap;
} PairSet;

static int
pairs_init(PairSet *s, uint32_t expected)
{
    uint32_t slots = 64;
    while (slots < expected * 2u + 2u) {
        slots <<= 1;
    }
    s->mask = slots - 1;
    s->used = 0;
    s->cap = expected;
    s->slots = PyMem_RawCalloc(slots, sizeof(uint64_t));
    return s->slots != NULL ? OK : E_MEMORY;
}

/* 1 if the pair is new (added), 0 if met before, -1 past the size it was made for. */
static int
pairs_add(PairSet *s, uint32_t wiki, uint32_t name)
{
    uint64_t word = (((uint64_t)wiki << 32) | name) + 1; /* never 0: ids are below 2^32 - 1 */
    uint64_t h = word * 0x9E3779B97F4A7C15ull;
    uint32_t at = (uint32_t)(h >> 32) & s->mask;
    for (;;) {
        uint64_t slot = s->slots[at];
        if (slot == word) {
            return 0;
        }
        if (slot == 0) {
            break;
        }
        at = (at + 1) & s->mask;
    }
    if (s->used == s->cap) {
        return -1;
    }
    s->slots[at] = word;
    s->used++;
    return 1;
}

/* ---- ranking: by count, highest first, ties in first-met order ---- */

/* The keys' indices by count, highest first, ties in first-met order. Counts are small (most
 * keys of a bucket were met once or twice), so a counting sort ranks them in two passes;
 * a bucket whose largest count is far above its number of keys is sorted by comparison. */
typedef struct {
    uint64_t key; /* sorted ascending, then by index */
    uint32_t index;
} Keyed;

static int
by_key(const void *x, const void *y)
{
    const Keyed *a = x, *b = y;
    if (a->key != b->key) {
        return a->key < b->key ? -1 : 1;
    }
    return (a->index > b->index) - (a->index < b->index);
}

static uint32_t *
ranked(const Table *t)
{
    uint32_t n = t->used;
    uint32_t *order = PyMem_RawMalloc(sizeof(uint32_t) * (n ? n : 1));
    if (order == NULL) {
        return NULL;
    }
    uint64_t top = 0;
    for (uint32_t i = 0; i < n; i++) {
        top = t->keys[i].count > top ? t->keys[i].count : top;
    }
    if (top <= (uint64_t)n * 4 + 1024) {
        /* starts[c]: where the keys counted c begin, counts from the highest down */
        uint32_t *starts = PyMem_RawCalloc((size_t)top + 2, sizeof(uint32_t));
        if (starts == NULL) {
            PyMem_RawFree(order);
            return NULL;
        }
        for (uint32_t i = 0; i < n; i++) {
            starts[top - t->keys[i].count + 1]++;
        }
        for (uint64_t c = 1; c <= top + 1; c++) {
            starts[c] += starts[c - 1];
        }
        for (uint32_t i = 0; i < n; i++) {
            order[starts[top - t->keys[i].count]++] = i;
        }
        PyMem_RawFree(starts);
        return order;
    }
    Keyed *pairs = PyMem_RawMalloc(sizeof(Keyed) * (n ? n : 1));
    if (pairs == NULL) {
        PyMem_RawFree(order);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        pairs[i] = (Keyed){UINT64_MAX - t->keys[i].count, i}; /* highest count first */
    }
    qsort(pairs, n, sizeof(Keyed), by_key);
    for (uint32_t i = 0; i < n; i++) {
        order[i] = pairs[i].index;
    }
    PyMem_RawFree(pairs);
    return order;
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

/* ---- users ---- */

typedef struct {
    uint32_t *ids;
    uint32_t used, cap;
} Members;

typedef struct {
    Table names, wikis;
    PairSet pairs;    /* (wiki, name) met */
    Members *members; /* per wiki */
    uint32_t members_cap;
    Out out;
} UserSum;

static int
add_member(UserSum *s, uint32_t wiki, uint32_t name)
{
    int fresh = pairs_add(&s->pairs, wiki, name);
    if (fresh <= 0) {
        return fresh < 0 ? E_MEMORY : OK; /* met before */
    }
    while (wiki >= s->members_cap) {
        uint32_t cap = s->members_cap * 2 + 16;
        Members *bigger = PyMem_RawRealloc(s->members, sizeof(Members) * cap);
        if (bigger == NULL) {
            return E_MEMORY;
        }
        memset(bigger + s->members_cap, 0, sizeof(Members) * (cap - s->members_cap));
        s->members = bigger;
        s->members_cap = cap;
    }
    Members *m = &s->members[wiki];
    if (m->used == m->cap) {
        uint32_t cap = m->cap * 2 + 8;
        uint32_t *bigger = PyMem_RawRealloc(m->ids, sizeof(uint32_t) * cap);
        if (bigger == NULL) {
            return E_MEMORY;
        }
        m->ids = bigger;
        m->cap = cap;
    }
    m->ids[m->used++] = name;
    return OK;
}

static int
sum_users_blob(UserSum *s, const Blob *blob, uint32_t **local, uint32_t *local_cap)
{
    Reader r = {blob->data, blob->data + blob->size};
    uint32_t fields, names, counts, wikis;
    if (read_array(&r, &fields) || fields != 3 || read_array(&r, &names)) {
        return E_FORMAT;
    }
    if (names > *local_cap) {
        uint32_t *bigger = PyMem_RawRealloc(*local, sizeof(uint32_t) * names);
        if (bigger == NULL) {
            return E_MEMORY;
        }
        *local = bigger;
        *local_cap = names;
    }
    for (uint32_t i = 0; i < names; i++) {
        const unsigned char *name;
        uint32_t len;
        if (read_str(&r, &name, &len)) {
            return E_FORMAT;
        }
        int64_t id = table_find(&s->names, name, len, NULL, 0);
        if (id < 0) {
            return E_MEMORY;
        }
        (*local)[i] = (uint32_t)id;
    }
    if (read_array(&r, &counts) || counts != names) {
        return E_FORMAT;
    }
    for (uint32_t i = 0; i < counts; i++) {
        uint64_t n;
        if (read_uint(&r, &n)) {
            return E_FORMAT;
        }
        s->names.keys[(*local)[i]].count += n;
    }
    if (read_map(&r, &wikis)) {
        return E_FORMAT;
    }
    for (uint32_t w = 0; w < wikis; w++) {
        const unsigned char *wiki;
        uint32_t len, members;
        if (read_str(&r, &wiki, &len) || read_array(&r, &members)) {
            return E_FORMAT;
        }
        int64_t wiki_id = table_find(&s->wikis, wiki, len, NULL, 0);
        if (wiki_id < 0) {
            return E_MEMORY;
        }
        for (uint32_t i = 0; i < members; i++) {
            uint64_t index;
            if (read_uint(&r, &index) || index >= names) {
                return E_FORMAT;
            }
            int error = add_member(s, (uint32_t)wiki_id, (*local)[index]);
            if (error) {
                return error;
            }
        }
    }
    return r.p == r.end ? OK : E_FORMAT;
}

/* Counts every name and member reference of the blobs, to size the tables once. */
static int
count_users(const Blob *blobs, Py_ssize_t n, uint64_t *names, uint64_t *pairs)
{
    *names = *pairs = 0;
    for (Py_ssize_t b = 0; b < n; b++) {
        Reader r = {blobs[b].data, blobs[b].data + blobs[b].size};
        uint32_t fields, count, wikis;
        if (read_array(&r, &fields) || fields != 3 || read_array(&r, &count)) {
            return E_FORMAT;
        }
        *names += count;
        for (uint32_t i = 0; i < count; i++) { /* skip the names */
            const unsigned char *s;
            uint32_t len;
            if (read_str(&r, &s, &len)) {
                return E_FORMAT;
            }
        }
        if (read_array(&r, &count)) {
            return E_FORMAT;
        }
        for (uint32_t i = 0; i < count; i++) {
            uint64_t v;
            if (read_uint(&r, &v)) {
                return E_FORMAT;
            }
        }
        if (read_map(&r, &wikis)) {
            return E_FORMAT;
        }
        for (uint32_t w = 0; w < wikis; w++) {
            const unsigned char *s;
            uint32_t len;
            if (read_str(&r, &s, &len) || read_array(&r, &count)) {
                return E_FORMAT;
            }
            *pairs += count;
            for (uint32_t i = 0; i < count; i++) {
                uint64_t v;
                if (read_uint(&r, &v)) {
                    return E_FORMAT;
                }
            }
        }
    }
    return *names < UINT32_MAX / 4 && *pairs < UINT32_MAX / 4 ? OK : E_MEMORY;
}

/* Write the summed users as a `u` blob into s->out: names by count, counts, members. */
static int
put_users(UserSum *s)
{
    uint32_t *order = ranked(&s->names);
    uint32_t *position = PyMem_RawMalloc(sizeof(uint32_t) * (s->names.used ? s->names.used : 1));
    if (order == NULL || position == NULL) {
        PyMem_RawFree(order);
        PyMem_RawFree(position);
        return E_MEMORY;
    }
    Out *o = &s->out;
    put_array(o, 3);
    put_array(o, s->names.used);
    for (uint32_t i = 0; i < s->names.used; i++) {
        const Key *k = &s->names.keys[order[i]];
        position[order[i]] = i;
        put_str(o, k->a, k->alen);
    }
    put_array(o, s->names.used);
    for (uint32_t i = 0; i < s->names.used; i++) {
        put_uint(o, s->names.keys[order[i]].count);
    }
    put_map(o, s->wikis.used);
    for (uint32_t w = 0; w < s->wikis.used; w++) {
        const Key *k = &s->wikis.keys[w];
        put_str(o, k->a, k->alen);
        Members *m = w < s->members_cap ? &s->members[w] : NULL;
        uint32_t count = m == NULL ? 0 : m->used;
        put_array(o, count);
        for (uint32_t i = 0; i < count; i++) {
            put_uint(o, position[m->ids[i]]);
        }
    }
    PyMem_RawFree(order);
    PyMem_RawFree(position);
    return o->failed ? E_MEMORY : OK;
}

/* Size the tables of a sum of `names` name references and `pairs` (wiki, name) ones. */
static int
user_sum_init(UserSum *s, uint64_t names, uint64_t pairs)
{
    return table_init(&s->names, (uint32_t)names) || table_init(&s->wikis, 64) ||
                   pairs_init(&s->pairs, (uint32_t)pairs)
               ? E_MEMORY
               : OK;
}

static int
merge_users(UserSum *s, const Blob *blobs, Py_ssize_t n)
{
    uint64_t names, pairs;
    int error = count_users(blobs, n, &names, &pairs);
    if (error) {
        return error;
    }
    if (user_sum_init(s, names, pairs)) {
        return E_MEMORY;
    }
    uint32_t *local = NULL, local_cap = 0;
    for (Py_ssize_t b = 0; b < n && !error; b++) {
        error = sum_users_blob(s, &blobs[b], &local, &local_cap);
    }
    PyMem_RawFree(local);
    if (error) {
        return error;
    }
    return put_users(s);
}

static void
user_sum_free(UserSum *s)
{
    table_free(&s->names);
    table_free(&s->wikis);
    PyMem_RawFree(s->pairs.slots);
    for (uint32_t i = 0; i < s->members_cap; i++) {
        PyMem_RawFree(s->members[i].ids);
    }
    PyMem_RawFree(s->members);
    PyMem_RawFree(s->out.data);
}

/* ---- totals: [events, bots, added, removed] per type, and per wiki and type ---- */

/* Rows summed per key of a table (indexed like its keys). */
typedef struct {
    uint64_t (*rows)[4];
    uint32_t cap;
} Rows;

static int
add_row(Rows *r, uint32_t id, const uint64_t add[4])
{
    if (id >= r->cap) {
        uint32_t cap = r->cap * 2 + 64 > id ? r->cap * 2 + 64 : id + 64;
        uint64_t(*bigger)[4] = PyMem_RawRealloc(r->rows, sizeof(uint64_t[4]) * cap);
        if (bigger == NULL) {
            return E_MEMORY;
        }
        memset(bigger + r->cap, 0, sizeof(uint64_t[4]) * (cap - r->cap));
        r->rows = bigger;
        r->cap = cap;
    }
    uint64_t *row = r->rows[id];
    for (int i = 0; i < 4; i++) {
        if (row[i] > UINT64_MAX - add[i]) {
            return E_RANGE; /* beyond 64 bits: Python sums it */
        }
        row[i] += add[i];
    }
    return OK;
}

static void
put_row(Out *o, const uint64_t *row)
{
    put_array(o, 4);
    for (int i = 0; i < 4; i++) {
        put_uint(o, row[i]);
    }
}

typedef struct {
    Table kinds, servers, rows; /* rows: (wiki, type) */
    Rows kind_sums, row_sums;
    uint32_t *row_server; /* each row's wiki, an index into servers */
    uint32_t row_cap;
} Totals;

static int
totals_init(Totals *t)
{
    memset(t, 0, sizeof(*t));
    return table_init(&t->kinds, 16) || table_init(&t->servers, 64) || table_init(&t->rows, 256)
               ? E_MEMORY
               : OK;
}

static void
totals_free(Totals *t)
{
    table_free(&t->kinds);
    table_free(&t->servers);
    table_free(&t->rows);
    PyMem_RawFree(t->kind_sums.rows);
    PyMem_RawFree(t->row_sums.rows);
    PyMem_RawFree(t->row_server);
}

/* Add a row to its type's and to its wiki and type's (`hs`, `hk`: the wiki's and the type's
 * hash_key). */
static int
totals_add_hashed(Totals *t, uint64_t hs, const unsigned char *server, uint32_t slen, uint64_t hk,
                  const unsigned char *kind, uint32_t klen, const uint64_t add[4])
{
    int64_t k = table_find_hashed(&t->kinds, hk, kind, klen, NULL, 0);
    int64_t w = table_find_hashed(&t->servers, hs, server, slen, NULL, 0);
    int64_t r = table_find_hashed(&t->rows, hash_bytes(kind, klen, hs ^ 0xA5), server, slen, kind,
                                  klen);
    if (k < 0 || w < 0 || r < 0) {
        return E_MEMORY;
    }
    if ((uint32_t)r >= t->row_cap) {
        uint32_t cap = t->row_cap * 2 + 64;
        uint32_t *bigger = PyMem_RawRealloc(t->row_server, sizeof(uint32_t) * cap);
        if (bigger == NULL) {
            return E_MEMORY;
        }
        t->row_server = bigger;
        t->row_cap = cap;
    }
    t->row_server[r] = (uint32_t)w;
    int error = add_row(&t->kind_sums, (uint32_t)k, add);
    return error ? error : add_row(&t->row_sums, (uint32_t)r, add);
}

static int
totals_add(Totals *t, const unsigned char *server, uint32_t slen, const unsigned char *kind,
           uint32_t klen, const uint64_t add[4])
{
    return totals_add_hashed(t, hash_key(server, slen, NULL, 0), server, slen,
                             hash_key(kind, klen, NULL, 0), kind, klen, add);
}

/* Add a `c` blob's rows ([wiki -> type -> row, wiki -> distinct]; its distinct users are
 * counted again from the users). Its `t` blob is the sum of these rows per type. */
static int
totals_add_blob(Totals *t, const Blob *blob)
{
    Reader r = {blob->data, blob->data + blob->size};
    uint32_t fields, wikis, kinds, width, distinct;
    if (read_array(&r, &fields) || fields != 2 || read_map(&r, &wikis)) {
        return E_FORMAT;
    }
    for (uint32_t w = 0; w < wikis; w++) {
        const unsigned char *wiki;
        uint32_t wlen;
        if (read_str(&r, &wiki, &wlen) || read_map(&r, &kinds)) {
            return E_FORMAT;
        }
        for (uint32_t k = 0; k < kinds; k++) {
            const unsigned char *kind;
            uint32_t klen;
            uint64_t add[4];
            if (read_str(&r, &kind, &klen) || read_array(&r, &width) || width != 4) {
                return E_FORMAT;
            }
            for (int i = 0; i < 4; i++) {
                if (read_uint(&r, &add[i])) {
                    return E_FORMAT;
                }
            }
            int error = totals_add(t, wiki, wlen, kind, klen, add);
            if (error) {
                return error;
            }
        }
    }
    if (read_map(&r, &distinct)) {
        return E_FORMAT;
    }
    for (uint32_t w = 0; w < distinct; w++) {
        const unsigned char *wiki;
        uint32_t wlen;
        uint64_t n;
        if (read_str(&r, &wiki, &wlen) || read_uint(&r, &n)) {
            return E_FORMAT;
        }
    }
    return r.p == r.end ? OK : E_FORMAT;
}

/* Write the `t` ([type -> row, distinct users]) and `c` ([wiki -> type -> row, wiki ->
 * distinct users]) blobs; a wiki's rows in the order met, grouped by a counting sort. */
static int
put_totals(const Totals *t, const UserSum *users, Out *tout, Out *cout)
{
    put_array(tout, 2);
    put_map(tout, t->kinds.used);
    for (uint32_t k = 0; k < t->kinds.used; k++) {
        put_str(tout, t->kinds.keys[k].a, t->kinds.keys[k].alen);
        put_row(tout, t->kind_sums.rows[k]);
    }
    put_uint(tout, users->names.used);
    uint32_t *first = PyMem_RawCalloc((size_t)t->servers.used + 1, sizeof(uint32_t));
    uint32_t *grouped = PyMem_RawMalloc(sizeof(uint32_t) * (t->rows.used ? t->rows.used : 1));
    if (first == NULL || grouped == NULL) {
        PyMem_RawFree(first);
        PyMem_RawFree(grouped);
        return E_MEMORY;
    }
    for (uint32_t r = 0; r < t->rows.used; r++) {
        first[t->row_server[r] + 1]++;
    }
    for (uint32_t w = 0; w < t->servers.used; w++) {
        first[w + 1] += first[w];
    }
    for (uint32_t r = 0; r < t->rows.used; r++) {
        grouped[first[t->row_server[r]]++] = r;
    }
    put_array(cout, 2);
    put_map(cout, t->servers.used);
    uint32_t at = 0;
    for (uint32_t w = 0; w < t->servers.used; w++) {
        put_str(cout, t->servers.keys[w].a, t->servers.keys[w].alen);
        uint32_t end = first[w]; /* advanced to where the next wiki's rows begin */
        put_map(cout, end - at);
        for (; at < end; at++) {
            put_str(cout, t->rows.keys[grouped[at]].b, t->rows.keys[grouped[at]].blen);
            put_row(cout, t->row_sums.rows[grouped[at]]);
        }
    }
    PyMem_RawFree(first);
    PyMem_RawFree(grouped);
    put_map(cout, users->wikis.used);
    for (uint32_t w = 0; w < users->wikis.used; w++) {
        put_str(cout, users->wikis.keys[w].a, users->wikis.keys[w].alen);
        put_uint(cout, w < users->members_cap ? users->members[w].used : 0);
    }
    return tout->failed || cout->failed ? E_MEMORY : OK;
}

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

/* ---- minutes: a replay worker's recorded events summed per minute, as blobs ---- */

/* One recorded event (window_packing.RawWindowEvent): its text as UTF-8 slices of the str
 * objects (cached in them by CPython), which the caller's list keeps alive. */
typedef struct {
    int64_t minute, diff;
    const unsigned char *server, *kind, *user, *title;
    uint32_t slen, klen, ulen, tlen;
    int bot;
} Event;

/* A minute as a key that sorts as the signed minute does. */
static uint64_t
minute_key(int64_t minute)
{
    return (uint64_t)minute ^ ((uint64_t)1 << 63);
}

static const unsigned char UNKNOWN[] = "unknown"; /* windows.UNKNOWN_TYPE */

/* Sum one minute's events (`at`: their indices) into its t, c, u and p blobs. */
static int
sum_minute(const Event *events, const Keyed *at, uint32_t n, Out out[4])
{
    Totals totals;
    Table pages;
    UserSum users;
    memset(&pages, 0, sizeof(Table));
    memset(&users, 0, sizeof(users));
    int error = totals_init(&totals) || table_init(&pages, n) || user_sum_init(&users, n, n)
                    ? E_MEMORY
                    : OK;
    for (uint32_t i = 0; !error && i < n; i++) {
        const Event *e = &events[at[i].index];
        const unsigned char *kind = e->klen ? e->kind : UNKNOWN;
        uint32_t klen = e->klen ? e->klen : (uint32_t)(sizeof(UNKNOWN) - 1);
        uint64_t add[4] = {1, e->bot != 0, e->diff > 0 ? (uint64_t)e->diff : 0,
                           e->diff < 0 ? (uint64_t)0 - (uint64_t)e->diff : 0};
        uint64_t hs = hash_key(e->server, e->slen, NULL, 0); /* the wiki, hashed once */
        error = totals_add_hashed(&totals, hs, e->server, e->slen, hash_key(kind, klen, NULL, 0),
                                  kind, klen, add);
        if (!error && e->ulen) {
            int64_t name = table_find(&users.names, e->user, e->ulen, NULL, 0);
            int64_t wiki = table_find_hashed(&users.wikis, hs, e->server, e->slen, NULL, 0);
            if (name < 0 || wiki < 0) {
                error = E_MEMORY;
                break;
            }
            users.names.keys[name].count += 1;
            error = add_member(&users, (uint32_t)wiki, (uint32_t)name);
        }
        if (!error && e->tlen) {
            int64_t page = table_find_hashed(&pages, hash_bytes(e->title, e->tlen, hs ^ 0xA5),
                                             e->server, e->slen, e->title, e->tlen);
            if (page < 0) {
                error = E_MEMORY;
                break;
            }
            pages.keys[page].count += 1;
        }
    }
    error = error ? error : put_totals(&totals, &users, &out[0], &out[1]);
    error = error ? error : put_users(&users);
    if (!error) {
        put_bytes(&out[2], users.out.data, users.out.used);
        error = put_pages(&out[3], &pages);
    }
    totals_free(&totals);
    table_free(&pages);
    user_sum_free(&users);
    for (int d = 0; !error && d < 4; d++) {
        error = out[d].failed ? E_MEMORY : OK;
    }
    return error;
}

/* The UTF-8 of a str (or NULL, 0 for None or, where `optional`, anything false): -1 and an
 * exception for anything else or a str that has no UTF-8 (a lone surrogate). */
static int
text_of(PyObject *value, int optional, const unsigned char **text, uint32_t *size)
{
    *text = NULL;
    *size = 0;
    if (value == Py_None && optional) {
        return 0;
    }
    if (!PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "minutes(): a name must be a str");
        return -1;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
    if (utf8 == NULL) {
        return -1;
    }
    if (n >= (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "minutes(): a name longer than 4 GiB");
        return -1;
    }
    *text = (const unsigned char *)utf8;
    *size = (uint32_t)n;
    return 0;
}

static int
event_of(PyObject *item, Event *e)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 7) {
        PyErr_SetString(PyExc_TypeError, "minutes(): an event must be a tuple of 7");
        return -1;
    }
    e->minute = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 0));
    if (e->minute == -1 && PyErr_Occurred()) {
        return -1;
    }
    e->diff = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 6));
    if (e->diff == -1 && PyErr_Occurred()) {
        return -1;
    }
    e->bot = PyObject_IsTrue(PyTuple_GET_ITEM(item, 3));
    if (e->bot < 0 || text_of(PyTuple_GET_ITEM(item, 1), 0, &e->server, &e->slen) ||
        text_of(PyTuple_GET_ITEM(item, 2), 1, &e->kind, &e->klen) ||
        text_of(PyTuple_GET_ITEM(item, 4), 1, &e->user, &e->ulen) ||
        text_of(PyTuple_GET_ITEM(item, 5), 1, &e->title, &e->tlen)) {
        return -1;
    }
    return 0;
}

static PyObject *
minute_blobs(const Out out[4])
{
    static const char *dims[4] = {"t", "c", "u", "p"};
    PyObject *list = PyList_New(4);
    for (int d = 0; list != NULL && d < 4; d++) {
        PyObject *pair = Py_BuildValue("(sy#)", dims[d], (const char *)out[d].data,
                                       (Py_ssize_t)out[d].used);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, d, pair);
    }
    return list;
}

/* The events summed per minute: {minute: [(dimension, blob)]}; `events` is used up. */
static PyObject *
sum_events(Event *events, Py_ssize_t n)
{
    PyObject *result = NULL;
    Keyed *order = PyMem_RawMalloc(sizeof(Keyed) * (size_t)(n ? n : 1));
    if (order == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        order[i] = (Keyed){minute_key(events[i].minute), (uint32_t)i};
    }
    qsort(order, (size_t)n, sizeof(Keyed), by_key);
    result = PyDict_New();
    for (Py_ssize_t start = 0; result != NULL && start < n;) {
        Py_ssize_t end = start;
        while (end < n && order[end].key == order[start].key) {
            end++;
        }
        Out out[4];
        memset(out, 0, sizeof(out));
        int error = sum_minute(events, order + start, (uint32_t)(end - start), out);
        PyObject *key = NULL, *blobs = NULL;
        if (error) {
            if (error == E_RANGE) {
                PyErr_SetString(PyExc_OverflowError, "minutes(): bytes changed beyond 64 bits");
            } else {
                PyErr_NoMemory();
            }
        } else {
            key = PyLong_FromLongLong(events[order[start].index].minute);
            blobs = minute_blobs(out);
        }
        if (key == NULL || blobs == NULL || PyDict_SetItem(result, key, blobs) < 0) {
            Py_CLEAR(result);
        }
        Py_XDECREF(key);
        Py_XDECREF(blobs);
        for (int d = 0; d < 4; d++) {
            PyMem_RawFree(out[d].data);
        }
        start = end;
    }
    PyMem_RawFree(order);
    return result;
}

static PyObject *
minutes(PyObject *module, PyObject *arg)
{
    (void)module;
    PyObject *fast = PySequence_Fast(arg, "minutes(): expected a list of events");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *result = NULL;
    Event *events = PyMem_RawMalloc(sizeof(Event) * (size_t)(n ? n : 1));
    if (events == NULL || n >= (Py_ssize_t)UINT32_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (event_of(PySequence_Fast_GET_ITEM(fast, i), &events[i])) {
            goto done;
        }
    }
    result = sum_events(events, n);
done:
    PyMem_RawFree(events);
    Py_DECREF(fast);
    return result;
}

/* ---- decoded: a replay worker's decoded events (events.RecentChange) read in place ---- */

/* Where a struct type keeps some fields: msgspec keeps a Struct's fields in slots, read here
 * through their member descriptors' offsets (what `obj.field` reads, without the lookup). */
static int
offsets_of(PyTypeObject *type, const char *const *names, int n, Py_ssize_t *offsets)
{
    for (int i = 0; i < n; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, names[i]); /* borrowed */
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "decoded_minutes(): %s.%s is not a slot", type->tp_name,
                         names[i]);
            return -1;
        }
        offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    return 0;
}

/* A slot's value (borrowed); NULL with TypeError where it is unset or not of `type` (NULL:
 * any type). */
static PyObject *
slot(PyObject *obj, Py_ssize_t offset, PyTypeObject *type)
{
    PyObject *value = *(PyObject **)((char *)obj + offset);
    if (value == NULL || (type != NULL && !Py_IS_TYPE(value, type))) {
        PyErr_SetString(PyExc_TypeError, "decoded_minutes(): a field is unset or mistyped");
        return NULL;
    }
    return value;
}

enum { F_META, F_SERVER, F_BOT, F_USER, F_TYPE, F_TITLE, F_LENGTH, EVENT_FIELDS };
enum { M_DOMAIN, M_DT, META_FIELDS };
enum { L_OLD, L_NEW, LENGTH_FIELDS };

typedef struct {
    PyTypeObject *event, *meta, *length; /* length: NULL until one is met */
    Py_ssize_t e[EVENT_FIELDS], m[META_FIELDS], l[LENGTH_FIELDS];
    PyObject *canary, *cache, *minute_of;
    PyObject *prev_dt; /* the last time read through the cache, and its minute */
    int64_t prev_minute;
} Decoding;

/* An optional int as int64 (None: 0); -1 with an exception past 64 bits or for a non-int. */
static int
int_or_zero(PyObject *value, int64_t *out)
{
    *out = 0;
    if (value == Py_None) {
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "decoded_minutes(): a length is not an int");
        return -1;
    }
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "decoded_minutes(): a length beyond 64 bits");
        return -1;
    }
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* Whether two compact ASCII strs share their first 16 characters. */
static int
same_prefix(PyObject *a, PyObject *b)
{
    return a != NULL && PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b) &&
           PyUnicode_GET_LENGTH(a) >= 16 && PyUnicode_GET_LENGTH(b) >= 16 &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), 16) == 0;
}

/* The minute of a `meta.dt` as window_delta.window_rows reads it: a UTC time's first 16 characters looked
 * up in windows.MINUTE_CACHE, else windows.minute_of; 1 if it has none (no time, unreadable),
 * -1 with an exception. A time sharing its first 16 characters with the last one found in the
 * cache is given that one's minute: the cache still holds it (only minute_of changes it, and
 * `prev_dt` is forgotten whenever it is called). */
static int
minute_for(Decoding *d, PyObject *dt, int64_t *minute)
{
    if (dt == Py_None) {
        return 1;
    }
    if (!PyUnicode_Check(dt)) {
        PyErr_SetString(PyExc_TypeError, "decoded_minutes(): a time is not a str");
        return -1;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(dt);
    if (len == 0) {
        return 1;
    }
    PyObject *found = NULL; /* new reference */
    int utc = PyUnicode_READ_CHAR(dt, len - 1) == 'Z';
    if (utc) {
        if (same_prefix(d->prev_dt, dt)) {
            *minute = d->prev_minute;
            return 0;
        }
        PyObject *prefix = PyUnicode_Substring(dt, 0, len < 16 ? len : 16);
        if (prefix == NULL) {
            return -1;
        }
        found = PyDict_GetItemWithError(d->cache, prefix);
        Py_DECREF(prefix);
        if (found == NULL && PyErr_Occurred()) {
            return -1;
        }
        Py_XINCREF(found);
    }
    int cached = found != NULL;
    if (found == NULL) {
        d->prev_dt = NULL;
        found = PyObject_CallOneArg(d->minute_of, dt);
        if (found == NULL) {
            return -1;
        }
    }
    int status = 1;
    if (found != Py_None) {
        *minute = PyLong_AsLongLong(found);
        status = *minute == -1 && PyErr_Occurred() ? -1 : 0;
        if (status == 0 && cached) {
            d->prev_dt = dt; /* alive: the caller's list holds its event */
            d->prev_minute = *minute;
        }
    }
    Py_DECREF(found);
    return status;
}

/* One decoded event as `Event`: 1 if it adds nothing to the windows (a canary, no minute),
 * -1 with an exception. */
static int
decoded_event(Decoding *d, PyObject *item, Event *e)
{
    if (!Py_IS_TYPE(item, d->event)) {
        PyErr_SetString(PyExc_TypeError, "decoded_minutes(): events of several types");
        return -1;
    }
    PyObject *meta = slot(item, d->e[F_META], d->meta);
    PyObject *domain = meta == NULL ? NULL : slot(meta, d->m[M_DOMAIN], NULL);
    PyObject *dt = domain == NULL ? NULL : slot(meta, d->m[M_DT], NULL);
    if (dt == NULL) {
        return -1;
    }
    if (PyUnicode_Check(domain)) {
        int canary = PyUnicode_Compare(domain, d->canary);
        if (canary == 0) {
            return 1;
        }
        if (canary == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    int status = minute_for(d, dt, &e->minute);
    if (status != 0) {
        return status;
    }
    PyObject *values[EVENT_FIELDS];
    for (int f = F_SERVER; f < EVENT_FIELDS; f++) {
        values[f] = slot(item, d->e[f], NULL);
        if (values[f] == NULL) {
            return -1;
        }
    }
    e->diff = 0;
    PyObject *length = values[F_LENGTH];
    if (length != Py_None) {
        if (d->length == NULL) {
            d->length = Py_TYPE(length);
            if (offsets_of(d->length, (const char *const[]){"old", "new"}, LENGTH_FIELDS, d->l)) {
                return -1;
            }
        }
        if (!Py_IS_TYPE(length, d->length)) {
            PyErr_SetString(PyExc_TypeError, "decoded_minutes(): lengths of several types");
            return -1;
        }
        PyObject *old = slot(length, d->l[L_OLD], NULL);
        PyObject *new = old == NULL ? NULL : slot(length, d->l[L_NEW], NULL);
        if (new == NULL) {
            return -1;
        }
        int64_t before, after;
        if (new != Py_None) {
            if (int_or_zero(old, &before) || int_or_zero(new, &after)) {
                return -1;
            }
            if (__builtin_sub_overflow(after, before, &e->diff)) {
                PyErr_SetString(PyExc_OverflowError, "decoded_minutes(): a length change "
                                                     "beyond 64 bits");
                return -1;
            }
        }
    }
    e->bot = PyObject_IsTrue(values[F_BOT]);
    if (e->bot < 0 || text_of(values[F_SERVER], 0, &e->server, &e->slen) ||
        text_of(values[F_TYPE], 1, &e->kind, &e->klen) ||
        text_of(values[F_USER], 1, &e->user, &e->ulen) ||
        text_of(values[F_TITLE], 1, &e->title, &e->tlen)) {
        return -1;
    }
    return 0;
}

static PyObject *
decoded_minutes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyList_Check(args[0]) || !PyUnicode_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "decoded_minutes() takes a list of events, the canary domain, the "
                        "minute cache and minute_of");
        return NULL;
    }
    PyObject *list = args[0];
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n == 0) {
        return PyDict_New();
    }
    Decoding d = {.event = Py_TYPE(PyList_GET_ITEM(list, 0)),
                  .canary = args[1],
                  .cache = args[2],
                  .minute_of = args[3]};
    static const char *const event_fields[EVENT_FIELDS] = {
        "meta", "server_name", "bot", "user", "type", "title", "length"};
    if (offsets_of(d.event, event_fields, EVENT_FIELDS, d.e)) {
        return NULL;
    }
    PyObject *meta = slot(PyList_GET_ITEM(list, 0), d.e[F_META], NULL);
    if (meta == NULL) {
        return NULL;
    }
    d.meta = Py_TYPE(meta);
    if (offsets_of(d.meta, (const char *const[]){"domain", "dt"}, META_FIELDS, d.m)) {
        return NULL;
    }
    Event *events = PyMem_RawMalloc(sizeof(Event) * (size_t)n);
    if (events == NULL || n >= (Py_ssize_t)UINT32_MAX) {
        PyMem_RawFree(events);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the list is not changed meanwhile: minute_of is windows.minute_of */
        int status = decoded_event(&d, PyList_GET_ITEM(list, i), &events[kept]);
        if (status < 0) {
            goto done;
        }
        kept += status == 0;
    }
    result = sum_events(events, kept);
done:
    PyMem_RawFree(events);
    return result;
}

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
