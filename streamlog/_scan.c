/* streamlog._scan: the per-record work of reading records out of one format-2 block
 * (records/v2.py, docs/architecture.md "Block") in C.
 *
 * Both functions take `data`, the bytes of one block that records.v2.Block checked (checksum, header,
 * columns, its LMDB key), and its records lo .. hi - 1 (0 <= lo <= hi <= n, the block's record count).
 * Every offset read from the block is checked against len(data) first; a header or range that does not
 * fit raises ValueError (a caller's bug: a checked block always fits).
 *
 * record_keys(data, prefix, lo, hi) -> list of bytes
 *     record i's record key: prefix + data[keys_at + key_end[i-1] : keys_at + key_end[i]] (a Python
 *     slice: clamped to the block, empty when the end lies before the start) + u64be(first_seq + i);
 *     exactly what records.common.record_key gives for a checked block.  OverflowError when a
 *     sequence number does not fit in u64 (struct.pack raises there too).
 *
 * entries(make, data, lo, hi, records) -> list, or None
 *     make(key, arrival_us, record, seq) of records lo .. hi - 1, `records` their decoded records (a
 *     tuple or list of hi - lo), `make` a subclass of tuple with four fields (reader.Entry), built as
 *     tuple.__new__(make, (...)) builds it, calling no Python code of its own.  The key is decoded only when it is
 *     an integer 0 <= key < 2**64 as keys.encode_key writes it (tag 0x20 + m, m <= 8 big-endian bytes,
 *     0x00: decode_key_prefix's int, with no key_types of "float"); arrival_us = first_arrival_us +
 *     arrival_delta[i], seq = first_seq + i.  Returns None, deciding nothing, when any key is not such
 *     an int, the key column is not non-decreasing inside the keys, an arrival is beyond int64 or a
 *     seq beyond u64: the
 *     caller then decodes with Python (records.v2.Block.entries), which raises what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEAD_SIZE 33
#define TAG_ZERO 0x20
#define SMALL 8

static uint32_t u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t u64le(const unsigned char *p)
{
    return (uint64_t)u32le(p) | (uint64_t)u32le(p + 4) << 32;
}

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t n;
    uint64_t first_seq;
    uint64_t first_arrival;
    Py_ssize_t keys_at;   /* where the keys begin */
    Py_ssize_t keys_len;
} block_t;

/* Read the header of the block in `view`; 0, or -1 with ValueError when it or lo .. hi does not fit. */
static int read_block(block_t *b, const Py_buffer *view, Py_ssize_t lo, Py_ssize_t hi)
{
    b->data = (const unsigned char *)view->buf;
    b->size = view->len;
    if (b->size < HEAD_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a block shorter than its header");
        return -1;
    }
    b->n = (Py_ssize_t)u32le(b->data + 5);
    b->first_seq = u64le(b->data + 13);
    b->first_arrival = u64le(b->data + 21);
    b->keys_len = (Py_ssize_t)u32le(b->data + 29);
    /* n, keys_len < 2**32: no overflow in 64-bit Py_ssize_t */
    b->keys_at = HEAD_SIZE + 12 * b->n;
    if (b->n < 1 || b->keys_at + b->keys_len > b->size) {
        PyErr_SetString(PyExc_ValueError, "a block header that does not fit the block");
        return -1;
    }
    if (lo < 0 || hi < lo || hi > b->n) {
        PyErr_Format(PyExc_ValueError, "records %zd .. %zd are not in a block of %zd", lo, hi - 1, b->n);
        return -1;
    }
    return 0;
}

/* key_end[i] (i >= 0), or 0 for i == -1 */
static Py_ssize_t key_end(const block_t *b, Py_ssize_t i)
{
    return i < 0 ? 0 : (Py_ssize_t)u32le(b->data + HEAD_SIZE + 4 * i);
}

static PyObject *record_keys(PyObject *self, PyObject *args)
{
    Py_buffer view, prefix;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTuple(args, "y*y*nn:record_keys", &view, &prefix, &lo, &hi))
        return NULL;
    PyObject *out = NULL;
    block_t b;
    if (read_block(&b, &view, lo, hi) < 0)
        goto done;
    if (hi > lo && b.first_seq + (uint64_t)(hi - 1) < b.first_seq) {
        PyErr_SetString(PyExc_OverflowError, "a sequence number beyond u64");
        goto done;
    }
    out = PyList_New(hi - lo);
    if (out == NULL)
        goto done;
    Py_ssize_t start = b.keys_at + key_end(&b, lo - 1);
    for (Py_ssize_t i = lo; i < hi; i++) {
        Py_ssize_t stop = b.keys_at + key_end(&b, i);
        Py_ssize_t s = start < b.size ? start : b.size, e = stop < b.size ? stop : b.size; /* as data[start:stop] */
        Py_ssize_t len = e > s ? e - s : 0;
        PyObject *key = PyBytes_FromStringAndSize(NULL, prefix.len + len + 8);
        if (key == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(key);
        memcpy(p, prefix.buf, (size_t)prefix.len);
        memcpy(p + prefix.len, b.data + s, (size_t)len);
        uint64_t seq = b.first_seq + (uint64_t)i;
        for (int j = 7; j >= 0; j--, seq >>= 8)
            p[prefix.len + len + j] = (unsigned char)(seq & 0xFF);
        PyList_SET_ITEM(out, i - lo, key);
        start = stop;
    }
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&prefix);
    return out;
}

/* The small int key data[s:e] as keys.encode_key writes it, in *value; 0 if it is no such key. */
static int small_int(const unsigned char *data, Py_ssize_t s, Py_ssize_t e, uint64_t *value)
{
    if (e - s < 2)
        return 0;
    int m = (int)data[s] - TAG_ZERO;
    if (m < 0 || m > SMALL || e - s != m + 2 || data[e - 1] != 0)
        return 0;
    uint64_t v = 0;
    for (int j = 1; j <= m; j++)
        v = v << 8 | data[s + j];
    *value = v;
    return 1;
}

static PyObject *entries(PyObject *self, PyObject *args)
{
    PyObject *make, *records;
    Py_buffer view;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTuple(args, "Oy*nnO:entries", &make, &view, &lo, &hi, &records))
        return NULL;
    PyObject *out = NULL, *fast = NULL;
    block_t b;
    if (!PyType_Check(make) || !PyType_IsSubtype((PyTypeObject *)make, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "entries: make must be a subclass of tuple");
        goto done;
    }
    if (read_block(&b, &view, lo, hi) < 0)
        goto done;
    fast = PySequence_Fast(records, "entries: records must be a tuple or list");
    if (fast == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(fast) != hi - lo) {
        PyErr_Format(PyExc_ValueError, "entries: %zd records for %zd keys", PySequence_Fast_GET_SIZE(fast), hi - lo);
        goto done;
    }
    /* decide first, allocating nothing: every key a small int inside the keys, no value beyond u64 */
    if (hi > lo && b.first_seq + (uint64_t)(hi - 1) < b.first_seq) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t deltas = HEAD_SIZE + 4 * b.n;
    Py_ssize_t start = key_end(&b, lo - 1);
    for (Py_ssize_t i = lo; i < hi; i++) {
        Py_ssize_t stop = key_end(&b, i);
        uint64_t value;
        uint32_t delta = u32le(b.data + deltas + 4 * i);
        if (stop < start || stop > b.keys_len ||
            !small_int(b.data, b.keys_at + start, b.keys_at + stop, &value) ||
            b.first_arrival > (uint64_t)INT64_MAX - delta) { /* numpy's int64 arrivals would overflow */
            out = Py_NewRef(Py_None);
            goto done;
        }
        start = stop;
    }
    out = PyList_New(hi - lo);
    if (out == NULL)
        goto done;
    PyTypeObject *type = (PyTypeObject *)make;
    start = key_end(&b, lo - 1);
    for (Py_ssize_t i = lo; i < hi; i++) {
        Py_ssize_t stop = key_end(&b, i);
        uint64_t value = 0;
        small_int(b.data, b.keys_at + start, b.keys_at + stop, &value);
        start = stop;
        if (PySequence_Fast_GET_SIZE(fast) != hi - lo) { /* a finalizer run by the collector changed the list */
            PyErr_SetString(PyExc_RuntimeError, "entries: records changed size");
            Py_CLEAR(out);
            goto done;
        }
        PyObject *record = Py_NewRef(PySequence_Fast_GET_ITEM(fast, i - lo));
        PyObject *entry = type->tp_alloc(type, 4);
        if (entry == NULL) {
            Py_DECREF(record);
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i - lo, entry);
        PyObject *key = PyLong_FromUnsignedLongLong(value);
        PyObject *arrival = PyLong_FromUnsignedLongLong(b.first_arrival + u32le(b.data + deltas + 4 * i));
        PyObject *seq = PyLong_FromUnsignedLongLong(b.first_seq + (uint64_t)i);
        PyTuple_SET_ITEM(entry, 0, key);
        PyTuple_SET_ITEM(entry, 1, arrival);
        PyTuple_SET_ITEM(entry, 2, record);
        PyTuple_SET_ITEM(entry, 3, seq);
        if (key == NULL || arrival == NULL || seq == NULL) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    Py_XDECREF(fast);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"record_keys", record_keys, METH_VARARGS, "record_keys(data, prefix, lo, hi): see the module's source."},
    {"entries", entries, METH_VARARGS, "entries(make, data, lo, hi, records): see the module's source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streamlog._scan",
    "The per-record work of reading a format-2 block (records.v2.Block.record_keys and entries) in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    return PyModule_Create(&module);
}
