/* wikipulse._merge: users summed: names with their counts, and each wiki's members as a set union.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_USERS_H
#define WIKIPULSE_MERGE_USERS_H

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

#endif /* WIKIPULSE_MERGE_USERS_H */
