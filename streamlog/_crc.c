/* streamlog._crc: the crc32 that format-2 blocks carry (records/v2.py), fast.
 *
 * crc32(data, value=0) -> int
 *     zlib.crc32(data, value), bit for bit: the CRC-32 of ISO-HDLC / gzip (reflected polynomial
 *     0xEDB88320, register preset to ~value, result inverted), of any C-contiguous buffer.
 *     The GIL is released while it runs over large buffers, so threads can check blocks side by side.
 *
 * crc32_copy(dst, at, data, value=0) -> int
 *     crc32(data, value), and data's bytes copied into the writable buffer dst at offset at, in one pass
 *     (each piece of data is read once, while it is in the cache).  ValueError (naming the sizes)
 *     unless at >= 0 and at + len(data) <= len(dst).
 *
 * Two implementations, chosen once at import by what the CPU has: folding 64 bytes at a time with
 * carry-less multiplication (x86 PCLMULQDQ and SSE4.1), or slicing by 8 with tables (any CPU).  Both
 * end in the same table code for the last bytes.  The folding keeps four 128-bit registers whose
 * value, as a polynomial over GF(2), is congruent modulo the CRC polynomial to the message read so
 * far; the constants x^n mod P that move a register forward by n bits are computed at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_CLMUL_CODE 1
#endif

#define POLY 0xEDB88320u
#define RELEASE_GIL_ABOVE 65536 /* bytes; below this the GIL round trip costs more than it frees */
#define COPY_STEP 16384         /* crc32_copy works through data in pieces of this many bytes */

static uint32_t table[8][256]; /* table[k][b]: the register after byte b followed by k zero bytes */

static void make_tables(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1)));
        table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int k = 1; k < 8; k++)
            table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xFF];
}

/* The raw register (no inversion) after the bytes p[0:n], from register c. */
static uint32_t crc_tables(uint32_t c, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        lo ^= c;
        c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24] ^
            table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
    return c;
}

/* x^n mod P, reflected (bit 31 - d holds the coefficient of x^d). */
static uint32_t xpow(unsigned n)
{
    uint32_t c = 0x80000000u;
    while (n--)
        c = (c >> 1) ^ (POLY & (0u - (c & 1)));
    return c;
}

#ifdef HAVE_CLMUL_CODE
/* Folding constants: a 128-bit register (bit m holds the coefficient of x^(127 - m)) moved forward by
 * D bits is clmul(low half, xpow(D + 31)) ^ clmul(high half, xpow(D - 33)); the product lands one bit
 * short of the register's convention and the exponents' 33 make up for it. */
static uint64_t k512[2], k128[2];

static void make_constants(void)
{
    k512[0] = xpow(512 + 31);
    k512[1] = xpow(512 - 33);
    k128[0] = xpow(128 + 31);
    k128[1] = xpow(128 - 33);
}

__attribute__((target("pclmul,sse4.1"))) static inline __m128i fold(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* crc_tables(c, p, n), folding while 64 or more bytes are left (n >= 64). */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc_clmul(uint32_t c, const unsigned char *p, size_t n)
{
    const __m128i k4 = _mm_set_epi64x((long long)k512[1], (long long)k512[0]);
    const __m128i k1 = _mm_set_epi64x((long long)k128[1], (long long)k128[0]);
    __m128i x0 = _mm_loadu_si128((const __m128i *)p);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)c)); /* a preset register is the first 4 bytes xored */
    p += 64;
    n -= 64;
    while (n >= 64) {
        x0 = _mm_xor_si128(fold(x0, k4), _mm_loadu_si128((const __m128i *)p));
        x1 = _mm_xor_si128(fold(x1, k4), _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = _mm_xor_si128(fold(x2, k4), _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = _mm_xor_si128(fold(x3, k4), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    x0 = _mm_xor_si128(fold(x0, k1), x1);
    x0 = _mm_xor_si128(fold(x0, k1), x2);
    x0 = _mm_xor_si128(fold(x0, k1), x3);
    while (n >= 16) {
        x0 = _mm_xor_si128(fold(x0, k1), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    unsigned char rest[16];
    _mm_storeu_si128((__m128i *)rest, x0); /* congruent to the message so far: its CRC is the message's */
    return crc_tables(crc_tables(0, rest, 16), p, n);
}
#endif

static int use_clmul;

/* zlib.crc32(p[0:n], value). */
static uint32_t crc32_of(uint32_t value, const unsigned char *p, size_t n)
{
    uint32_t c = ~value;
#ifdef HAVE_CLMUL_CODE
    if (use_clmul && n >= 64)
        return ~crc_clmul(c, p, n);
#endif
    return ~crc_tables(c, p, n);
}

static int value_arg(PyObject *o, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLongMask(o); /* as zlib.crc32 takes it: modulo 2**32 */
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static PyObject *crc32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32(data, value=0) takes 1 or 2 arguments");
        return NULL;
    }
    uint32_t value = 0;
    if (nargs == 2 && !value_arg(args[1], &value))
        return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint32_t c;
    if (data.len > RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        c = crc32_of(value, data.buf, (size_t)data.len);
        Py_END_ALLOW_THREADS
    } else {
        c = crc32_of(value, data.buf, (size_t)data.len);
    }
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(c);
}

/* crc32 of src[0:n] from value, src copied to dst on the way. */
static uint32_t crc32_copy_of(uint32_t value, unsigned char *dst, const unsigned char *src, size_t n)
{
    while (n) {
        size_t step = n < COPY_STEP ? n : COPY_STEP;
        value = crc32_of(value, src, step);
        memcpy(dst, src, step);
        src += step;
        dst += step;
        n -= step;
    }
    return value;
}

static PyObject *crc32_copy(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "crc32_copy(dst, at, data, value=0) takes 3 or 4 arguments");
        return NULL;
    }
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    uint32_t value = 0;
    if (nargs == 4 && !value_arg(args[3], &value))
        return NULL;
    Py_buffer dst, data;
    if (PyObject_GetBuffer(args[0], &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &data, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&dst);
        return NULL;
    }
    PyObject *out = NULL;
    if (at < 0 || at > dst.len || data.len > dst.len - at) {
        PyErr_Format(PyExc_ValueError, "crc32_copy: %zd bytes at offset %zd do not fit a buffer of %zd bytes",
                     data.len, at, dst.len);
    } else {
        uint32_t c;
        unsigned char *to = (unsigned char *)dst.buf + at;
        if (data.len > RELEASE_GIL_ABOVE) {
            Py_BEGIN_ALLOW_THREADS
            c = crc32_copy_of(value, to, data.buf, (size_t)data.len);
            Py_END_ALLOW_THREADS
        } else {
            c = crc32_copy_of(value, to, data.buf, (size_t)data.len);
        }
        out = PyLong_FromUnsignedLong(c);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&dst);
    return out;
}

static PyObject *implementation(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(use_clmul ? "pclmul" : "tables");
}

static PyObject *force_tables(PyObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
#ifdef HAVE_CLMUL_CODE
    use_clmul = !on && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"crc32", (PyCFunction)(void (*)(void))crc32, METH_FASTCALL,
     "crc32(data, value=0): zlib.crc32(data, value), faster; releases the GIL over large buffers."},
    {"crc32_copy", (PyCFunction)(void (*)(void))crc32_copy, METH_FASTCALL,
     "crc32_copy(dst, at, data, value=0): crc32(data, value), copying data into dst[at:at + len(data)] on the way."},
    {"implementation", implementation, METH_NOARGS,
     "implementation(): 'pclmul' (carry-less multiplication) or 'tables' (slice-by-8), as chosen for this CPU."},
    {"force_tables", force_tables, METH_O,
     "force_tables(on): use the table code even where the CPU can fold (for tests); False chooses again."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "streamlog._crc",
                                    "The crc32 of format-2 blocks (zlib.crc32, bit for bit), fast.", -1, methods};

PyMODINIT_FUNC PyInit__crc(void)
{
    make_tables();
#ifdef HAVE_CLMUL_CODE
    make_constants();
    __builtin_cpu_init();
    use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
    return PyModule_Create(&module);
}
