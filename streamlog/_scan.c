/* streamlog._scan: reading format-2 blocks (records/v2.py, docs/architecture.md "Block") in C: the
 * structure check of a chunk's whole blocks, and the per-record work of reading records out of one block.
 *
 * record_keys and entries take `data`, the bytes of one block that records.v2.Block checked (checksum, header,
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
 *
 * layouts(blocks) -> (list, bad)
 *     blocks: a list of (key, segments), key the block's LMDB key (bytes), segments a list of buffers
 *     whose bytes, back to back, are the joined block (docs/architecture.md "Block"; the checksum is not
 *     checked here).  For each block in order, the checks records.v2 makes of a block's structure:
 *       size >= 33 (the header);  1 <= n <= 1024, flags & ~1 == 0, size >= 33 + 12 n + keys_len;
 *       key_end[n-1] == keys_len and records_at + record_end[n-1] == size, where
 *       records_at = 33 + 12 n + keys_len (+ 5 when flags & 1: the plain array header);
 *       key == u32be(session) + keys[key_end[n-2] : keys_len] + u64be(first_seq + n - 1)
 *       (key_end[-1] = 0; a slice whose start lies beyond its end is empty, as in Python).
 *     The list holds (columns, n, first_arrival, keys_len, records_at, size, crc) of each block that
 *     passes, columns = 33 + 12 n; it stops at the first block that does not, and bad is then
 *     (its index, the problem as records.v2 words it, its stored crc or None when the block is shorter
 *     than its header); bad is None when all pass.  Every byte read lies inside the segments (offsets are
 *     checked against their total size before they are read).  TypeError for anything but such a list.
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

#define PLAIN 1
#define PLAIN_HEADER 5
#define BLOCK_RECORDS 1024
#define MAX_SEGMENTS 256 /* more than records.common's MAX_CONTINUATIONS + 1 */

typedef struct {
    Py_buffer views[MAX_SEGMENTS];
    Py_ssize_t count;
    Py_ssize_t size;
} segments_t;

static void release(segments_t *s)
{
    for (Py_ssize_t i = 0; i < s->count; i++)
        PyBuffer_Release(&s->views[i]);
    s->count = 0;
}

/* Take the buffers of the list `list`; 0, or -1 with an exception (all released). */
static int acquire(segments_t *s, PyObject *list)
{
    s->count = 0;
    s->size = 0;
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "layouts: a block's segments must be a list of buffers");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_SEGMENTS) {
        PyErr_Format(PyExc_ValueError, "layouts: a block of %zd segments (at most %d)", n, MAX_SEGMENTS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(list, i), &s->views[i], PyBUF_C_CONTIGUOUS) < 0) {
            release(s);
            return -1;
        }
        s->count = i + 1;
        s->size += s->views[i].len;
    }
    return 0;
}

/* Copy bytes at .. at + len - 1 of the joined segments to out (the caller checked at + len <= size). */
static void gather(const segments_t *s, Py_ssize_t at, Py_ssize_t len, unsigned char *out)
{
    for (Py_ssize_t i = 0; i < s->count && len > 0; i++) {
        Py_ssize_t piece = s->views[i].len;
        if (at < piece) {
            Py_ssize_t take = piece - at < len ? piece - at : len;
            memcpy(out, (const unsigned char *)s->views[i].buf + at, (size_t)take);
            out += take;
            len -= take;
            at = 0;
        } else {
            at -= piece;
        }
    }
}

/* Whether bytes at .. at + len - 1 of the joined segments equal p[0:len] (at + len <= size). */
static int equal_at(const segments_t *s, Py_ssize_t at, Py_ssize_t len, const unsigned char *p)
{
    for (Py_ssize_t i = 0; i < s->count && len > 0; i++) {
        Py_ssize_t piece = s->views[i].len;
        if (at < piece) {
            Py_ssize_t take = piece - at < len ? piece - at : len;
            if (memcmp(p, (const unsigned char *)s->views[i].buf + at, (size_t)take))
                return 0;
            p += take;
            len -= take;
            at = 0;
        } else {
            at -= piece;
        }
    }
    return 1;
}




static uint32_t u32_at(const segments_t *s, Py_ssize_t at)
{
    unsigned char b[4];
    gather(s, at, 4, b);
    return u32le(b);
}

/* The problem with the block (NULL: none); fills out[] with its layout.  *crc_known: its crc was read. */
static const char *check(const segments_t *s, const unsigned char *key, Py_ssize_t key_len, uint64_t out[7],
                         int *crc_known, char *message, size_t message_size)
{
    Py_ssize_t size = s->size;
    *crc_known = 0;
    if (size < HEAD_SIZE)
        return "a block shorter than its header";
    unsigned char head[HEAD_SIZE];
    gather(s, 0, HEAD_SIZE, head);
    uint32_t crc = u32le(head);
    *crc_known = 1;
    out[6] = crc;
    unsigned flags = head[4];
    uint64_t n = u32le(head + 5);
    uint64_t session = u32le(head + 9);
    uint64_t first_seq = u64le(head + 13);
    uint64_t first_arrival = u64le(head + 21);
    uint64_t keys_len = u32le(head + 29);
    uint64_t columns = HEAD_SIZE + 12 * n; /* n, keys_len < 2**32: no overflow */
    uint64_t records_at = columns + keys_len + ((flags & PLAIN) ? PLAIN_HEADER : 0);
    if (n < 1 || n > BLOCK_RECORDS || (uint64_t)size < columns + keys_len || (flags & ~PLAIN)) {
        snprintf(message, message_size, "a block header that does not fit the block (%llu records)",
                 (unsigned long long)n);
        return message;
    }
    uint64_t last_key_end = u32_at(s, HEAD_SIZE + 4 * ((Py_ssize_t)n - 1));
    uint64_t last_record_end = u32_at(s, HEAD_SIZE + 8 * (Py_ssize_t)n + 4 * ((Py_ssize_t)n - 1));
    if (last_key_end != keys_len || records_at + last_record_end != (uint64_t)size)
        return "a block whose columns do not match its contents";
    uint64_t from = n > 1 ? u32_at(s, HEAD_SIZE + 4 * ((Py_ssize_t)n - 2)) : 0;
    uint64_t last_len = from < keys_len ? keys_len - from : 0;
    uint64_t seq = first_seq + n - 1;
    const char *wrong = "its entry's key is not the key of its last record";
    if (seq < first_seq || (uint64_t)key_len != 4 + last_len + 8)
        return wrong;
    unsigned char edge[8];
    for (int i = 0; i < 4; i++)
        edge[i] = (unsigned char)(session >> (24 - 8 * i));
    if (memcmp(key, edge, 4))
        return wrong;
    for (int i = 0; i < 8; i++)
        edge[i] = (unsigned char)(seq >> (56 - 8 * i));
    if (memcmp(key + key_len - 8, edge, 8) || !equal_at(s, (Py_ssize_t)(columns + from), (Py_ssize_t)last_len, key + 4))
        return wrong;
    out[0] = columns;
    out[1] = n;
    out[2] = first_arrival;
    out[3] = keys_len;
    out[4] = records_at;
    out[5] = (uint64_t)size;
    return NULL;
}

static PyObject *layouts(PyObject *self, PyObject *blocks)
{
    if (!PyList_Check(blocks)) {
        PyErr_SetString(PyExc_TypeError, "layouts(blocks): blocks must be a list of (key, segments)");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(blocks);
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    segments_t *s = PyMem_Malloc(sizeof(segments_t));
    if (!s) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    PyObject *bad = NULL;
    for (Py_ssize_t i = 0; i < count && !bad; i++) {
        PyObject *item = PyList_GET_ITEM(blocks, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "layouts(blocks): each block must be a (bytes key, segments) tuple");
            goto fail;
        }
        PyObject *key = PyTuple_GET_ITEM(item, 0);
        if (acquire(s, PyTuple_GET_ITEM(item, 1)) < 0)
            goto fail;
        uint64_t v[7] = {0};
        int crc_known;
        char message[96];
        const char *problem = check(s, (const unsigned char *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), v,
                                    &crc_known, message, sizeof message);
        release(s);
        if (problem) {
            bad = crc_known ? Py_BuildValue("(nsk)", i, problem, (unsigned long)v[6])
                            : Py_BuildValue("(nsO)", i, problem, Py_None);
            if (!bad)
                goto fail;
            break;
        }
        PyObject *layout = Py_BuildValue("(KKKKKKk)", (unsigned long long)v[0], (unsigned long long)v[1],
                                         (unsigned long long)v[2], (unsigned long long)v[3],
                                         (unsigned long long)v[4], (unsigned long long)v[5], (unsigned long)v[6]);
        if (!layout || PyList_Append(out, layout) < 0) {
            Py_XDECREF(layout);
            goto fail;
        }
        Py_DECREF(layout);
    }
    PyMem_Free(s);
    if (!bad) {
        bad = Py_None;
        Py_INCREF(bad);
    }
    PyObject *result = PyTuple_Pack(2, out, bad);
    Py_DECREF(out);
    Py_DECREF(bad);
    return result;
fail:
    PyMem_Free(s);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"record_keys", record_keys, METH_VARARGS, "record_keys(data, prefix, lo, hi): see the module's source."},
    {"entries", entries, METH_VARARGS, "entries(make, data, lo, hi, records): see the module's source."},
    {"layouts", layouts, METH_O, "layouts(blocks): the structure of a chunk's whole blocks; see the module's source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streamlog._scan",
    "Reading format-2 blocks in C: a chunk's structure check (records.v2.scan_chunk), a block's record keys and "
    "entries (records.v2.Block).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    return PyModule_Create(&module);
}
