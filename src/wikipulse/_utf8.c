/* wikipulse._utf8: is this UTF-8? Answered without building a str.
 *
 * The hot loops of a replay and of the live stream must refuse an event with bad UTF-8
 * anywhere in it (msgspec checks only the strings it decodes). `bytes.decode()` answers that
 * by building the whole str, widened to two or four bytes a character for most non-Latin
 * text, which cost more than a third of msgspec's own decoding; this only reads the bytes.
 *
 * Well-formed means what Python's strict UTF-8 codec accepts: the byte sequences of the
 * Unicode Standard's Table 3-7, so no overlong forms, no surrogates (U+D800-DFFF) and nothing
 * above U+10FFFF. tests/test_utf8.py checks every answer against `bytes.decode()`.
 *
 * `checked_lines` also cuts a replay worker's memory-mapped range into lines, checking each
 * as it copies it out: one call a block instead of a `readline` a line plus a check.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int
well_formed(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time: most of an event is ASCII. */
        while (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & UINT64_C(0x8080808080808080)) {
                break;
            }
            i += 8;
        }
        if (i >= n) {
            break;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i += 1;
        }
        else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) {
                return 0;
            }
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            /* E0 needs A0-BF next (no overlong form); ED needs 80-9F (no surrogate). */
            unsigned char low = c == 0xE0 ? 0xA0 : 0x80;
            unsigned char high = c == 0xED ? 0x9F : 0xBF;
            if (i + 2 >= n || s[i + 1] < low || s[i + 1] > high || (s[i + 2] & 0xC0) != 0x80) {
                return 0;
            }
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            /* F0 needs 90-BF next (no overlong form); F4 needs 80-8F (at most U+10FFFF). */
            unsigned char low = c == 0xF0 ? 0x90 : 0x80;
            unsigned char high = c == 0xF4 ? 0x8F : 0xBF;
            if (i + 3 >= n || s[i + 1] < low || s[i + 1] > high || (s[i + 2] & 0xC0) != 0x80
                || (s[i + 3] & 0xC0) != 0x80) {
                return 0;
            }
            i += 4;
        }
        else {
            return 0; /* a continuation byte first, C0, C1 or F5-FF */
        }
    }
    return 1;
}

static PyObject *
valid_utf8(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int ok = well_formed(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyObject *
all_valid_utf8(PyObject *module, PyObject *lines)
{
    if (!PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "all_valid_utf8() takes a list of bytes");
        return NULL;
    }
    /* The list is only read: no Python code runs while it is walked. */
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(lines); k++) {
        PyObject *line = PyList_GET_ITEM(lines, k);
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "all_valid_utf8() takes a list of bytes");
            return NULL;
        }
        if (!well_formed((const unsigned char *)PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *
checked_lines(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop, count;
    if (!PyArg_ParseTuple(args, "y*nnn:checked_lines", &view, &start, &stop, &count)) {
        return NULL;
    }
    if (start < 0 || stop > view.len || start > stop || count < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "checked_lines(): start, stop or count out of range");
        return NULL;
    }
    const unsigned char *base = view.buf;
    PyObject *lines = PyList_New(0);
    int valid = 1;
    Py_ssize_t pos = start;
    while (lines != NULL && pos < stop && PyList_GET_SIZE(lines) < count) {
        const unsigned char *newline = memchr(base + pos, '\n', (size_t)(stop - pos));
        Py_ssize_t end = newline != NULL ? newline - base + 1 : stop;
        if (valid && !well_formed(base + pos, end - pos)) {
            valid = 0;
        }
        PyObject *line = PyBytes_FromStringAndSize((const char *)base + pos, end - pos);
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            Py_CLEAR(lines);
            break;
        }
        Py_DECREF(line);
        pos = end;
    }
    PyBuffer_Release(&view);
    if (lines == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NnO)", lines, pos, valid ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"valid_utf8", valid_utf8, METH_O,
     "valid_utf8(data, /)\n--\n\nWhether the bytes are well-formed UTF-8."},
    {"all_valid_utf8", all_valid_utf8, METH_O,
     "all_valid_utf8(lines, /)\n--\n\nWhether every bytes object of the list is well-formed UTF-8."},
    {"checked_lines", checked_lines, METH_VARARGS,
     "checked_lines(data, start, stop, count, /)\n--\n\n"
     "Up to `count` lines of data[start:stop], each with its newline (the last one may have\n"
     "none), the offset after them, and whether all of them are well-formed UTF-8."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wikipulse._utf8",
    .m_doc = "UTF-8 validation without decoding (see utf8.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__utf8(void)
{
    return PyModuleDef_Init(&module);
}
