/* wikipulse._merge: keys summed in an open-addressing hash table (slices of the input, hashed once where
 * a caller looks one up in several tables), sets of (wiki, name) id pairs, and ranking by count.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_TABLE_H
#define WIKIPULSE_MERGE_TABLE_H

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

#endif /* WIKIPULSE_MERGE_TABLE_H */
