/* wikipulse._merge: a replay worker's decoded events (events.RecentChange) read in place and
 * summed per minute (`decoded_minutes`), with what `sum_events` of _merge_minutes.h sums.
 *
 * Part of _merge.c (included there, in order, into one translation unit). */
#ifndef WIKIPULSE_MERGE_DECODED_H
#define WIKIPULSE_MERGE_DECODED_H

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

#endif /* WIKIPULSE_MERGE_DECODED_H */
