/* streamlog._ingest: the common case of StreamWriter.add in C.
 *
 * add_plain(batch, keys, entries, out_keys, out_payloads, out_arrivals, prefix, seq, last, bound, max_bytes,
 *           now)
 * takes records of `batch` (a list or tuple) keyed by `keys` (list or tuple, possibly shorter), in
 * order, as long as each one is the common case:
 *   - its key is an int (exactly int, not bool) within [-2**63, 2**64), whose encoding (keys.py) is
 *     >= the previous key's (`last` for the first) and < `bound`;
 *   - the record is not None and is a scalar (None, bool, int within [-2**63, 2**64), float, str
 *     without lone surrogates, bytes; exact types) or a tuple of such scalars, and its encoding
 *     (codec.py's plain layout: the msgpack of the record) is at most `max_bytes` bytes.
 * For each record taken it appends the encoded key to `out_keys`, the encoding to `out_payloads`, `now`
 * to `out_arrivals` and the ring entry (record key, record, now) to `entries`, the record key being
 * prefix + encoded key + seq (u64 big-endian), seq counting up from `seq`.  It stops at the first record that is not the
 * common case (or on running out of memory) and returns (taken, last encoded key, bytes of the
 * encodings taken); the caller hands the rest to the Python code, which raises what is wrong with it.
 * The bytes are exactly those of keys.encode_key and of codec's record encoder (a hypothesis test
 * compares them).  No Python code runs meanwhile; only bad arguments raise (TypeError).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_ITEMS_SIZE 0xFFFFFFFFu /* str, bytes and tuples beyond u32 lengths go to Python */

/* The msgpack size of scalar `o`, or -1 when it is not a scalar of the common case. */
static Py_ssize_t scalar_size(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None || t == &PyBool_Type)
        return 1;
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(o);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return -1;
            }
            return 9;
        }
        if (overflow < 0)
            return -1;
        if (v >= 0)
            return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= 0xFFFFFFFFLL ? 5 : 9;
        return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= -2147483648LL ? 5 : 9;
    }
    if (t == &PyFloat_Type)
        return 9;
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(o, &n) == NULL) { /* lone surrogates: Python encodes them */
            PyErr_Clear();
            return -1;
        }
        if ((size_t)n > MAX_ITEMS_SIZE)
            return -1;
        return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        if ((size_t)n > MAX_ITEMS_SIZE)
            return -1;
        return n + (n < 256 ? 2 : n < 65536 ? 3 : 5);
    }
    return -1;
}

static unsigned char *put_be(unsigned char *p, unsigned long long v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
    return p + n;
}

/* Write a u8/u16/u32 length header: `tags` are the three tags for those widths. */
static unsigned char *put_length(unsigned char *p, size_t n, unsigned char t8, unsigned char t16, unsigned char t32)
{
    if (n < 256 && t8) {
        *p++ = t8;
        return put_be(p, n, 1);
    }
    if (n < 65536) {
        *p++ = t16;
        return put_be(p, n, 2);
    }
    *p++ = t32;
    return put_be(p, n, 4);
}

/* Write the msgpack of scalar `o` (scalar_size accepted it). */
static unsigned char *put_scalar(unsigned char *p, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None) {
        *p++ = 0xC0;
    } else if (t == &PyBool_Type) {
        *p++ = o == Py_True ? 0xC3 : 0xC2;
    } else if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow > 0) {
            *p++ = 0xCF;
            p = put_be(p, PyLong_AsUnsignedLongLong(o), 8);
        } else if (v >= 0) {
            if (v < 128) {
                *p++ = (unsigned char)v;
            } else if (v < 256) {
                *p++ = 0xCC;
                p = put_be(p, (unsigned long long)v, 1);
            } else if (v < 65536) {
                *p++ = 0xCD;
                p = put_be(p, (unsigned long long)v, 2);
            } else if (v <= 0xFFFFFFFFLL) {
                *p++ = 0xCE;
                p = put_be(p, (unsigned long long)v, 4);
            } else {
                *p++ = 0xCF;
                p = put_be(p, (unsigned long long)v, 8);
            }
        } else if (v >= -32) {
            *p++ = (unsigned char)(v & 0xFF);
        } else if (v >= -128) {
            *p++ = 0xD0;
            p = put_be(p, (unsigned long long)v, 1);
        } else if (v >= -32768) {
            *p++ = 0xD1;
            p = put_be(p, (unsigned long long)v, 2);
        } else if (v >= -2147483648LL) {
            *p++ = 0xD2;
            p = put_be(p, (unsigned long long)v, 4);
        } else {
            *p++ = 0xD3;
            p = put_be(p, (unsigned long long)v, 8);
        }
    } else if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        unsigned long long bits;
        memcpy(&bits, &d, 8);
        *p++ = 0xCB;
        p = put_be(p, bits, 8);
    } else if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n); /* cached by scalar_size: cannot fail now */
        if (n < 32)
            *p++ = (unsigned char)(0xA0 | n);
        else
            p = put_length(p, (size_t)n, 0xD9, 0xDA, 0xDB);
        memcpy(p, s, (size_t)n);
        p += n;
    } else { /* bytes */
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        p = put_length(p, (size_t)n, 0xC4, 0xC5, 0xC6);
        memcpy(p, PyBytes_AS_STRING(o), (size_t)n);
        p += n;
    }
    return p;
}

/* The plain-layout encoding of `record` (new reference), or NULL without an exception set when it is
 * not the common case or is larger than max_bytes (also when out of memory: Python then retries). */
static PyObject *encode_record(PyObject *record, Py_ssize_t max_bytes)
{
    Py_ssize_t size;
    PyObject *out;
    unsigned char *p;
    if (Py_TYPE(record) == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(record);
        if ((size_t)n > MAX_ITEMS_SIZE)
            return NULL;
        size = n < 16 ? 1 : n < 65536 ? 3 : 5;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t item = scalar_size(PyTuple_GET_ITEM(record, i));
            if (item < 0)
                return NULL;
            size += item;
        }
        if (size > max_bytes || (out = PyBytes_FromStringAndSize(NULL, size)) == NULL) {
            PyErr_Clear();
            return NULL;
        }
        p = (unsigned char *)PyBytes_AS_STRING(out);
        if (n < 16)
            *p++ = (unsigned char)(0x90 | n);
        else
            p = put_length(p, (size_t)n, 0, 0xDC, 0xDD);
        for (Py_ssize_t i = 0; i < n; i++)
            p = put_scalar(p, PyTuple_GET_ITEM(record, i));
        return out;
    }
    size = scalar_size(record);
    if (size < 0)
        return NULL;
    if (size > max_bytes || (out = PyBytes_FromStringAndSize(NULL, size)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    put_scalar((unsigned char *)PyBytes_AS_STRING(out), record);
    return out;
}

/* The encoding of int key `key` (keys.encode_key), new reference; NULL without an exception set when
 * it is not an int in [-2**63, 2**64) (or out of memory). */
static PyObject *encode_int_key(PyObject *key)
{
    unsigned char buf[10];
    unsigned long long magnitude;
    int length = 0, overflow;
    if (Py_TYPE(key) != &PyLong_Type)
        return NULL;
    long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (overflow < 0)
        return NULL;
    if (overflow > 0 || v >= 0) {
        magnitude = overflow > 0 ? PyLong_AsUnsignedLongLong(key) : (unsigned long long)v;
        if (overflow > 0 && magnitude == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        for (unsigned long long rest = magnitude; rest; rest >>= 8)
            length++;
        buf[0] = (unsigned char)(0x20 + length);
    } else {
        /* the fewest bytes (at least one) holding v as v + 256**length */
        unsigned long long below = (unsigned long long)(-(v + 1));
        for (; below; below >>= 8)
            length++;
        if (length == 0)
            length = 1;
        magnitude = (unsigned long long)v; /* its low `length` bytes are v + 256**length */
        buf[0] = (unsigned char)(0x20 - length);
    }
    put_be(buf + 1, magnitude, length);
    buf[length + 1] = 0x00;
    PyObject *out = PyBytes_FromStringAndSize((const char *)buf, length + 2);
    if (out == NULL)
        PyErr_Clear();
    return out;
}

/* bytes order: <0, 0, >0 as a < b, a == b, a > b */
static int compare(PyObject *a, PyObject *b)
{
    Py_ssize_t na = PyBytes_GET_SIZE(a), nb = PyBytes_GET_SIZE(b);
    int c = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)(na < nb ? na : nb));
    return c ? c : (na > nb) - (na < nb);
}

/* The record key prefix + encoded + u64be(seq), new reference (NULL, no exception, when out of memory). */
static PyObject *record_key(PyObject *prefix, PyObject *encoded, unsigned long long seq)
{
    Py_ssize_t np = PyBytes_GET_SIZE(prefix), ne = PyBytes_GET_SIZE(encoded);
    PyObject *out = PyBytes_FromStringAndSize(NULL, np + ne + 8);
    if (out == NULL) {
        PyErr_Clear();
        return NULL;
    }
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, PyBytes_AS_STRING(prefix), (size_t)np);
    memcpy(p + np, PyBytes_AS_STRING(encoded), (size_t)ne);
    put_be((unsigned char *)p + np + ne, seq, 8);
    return out;
}

static void drop_last(PyObject *list)
{
    PyList_SetSlice(list, PyList_GET_SIZE(list) - 1, PyList_GET_SIZE(list), NULL);
}

/* Append each item to its list, all or none; 0 on success, -1 (no exception set) when out of memory. */
static int append_all(PyObject *keys, PyObject *key, PyObject *payloads, PyObject *payload, PyObject *arrivals,
                      PyObject *now, PyObject *entries, PyObject *entry)
{
    if (PyList_Append(keys, key) < 0)
        goto fail;
    if (PyList_Append(payloads, payload) < 0)
        goto fail_keys;
    if (PyList_Append(arrivals, now) < 0)
        goto fail_payloads;
    if (PyList_Append(entries, entry) < 0)
        goto fail_arrivals;
    return 0;
fail_arrivals:
    drop_last(arrivals);
fail_payloads:
    drop_last(payloads);
fail_keys:
    drop_last(keys);
fail:
    PyErr_Clear();
    return -1;
}

static PyObject *add_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 12) {
        PyErr_Format(PyExc_TypeError, "add_plain takes 12 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *batch = args[0], *keys = args[1], *entries = args[2], *out_keys = args[3], *out_payloads = args[4];
    PyObject *out_arrivals = args[5], *prefix = args[6], *last = args[8], *bound = args[9], *now = args[11];
    if (!(PyList_Check(batch) || PyTuple_Check(batch)) || !(PyList_Check(keys) || PyTuple_Check(keys))
        || !PyList_Check(entries) || !PyList_Check(out_keys) || !PyList_Check(out_payloads)
        || !PyList_Check(out_arrivals) || !PyBytes_Check(prefix) || !PyBytes_Check(last) || !PyBytes_Check(bound)) {
        PyErr_SetString(PyExc_TypeError, "add_plain: batch and keys are lists or tuples, entries and the outputs "
                                         "lists, prefix, last and bound bytes");
        return NULL;
    }
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[7]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[10]);
    if (max_bytes == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        max_bytes = PY_SSIZE_T_MAX;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys), taken = 0, size = 0;
    if (PySequence_Fast_GET_SIZE(batch) < n)
        n = PySequence_Fast_GET_SIZE(batch);
    PyObject **records = PySequence_Fast_ITEMS(batch), **key_items = PySequence_Fast_ITEMS(keys);
    Py_INCREF(last);
    for (; taken < n; taken++) {
        PyObject *record = records[taken];
        if (record == Py_None)
            break;
        PyObject *encoded = encode_int_key(key_items[taken]);
        if (encoded == NULL)
            break;
        if (compare(last, encoded) > 0 || compare(encoded, bound) >= 0) {
            Py_DECREF(encoded);
            break;
        }
        PyObject *payload = encode_record(record, max_bytes);
        if (payload == NULL) {
            Py_DECREF(encoded);
            break;
        }
        PyObject *rkey = record_key(prefix, encoded, seq + (unsigned long long)taken);
        PyObject *entry = rkey == NULL ? NULL : PyTuple_Pack(3, rkey, record, now);
        Py_XDECREF(rkey);
        if (entry == NULL
            || append_all(out_keys, encoded, out_payloads, payload, out_arrivals, now, entries, entry) < 0) {
            PyErr_Clear();
            Py_XDECREF(entry);
            Py_DECREF(payload);
            Py_DECREF(encoded);
            break;
        }
        size += PyBytes_GET_SIZE(payload);
        Py_DECREF(entry);
        Py_DECREF(payload);
        Py_SETREF(last, encoded);
    }
    PyObject *result = Py_BuildValue("(nNn)", taken, last, size); /* N: steals our reference to last */
    return result;
}

static PyMethodDef methods[] = {
    {"add_plain", (PyCFunction)(void (*)(void))add_plain, METH_FASTCALL,
     "add_plain(batch, keys, entries, out_keys, out_payloads, out_arrivals, prefix, seq, last, bound, max_bytes, now)"
     "\n--\n\n"
     "Encode and append the leading records of batch that are the common case (int keys, plain records); "
     "return (taken, last encoded key, bytes of the encodings)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "streamlog._ingest",
                                    "The common case of StreamWriter.add in C (see add_plain).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ingest(void)
{
    return PyModule_Create(&module);
}
