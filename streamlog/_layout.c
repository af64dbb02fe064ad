/* streamlog._layout: the structure check of a chunk's whole blocks (records/v2.py scan_chunk), in C.
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


static uint32_t u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t u64le(const unsigned char *p)
{
    return (uint64_t)u32le(p) | (uint64_t)u32le(p + 4) << 32;
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
    {"layouts", layouts, METH_O, "layouts(blocks): the structure of a chunk's whole blocks; see the module's source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streamlog._layout",
    "The structure check of a chunk's whole format-2 blocks (records.v2.scan_chunk) in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__layout(void)
{
    return PyModule_Create(&module);
}
