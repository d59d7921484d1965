/* wikipulse._merge: totals summed: [events, bots, added, removed] per type, and per wiki and type.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_TOTALS_H
#define WIKIPULSE_MERGE_TOTALS_H

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

#endif /* WIKIPULSE_MERGE_TOTALS_H */
