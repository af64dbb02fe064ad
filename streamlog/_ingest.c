/* streamlog._ingest: the common case of StreamWriter.add in C, and Writer (below), the writer's running
 * state and the recorder's loop for single records (StreamBuffer._read_while).
 *
 * add_plain(batch, keys, entries, out_keys, out_payloads, out_arrivals, prefix, seq, last, bound, max_bytes,
 *           now)
 * takes records of `batch` (a list or tuple) keyed by `keys` (list or tuple, possibly shorter), in
 * order, as long as each one is the common case:
 *   - its key is an int (exactly int, not bool) within [-2**63, 2**64), whose encoding (keys.py) is
 *     >= the previous key's (`last` for the first) and < `bound`;
 *   - the record is not None and is a scalar (None, bool, int within [-2**63, 2**64), float, str
 *     without lone surrogates, bytes; exact types) or a tuple of such scalars, and its encoding
 *     (codec.py's plain layout: the msgpack of the record) is at most `max_bytes` bytes;
 *   - or the record is a tuple of such scalars and at most MAX_ARRAYS numpy arrays, each exactly an ndarray,
 *     C-contiguous, non-empty, of a dtype in codec.array_heads, whose encoding (the general layout, as
 *     codec._encode_flat_arrays writes it, the arrays' bytes copied now) is at most `max_bytes` bytes.
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
#include <structmember.h>
#include <time.h>

#define MAX_ITEMS_SIZE 0xFFFFFFFFu /* str, bytes and tuples beyond u32 lengths go to Python */

/* The msgpack size of int `v`. */
static Py_ssize_t int_size(long long v)
{
    if (v >= 0)
        return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= 0xFFFFFFFFLL ? 5 : 9;
    return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= -2147483648LL ? 5 : 9;
}

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
        return int_size(v);
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

/* Write the msgpack of int `v`. */
static unsigned char *put_int(unsigned char *p, long long v)
{
    if (v >= 0) {
        if (v < 128) {
            *p++ = (unsigned char)v;
            return p;
        }
        if (v < 256) {
            *p++ = 0xCC;
            return put_be(p, (unsigned long long)v, 1);
        }
        if (v < 65536) {
            *p++ = 0xCD;
            return put_be(p, (unsigned long long)v, 2);
        }
        if (v <= 0xFFFFFFFFLL) {
            *p++ = 0xCE;
            return put_be(p, (unsigned long long)v, 4);
        }
        *p++ = 0xCF;
        return put_be(p, (unsigned long long)v, 8);
    }
    if (v >= -32) {
        *p++ = (unsigned char)(v & 0xFF);
        return p;
    }
    if (v >= -128) {
        *p++ = 0xD0;
        return put_be(p, (unsigned long long)v, 1);
    }
    if (v >= -32768) {
        *p++ = 0xD1;
        return put_be(p, (unsigned long long)v, 2);
    }
    if (v >= -2147483648LL) {
        *p++ = 0xD2;
        return put_be(p, (unsigned long long)v, 4);
    }
    *p++ = 0xD3;
    return put_be(p, (unsigned long long)v, 8);
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
        } else {
            p = put_int(p, v);
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

#define MAX_ARRAYS 8 /* tuples holding more arrays go to Python */

static PyObject *ndarray_type, *array_heads, *str_dtype; /* numpy.ndarray, codec.array_heads, "dtype" */

/* An array of a record being encoded: its buffer (to release) and its dtype's spec (a str). */
typedef struct {
    Py_buffer view;
    PyObject *spec;
} ArrayItem;

/* When `o` is an array of the common case (exactly an ndarray, C-contiguous, non-empty, of a dtype in
 * codec.array_heads), fill *item (release it with release_arrays) and return the msgpack size of its body
 * entry, its bytes at `offset`; -1, with no exception set and nothing to release, when it is not. */
static Py_ssize_t array_entry_size(PyObject *o, Py_ssize_t offset, ArrayItem *item)
{
    if (Py_TYPE(o) != (PyTypeObject *)ndarray_type)
        return -1;
    PyObject *dtype = PyObject_GetAttr(o, str_dtype);
    if (dtype == NULL) {
        PyErr_Clear();
        return -1;
    }
    PyObject *head = PyDict_GetItemWithError(array_heads, dtype); /* borrowed */
    Py_DECREF(dtype);
    if (head == NULL || !PyTuple_CheckExact(head) || PyTuple_GET_SIZE(head) != 2
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(head, 1))) {
        PyErr_Clear();
        return -1;
    }
    PyObject *spec = PyTuple_GET_ITEM(head, 1);
    Py_ssize_t size = scalar_size(spec);
    if (size < 0)
        return -1;
    if (PyObject_GetBuffer(o, &item->view, PyBUF_C_CONTIGUOUS) < 0) { /* refused when not C-contiguous */
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t ndim = item->view.ndim, count = 1;
    size += 4 + (ndim < 16 ? 1 : 3) + 1 + int_size(offset); /* 5-array, marker; shape's header; False; offset */
    for (Py_ssize_t i = 0; i < ndim; i++) {
        count *= item->view.shape[i];
        size += int_size(item->view.shape[i]);
    }
    if (!count) {
        PyBuffer_Release(&item->view);
        return -1;
    }
    item->spec = Py_NewRef(spec);
    return size;
}

static void release_arrays(ArrayItem *items, int n)
{
    for (int i = 0; i < n; i++) {
        PyBuffer_Release(&items[i].view);
        Py_DECREF(items[i].spec);
    }
}

/* Write the body entry of array `item` (array_entry_size took it): (array marker, spec, shape, False,
 * offset). */
static unsigned char *put_array_entry(unsigned char *p, const ArrayItem *item, Py_ssize_t offset)
{
    static const unsigned char head[] = {0x95, 0xC7, 0x00, 0x04}; /* a 5-array; ext 4 of no bytes */
    memcpy(p, head, sizeof head);
    p = put_scalar(p + sizeof head, item->spec);
    Py_ssize_t ndim = item->view.ndim;
    if (ndim < 16)
        *p++ = (unsigned char)(0x90 | ndim);
    else
        p = put_length(p, (size_t)ndim, 0, 0xDC, 0xDD);
    for (Py_ssize_t i = 0; i < ndim; i++)
        p = put_int(p, item->view.shape[i]);
    *p++ = 0xC2;
    return put_int(p, offset);
}

/* The encoding of `record` (new reference): the plain layout for a scalar or a tuple of scalars, the
 * general layout (codec._encode_flat_arrays) for a tuple of scalars and up to MAX_ARRAYS arrays of the
 * common case, their bytes copied now; NULL without an exception set when it is neither or is larger
 * than max_bytes (also when out of memory: Python then retries). */
static PyObject *encode_record(PyObject *record, Py_ssize_t max_bytes)
{
    Py_ssize_t size;
    PyObject *out = NULL;
    unsigned char *p;
    if (Py_TYPE(record) == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(record), data = 0;
        ArrayItem arrays[MAX_ARRAYS];
        int n_arrays = 0;
        if ((size_t)n > MAX_ITEMS_SIZE)
            return NULL;
        Py_ssize_t body = n < 16 ? 1 : n < 65536 ? 3 : 5;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(record, i);
            Py_ssize_t item_size = scalar_size(item);
            if (item_size < 0) {
                if (n_arrays == MAX_ARRAYS || (item_size = array_entry_size(item, data, &arrays[n_arrays])) < 0)
                    goto done;
                data += arrays[n_arrays++].view.len;
            }
            body += item_size;
        }
        if (n_arrays && (size_t)body > 0xFFFFFFFFu)
            goto done;
        size = n_arrays ? 5 + body + data : body;
        if (size > max_bytes || (out = PyBytes_FromStringAndSize(NULL, size)) == NULL) {
            PyErr_Clear();
            goto done;
        }
        p = (unsigned char *)PyBytes_AS_STRING(out);
        if (n_arrays) {
            *p++ = 0xC1;
            p = put_be(p, (unsigned long long)body, 4);
        }
        if (n < 16)
            *p++ = (unsigned char)(0x90 | n);
        else
            p = put_length(p, (size_t)n, 0, 0xDC, 0xDD);
        Py_ssize_t offset = 0;
        for (Py_ssize_t i = 0, a = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(record, i);
            if (Py_TYPE(item) == (PyTypeObject *)ndarray_type) {
                p = put_array_entry(p, &arrays[a], offset);
                offset += arrays[a++].view.len;
            } else {
                p = put_scalar(p, item);
            }
        }
        for (int a = 0; a < n_arrays; a++) {
            memcpy(p, arrays[a].view.buf, (size_t)arrays[a].view.len);
            p += arrays[a].view.len;
        }
    done:
        release_arrays(arrays, n_arrays);
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

/* Append each item to its list (`entries` may be NULL: not that one), all or none; 0 on success, -1 (no
 * exception set) when out of memory. */
static int append_all(PyObject *keys, PyObject *key, PyObject *payloads, PyObject *payload, PyObject *arrivals,
                      PyObject *now, PyObject *entries, PyObject *entry)
{
    if (PyList_Append(keys, key) < 0)
        goto fail;
    if (PyList_Append(payloads, payload) < 0)
        goto fail_keys;
    if (PyList_Append(arrivals, now) < 0)
        goto fail_payloads;
    if (entries != NULL && PyList_Append(entries, entry) < 0)
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

/* Encode one record of the common case: its key (`key` encoded, >= *last and < bound), its encoding (at
 * most max_bytes) and its ring entry (record key with `seq`, record, now), as new references in *encoded,
 * *payload, *entry; 0.  -1, with no exception set, when it is not the common case (or out of memory). */
static int encode_one(PyObject *record, PyObject *key, PyObject *last, PyObject *bound, Py_ssize_t max_bytes,
                      PyObject *prefix, unsigned long long seq, PyObject *now, PyObject **encoded,
                      PyObject **payload, PyObject **entry)
{
    if (record == Py_None || (*encoded = encode_int_key(key)) == NULL)
        return -1;
    if (compare(last, *encoded) > 0 || compare(*encoded, bound) >= 0 || (*payload = encode_record(record, max_bytes)) == NULL) {
        Py_DECREF(*encoded);
        return -1;
    }
    PyObject *rkey = record_key(prefix, *encoded, seq);
    *entry = rkey == NULL ? NULL : PyTuple_Pack(3, rkey, record, now);
    Py_XDECREF(rkey);
    if (*entry == NULL) {
        PyErr_Clear();
        Py_DECREF(*payload);
        Py_DECREF(*encoded);
        return -1;
    }
    return 0;
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
        PyObject *encoded, *payload, *entry;
        if (encode_one(records[taken], key_items[taken], last, bound, max_bytes, prefix,
                       seq + (unsigned long long)taken, now, &encoded, &payload, &entry) < 0)
            break;
        int failed = append_all(out_keys, encoded, out_payloads, payload, out_arrivals, now, entries, entry);
        if (!failed)
            size += PyBytes_GET_SIZE(payload);
        Py_DECREF(entry);
        Py_DECREF(payload);
        if (failed) {
            Py_DECREF(encoded);
            break;
        }
        Py_SETREF(last, encoded);
    }
    PyObject *result = Py_BuildValue("(nNn)", taken, last, size); /* N: steals our reference to last */
    return result;
}

/* ---- Writer: the running state of a StreamWriter, and the recorder's loop over single records ---- */

enum { STOP, FULL, NO_DATA, BATCH, SLOW, ENDED, FAILED, PUBLISHED };

typedef struct {
    PyObject_HEAD
    PyObject *prefix, *keys, *payloads, *arrivals, *oldest, *last_encoded, *last_key, *kind_bound, *max_bytes;
    Py_ssize_t pending_bytes, in_flight_bytes;
    long long next_seq, prepared_seq, committed_seq, last_arrival_us;
} Writer;

static PyObject *str_waiters, *str_notified;

static int writer_traverse(Writer *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->prefix);
    Py_VISIT(self->keys);
    Py_VISIT(self->payloads);
    Py_VISIT(self->arrivals);
    Py_VISIT(self->oldest);
    Py_VISIT(self->last_encoded);
    Py_VISIT(self->last_key);
    Py_VISIT(self->kind_bound);
    Py_VISIT(self->max_bytes);
    return 0;
}

static int writer_clear(Writer *self)
{
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->keys);
    Py_CLEAR(self->payloads);
    Py_CLEAR(self->arrivals);
    Py_CLEAR(self->oldest);
    Py_CLEAR(self->last_encoded);
    Py_CLEAR(self->last_key);
    Py_CLEAR(self->kind_bound);
    Py_CLEAR(self->max_bytes);
    return 0;
}

static void writer_dealloc(Writer *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    writer_clear(self);
    type->tp_free((PyObject *)self);
}

/* (status, a, b, c): the loop's result (see Writer.read_records). */
static PyObject *result(int status, PyObject *a, PyObject *b, PyObject *c)
{
    return Py_BuildValue("(iOOO)", status, a ? a : Py_None, b ? b : Py_None, c ? c : Py_None);
}

/* The exception set now as a value (new reference; cleared), when it is an Exception; NULL, leaving it
 * set, when it is another BaseException (KeyboardInterrupt, SystemExit: those propagate). */
static PyObject *take_exception(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

/* Call `release` keeping the exception set now (if any); -1 if release raised instead. */
static int call_release(PyObject *release)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *r = PyObject_CallNoArgs(release);
    if (r == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(type, value, traceback);
    return type == NULL ? 0 : -1;
}

/* 1/0 as calling `f` (no arguments) returned a true/false value, -1 when it raised. */
static int call_truth(PyObject *f)
{
    PyObject *r = PyObject_CallNoArgs(f);
    if (r == NULL)
        return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* time.time_ns()'s clock */
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Add `record` keyed by `key` (arrived at `now`) when it is the common case (see add_plain), and publish
 * its ring entry; 1 if added, 0 if not (nothing changed), -1 when publish raised (the record is pending). */
static int add_one(Writer *self, PyObject *record, PyObject *key, long long now, PyObject *publish)
{
    if (!PyList_CheckExact(self->keys) || !PyList_CheckExact(self->payloads) || !PyList_CheckExact(self->arrivals)
        || !PyBytes_Check(self->prefix) || !PyBytes_Check(self->last_encoded) || !PyBytes_Check(self->kind_bound)
        || !PyLong_Check(self->max_bytes))
        return 0; /* not set up as StreamWriter does: Python's path says what is wrong */
    Py_ssize_t max_bytes = PyLong_AsSsize_t(self->max_bytes);
    if (max_bytes == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        max_bytes = PY_SSIZE_T_MAX;
    }
    PyObject *now_obj = PyLong_FromLongLong(now);
    if (now_obj == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *encoded, *payload, *entry;
    if (encode_one(record, key, self->last_encoded, self->kind_bound, max_bytes, self->prefix,
                   (unsigned long long)self->next_seq, now_obj, &encoded, &payload, &entry) < 0) {
        Py_DECREF(now_obj);
        return 0;
    }
    if (append_all(self->keys, encoded, self->payloads, payload, self->arrivals, now_obj, NULL, NULL) < 0) {
        Py_DECREF(entry);
        Py_DECREF(payload);
        Py_DECREF(encoded);
        Py_DECREF(now_obj);
        return 0;
    }
    if (self->oldest == NULL || self->oldest == Py_None)
        Py_XSETREF(self->oldest, Py_NewRef(now_obj));
    self->pending_bytes += PyBytes_GET_SIZE(payload);
    self->next_seq += 1;
    Py_SETREF(self->last_encoded, encoded);
    Py_XSETREF(self->last_key, Py_NewRef(key));
    self->last_arrival_us = now;
    Py_DECREF(payload);
    Py_DECREF(now_obj);
    PyObject *r = PyObject_CallOneArg(publish, entry);
    Py_DECREF(entry);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

/* Whether a hand-off of the pending records is due (the recorder's test, see StreamBuffer._read_while). */
static int handoff_due(Writer *self, long long commit_records, Py_ssize_t commit_bytes, double wait_us)
{
    if (self->next_seq - self->committed_seq > commit_records
        || self->pending_bytes + self->in_flight_bytes >= commit_bytes)
        return 1;
    if (self->in_flight_bytes || self->oldest == NULL || !PyLong_Check(self->oldest))
        return 0;
    long long oldest = PyLong_AsLongLong(self->oldest);
    if (oldest == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return (double)(self->last_arrival_us - oldest) >= wait_us;
}

/* 1 when `feed` has waiters not yet notified, 0 if not, -1 when reading its attributes raised. */
static int wants_notify(PyObject *feed)
{
    PyObject *waiters = PyObject_GetAttr(feed, str_waiters);
    if (waiters == NULL)
        return -1;
    int waiting = PyObject_IsTrue(waiters);
    Py_DECREF(waiters);
    if (waiting <= 0)
        return waiting;
    PyObject *notified = PyObject_GetAttr(feed, str_notified);
    if (notified == NULL)
        return -1;
    int done = PyObject_IsTrue(notified);
    Py_DECREF(notified);
    return done < 0 ? -1 : !done;
}

static PyObject *read_records(Writer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_Format(PyExc_TypeError, "read_records takes 12 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *read = args[0], *key_of = args[1], *done = args[2], *window_full = args[3], *batch_type = args[4];
    PyObject *acquire = args[5], *release = args[6], *publish = args[7], *feed = args[8];
    long long commit_records = PyLong_AsLongLong(args[9]);
    if (commit_records == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t commit_bytes = PyLong_AsSsize_t(args[10]);
    if (commit_bytes == -1 && PyErr_Occurred())
        return NULL;
    double wait_us = PyFloat_AsDouble(args[11]);
    if (wait_us == -1.0 && PyErr_Occurred())
        return NULL;
    if (!PyType_Check(batch_type)) {
        PyErr_SetString(PyExc_TypeError, "read_records: batch_type must be a type");
        return NULL;
    }
    for (;;) {
        int truth = call_truth(done);
        if (truth)
            return truth < 0 ? NULL : result(STOP, NULL, NULL, NULL);
        if (window_full != Py_None && (truth = call_truth(window_full)))
            return truth < 0 ? NULL : result(FULL, NULL, NULL, NULL);
        PyObject *data = PyObject_CallNoArgs(read);
        if (data == NULL) {
            if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
                PyErr_Clear();
                return result(ENDED, NULL, NULL, NULL);
            }
            PyObject *exc = take_exception();
            if (exc == NULL)
                return NULL;
            PyObject *out = result(FAILED, NULL, NULL, exc);
            Py_DECREF(exc);
            return out;
        }
        if (data == Py_None) {
            Py_DECREF(data);
            return result(NO_DATA, NULL, NULL, NULL);
        }
        if (Py_TYPE(data) == (PyTypeObject *)batch_type) {
            PyObject *out = result(BATCH, data, NULL, NULL);
            Py_DECREF(data);
            return out;
        }
        PyObject *key = PyObject_CallOneArg(key_of, data);
        if (key == NULL) {
            PyObject *exc = take_exception();
            PyObject *out = exc == NULL ? NULL : result(SLOW, data, NULL, exc);
            Py_XDECREF(exc);
            Py_DECREF(data);
            return out;
        }
        long long now = now_us();
        if (now < self->last_arrival_us)
            now = self->last_arrival_us;
        PyObject *r = PyObject_CallNoArgs(acquire);
        if (r == NULL) {
            Py_DECREF(key);
            Py_DECREF(data);
            return NULL;
        }
        Py_DECREF(r);
        int added = add_one(self, data, key, now, publish);
        if (added <= 0) {
            PyObject *out = added == 0 && call_release(release) == 0 ? result(SLOW, data, key, NULL) : NULL;
            if (added < 0)
                call_release(release);
            Py_DECREF(key);
            Py_DECREF(data);
            return out;
        }
        Py_DECREF(key);
        Py_DECREF(data);
        int notify = wants_notify(feed);
        int due = handoff_due(self, commit_records, commit_bytes, wait_us);
        if (call_release(release) < 0 || notify < 0)
            return NULL;
        if (notify || due)
            return result(PUBLISHED, notify ? Py_True : Py_False, due ? Py_True : Py_False, NULL);
    }
}

static PyObject *handoff_due_method(Writer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "handoff_due takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    long long commit_records = PyLong_AsLongLong(args[0]);
    Py_ssize_t commit_bytes = PyLong_AsSsize_t(args[1]);
    double wait_us = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(handoff_due(self, commit_records, commit_bytes, wait_us));
}

static PyMethodDef writer_methods[] = {
    {"handoff_due", (PyCFunction)(void (*)(void))handoff_due_method, METH_FASTCALL,
     "handoff_due(commit_records, commit_bytes, wait_us)\n--\n\n"
     "Whether the recorder should hand the pending records to the committer: more than commit_records are "
     "not committed, pending and in-flight bytes reach commit_bytes, or (no batch in flight) the oldest "
     "pending record arrived wait_us or more before the newest."},
    {"read_records", (PyCFunction)(void (*)(void))read_records, METH_FASTCALL,
     "read_records(read, key_of, done, window_full, batch_type, acquire, release, publish, feed, commit_records, "
     "commit_bytes, wait_us)\n--\n\n"
     "The recorder's loop (StreamBuffer._read_while) for single records of the common case; returns "
     "(status, a, b, c) at the first thing it leaves to Python (see streamlog/writer.py)."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(name, type, field, doc) {name, type, offsetof(Writer, field), 0, doc}
static PyMemberDef writer_members[] = {
    MEMBER("_prefix", T_OBJECT_EX, prefix, "the session's key prefix (bytes)"),
    MEMBER("_keys", T_OBJECT_EX, keys, "encoded keys of the pending records (list)"),
    MEMBER("_payloads", T_OBJECT_EX, payloads, "their encodings (list)"),
    MEMBER("_arrivals", T_OBJECT_EX, arrivals, "their arrival times, µs (list)"),
    MEMBER("oldest_pending_arrival_us", T_OBJECT, oldest, "arrival of the oldest pending record (None: none)"),
    MEMBER("last_encoded_key", T_OBJECT_EX, last_encoded, "the encoding of the last key added (bytes)"),
    MEMBER("last_key", T_OBJECT, last_key, "the last key added"),
    MEMBER("_kind_bound", T_OBJECT_EX, kind_bound, "the encodings of the stream's key kind lie below this (bytes)"),
    MEMBER("max_record_bytes", T_OBJECT_EX, max_bytes, "the largest encoding accepted (int)"),
    MEMBER("pending_bytes", T_PYSSIZET, pending_bytes, "encoded bytes of the pending records"),
    MEMBER("in_flight_bytes", T_PYSSIZET, in_flight_bytes, "of the batch prepared and not yet written"),
    MEMBER("next_seq", T_LONGLONG, next_seq, "the sequence number of the next record"),
    MEMBER("prepared_seq", T_LONGLONG, prepared_seq, "of the last record prepared for a commit"),
    MEMBER("committed_seq", T_LONGLONG, committed_seq, "of the last record committed"),
    MEMBER("last_arrival_us", T_LONGLONG, last_arrival_us, "arrival time of the last record added (µs)"),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamlog._ingest.Writer",
    .tp_doc = "The running state of a StreamWriter (its base class) and the recorder's loop in C.",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_methods = writer_methods,
    .tp_members = writer_members,
};

static PyMethodDef methods[] = {
    {"add_plain", (PyCFunction)(void (*)(void))add_plain, METH_FASTCALL,
     "add_plain(batch, keys, entries, out_keys, out_payloads, out_arrivals, prefix, seq, last, bound, max_bytes, now)"
     "\n--\n\n"
     "Encode and append the leading records of batch that are the common case (int keys; plain records, or "
     "tuples of 64-bit ints and numpy arrays of a dtype in codec.array_heads); "
     "return (taken, last encoded key, bytes of the encodings)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "streamlog._ingest",
                                    "The common case of StreamWriter.add in C (add_plain) and the recorder's loop (Writer.read_records).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ingest(void)
{
    if (PyType_Ready(&WriterType) < 0)
        return NULL;
    if ((str_waiters = PyUnicode_InternFromString("waiters")) == NULL
        || (str_notified = PyUnicode_InternFromString("notified")) == NULL
        || (str_dtype = PyUnicode_InternFromString("dtype")) == NULL)
        return NULL;
    PyObject *numpy = PyImport_ImportModule("numpy"), *codec = PyImport_ImportModule("streamlog.codec");
    if (numpy != NULL && codec != NULL) {
        ndarray_type = PyObject_GetAttrString(numpy, "ndarray");
        array_heads = PyObject_GetAttrString(codec, "array_heads");
    }
    Py_XDECREF(numpy);
    Py_XDECREF(codec);
    if (ndarray_type == NULL || array_heads == NULL)
        return NULL;
    if (!PyType_Check(ndarray_type) || !PyDict_CheckExact(array_heads)) {
        PyErr_SetString(PyExc_TypeError, "streamlog._ingest: numpy.ndarray must be a type, "
                                         "streamlog.codec.array_heads a dict");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    static const struct { const char *name; int value; } statuses[] = {
        {"STOP", STOP}, {"FULL", FULL}, {"NO_DATA", NO_DATA}, {"BATCH", BATCH}, {"SLOW", SLOW},
        {"ENDED", ENDED}, {"FAILED", FAILED}, {"PUBLISHED", PUBLISHED},
    };
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (PyModule_AddIntConstant(m, statuses[i].name, statuses[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    if (PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
