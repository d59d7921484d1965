/* wikipulse._merge: events summed per minute into stored blobs (`sum_events`), from recorded window rows
 * (`minutes`).
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_MINUTES_H
#define WIKIPULSE_MERGE_MINUTES_H

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

#endif /* WIKIPULSE_MERGE_MINUTES_H */
