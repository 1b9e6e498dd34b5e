/* Counting the entries of a PackedForward payload without building them, for a receiver that only counts
 * records (driver/receiver.py without a sink, as bench/receiver.py runs it). Fluent Bit walks the msgpack in C
 * too; decoding every record into dicts to throw them away cost ~3 CPU-s per million records.
 *
 * count_entries(payload) -> int
 *     The number of entries in payload (concatenated msgpack objects), or ValueError exactly when the Python
 *     reference, codec._check_entries(codec._unpack_entries(payload), strict=True), raises ProtocolError.
 *
 * The reference is msgpack-python's Unpacker (raw=False, unicode_errors="surrogateescape", strict_map_key=False,
 * ext_hook=codec._ext_hook) followed by the entry rules. Every entry is [time, record] or, as Fluent Bit 2 sends,
 * [[time, metadata], record]: record and metadata are maps, time is ext 0 with 8 bytes (EventTime), an int >= 0
 * or a float. Besides that shape the reference rejects, anywhere in the payload:
 *   - byte 0xc1, and an object that runs past the end of the payload;
 *   - a container (even an empty one) opened while 1024 are open: msgpack's stack (MSGPACK_EMBED_STACK_SIZE);
 *   - an array or a map as a map key: unhashable, so filling the dict raises TypeError. Every other key type
 *     (str, bin, int, float, nil, bool, ext) is fine;
 *   - ext type -1 (msgpack's Timestamp) unless it has 4, 8 or 12 bytes with nanoseconds < 10**9, and ext types
 *     -128..-2 (msgpack.ExtType takes codes 0..127 only).
 * str that is not UTF-8 is accepted (surrogateescape cannot fail). msgpack's max_*_len limits are the buffer
 * size, which no complete object can exceed. tests/unit/test_forward_entries.py compares this with the reference.
 *
 * The walk keeps its own stack (no recursion) and checks every length against the end of the buffer.
 * Limited API (abi3), like driver/_speedups.c.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define MAX_DEPTH 1024 /* msgpack-python's MSGPACK_EMBED_STACK_SIZE */

enum { OK, ERR_SHORT, ERR_FORMAT, ERR_DEPTH, ERR_KEY, ERR_EXT, ERR_SHAPE, ERR_TIME, ERR_MAP };

static const char *const reasons[] = {
    [ERR_SHORT] = "entries end in the middle of an event",
    [ERR_FORMAT] = "invalid msgpack in entries: byte 0xc1",
    [ERR_DEPTH] = "invalid msgpack in entries: nested deeper than 1024",
    [ERR_KEY] = "invalid msgpack in entries: an array or a map as a map key",
    [ERR_EXT] = "invalid msgpack in entries: an ext type msgpack rejects (-128..-2, or a malformed timestamp)",
    [ERR_SHAPE] = "invalid entry: not [time, record] or [[time, metadata], record]",
    [ERR_TIME] = "invalid entry: time is not an EventTime, an int >= 0 or a float",
    [ERR_MAP] = "invalid entry: record or metadata is not a map",
};

typedef enum { T_NIL, T_BOOL, T_UINT, T_NEGINT, T_FLOAT, T_STR, T_BIN, T_EXT, T_ARRAY, T_MAP } mtype;

/* One msgpack header. Scalars (str, bin and ext included) are read whole; for containers only the header. */
typedef struct {
    mtype type;
    uint32_t n;          /* array/map: item count; ext: data length */
    int ext;             /* ext type code */
    const uint8_t *data; /* ext data */
} head;

static inline uint32_t
load_be(const uint8_t *p, unsigned k)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < k; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads the object (or container header) at *pp into h and moves *pp past it. */
static int
read_head(const uint8_t **pp, const uint8_t *end, head *h)
{
    const uint8_t *p = *pp;
    if (p >= end)
        return ERR_SHORT;
    uint8_t c = *p++;
    size_t avail = (size_t)(end - p);
    unsigned k = 0;     /* size of the length field or of the fixed-size value after c */
    size_t skip;        /* bytes after c */
    h->type = T_NIL;
    if (c <= 0x7f) {
        h->type = T_UINT;
        goto done;
    }
    if (c >= 0xe0) {
        h->type = T_NEGINT;
        goto done;
    }
    if (c <= 0x8f) {
        h->type = T_MAP;
        h->n = c & 0x0f;
        goto done;
    }
    if (c <= 0x9f) {
        h->type = T_ARRAY;
        h->n = c & 0x0f;
        goto done;
    }
    if (c <= 0xbf) {
        h->type = T_STR;
        skip = c & 0x1f;
        goto data;
    }
    switch (c) {
    case 0xc0:
        goto done;
    case 0xc1:
        return ERR_FORMAT;
    case 0xc2:
    case 0xc3:
        h->type = T_BOOL;
        goto done;
    case 0xc4: /* bin 8/16/32 */
    case 0xc5:
    case 0xc6:
        h->type = T_BIN;
        k = 1u << (c - 0xc4);
        goto sized;
    case 0xc7: /* ext 8/16/32 */
    case 0xc8:
    case 0xc9:
        k = 1u << (c - 0xc7);
        if (avail < k + 1)
            return ERR_SHORT;
        h->type = T_EXT;
        h->n = load_be(p, k);
        h->ext = (int8_t)p[k];
        p += k + 1;
        avail -= k + 1;
        goto ext;
    case 0xca: /* float 32/64 */
    case 0xcb:
        h->type = T_FLOAT;
        skip = c == 0xca ? 4 : 8;
        goto data;
    case 0xcc: /* uint 8/16/32/64 */
    case 0xcd:
    case 0xce:
    case 0xcf:
        h->type = T_UINT;
        skip = 1u << (c - 0xcc);
        goto data;
    case 0xd0: /* int 8/16/32/64: the sign is the top bit of the first byte */
    case 0xd1:
    case 0xd2:
    case 0xd3:
        skip = 1u << (c - 0xd0);
        if (avail < skip)
            return ERR_SHORT;
        h->type = (p[0] & 0x80) ? T_NEGINT : T_UINT;
        goto data;
    case 0xd4: /* fixext 1/2/4/8/16 */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        if (avail < 1)
            return ERR_SHORT;
        h->type = T_EXT;
        h->n = 1u << (c - 0xd4);
        h->ext = (int8_t)p[0];
        p += 1;
        avail -= 1;
        goto ext;
    case 0xd9: /* str 8/16/32 */
    case 0xda:
    case 0xdb:
        h->type = T_STR;
        k = 1u << (c - 0xd9);
        goto sized;
    case 0xdc: /* array 16/32 */
    case 0xdd:
        h->type = T_ARRAY;
        k = c == 0xdc ? 2 : 4;
        goto count;
    default: /* 0xde, 0xdf: map 16/32 */
        h->type = T_MAP;
        k = c == 0xde ? 2 : 4;
        goto count;
    }
count:
    if (avail < k)
        return ERR_SHORT;
    h->n = load_be(p, k);
    p += k;
    goto done;
sized:
    if (avail < k)
        return ERR_SHORT;
    skip = load_be(p, k);
    p += k;
    avail -= k;
    goto data;
ext:
    if (avail < h->n)
        return ERR_SHORT;
    h->data = p;
    p += h->n;
    goto done;
data:
    if (avail < skip)
        return ERR_SHORT;
    p += skip;
done:
    *pp = p;
    return OK;
}

/* What msgpack.ExtType and msgpack's Timestamp accept (types 0..127 go to codec._ext_hook, which never fails). */
static int
ext_ok(const head *h)
{
    if (h->ext >= 0)
        return 1;
    if (h->ext != -1)
        return 0;
    if (h->n == 4)
        return 1;
    if (h->n == 8) /* 30 bits of nanoseconds, 34 of seconds */
        return (load_be(h->data, 4) >> 2) < 1000000000u;
    if (h->n == 12) /* 32 bits of nanoseconds, then int64 seconds */
        return load_be(h->data, 4) < 1000000000u;
    return 0;
}

/* Checks the whole value at *pp, which sits inside `depth` open containers, and moves *pp past it. */
static int
walk(const uint8_t **pp, const uint8_t *end, unsigned depth)
{
    uint64_t left[MAX_DEPTH]; /* items still to come in each open container; a map counts keys and values */
    uint8_t in_map[MAX_DEPTH];
    unsigned top = 0;
    const uint8_t *p = *pp;
    head h;
    for (;;) {
        int key = top > 0 && in_map[top - 1] && (left[top - 1] & 1) == 0;
        int err = read_head(&p, end, &h);
        if (err)
            return err;
        if (h.type == T_ARRAY || h.type == T_MAP) {
            if (key)
                return ERR_KEY;
            if (depth + top >= MAX_DEPTH)
                return ERR_DEPTH;
            if (h.n > 0) {
                left[top] = h.type == T_MAP ? 2 * (uint64_t)h.n : h.n;
                in_map[top] = h.type == T_MAP;
                top++;
                continue;
            }
        } else if (h.type == T_EXT && !ext_ok(&h)) {
            return ERR_EXT;
        }
        /* a value is complete: so is every container it was the last item of */
        while (top > 0 && --left[top - 1] == 0)
            top--;
        if (top == 0) {
            *pp = p;
            return OK;
        }
    }
}

static inline int
valid_time(const head *h)
{
    return h->type == T_UINT || h->type == T_FLOAT || (h->type == T_EXT && h->ext == 0 && h->n == 8);
}

/* A map at *pp, inside `depth` open containers. */
static int
walk_map(const uint8_t **pp, const uint8_t *end, unsigned depth)
{
    const uint8_t *q = *pp;
    head h;
    int err = read_head(&q, end, &h);
    if (err)
        return err;
    if (h.type != T_MAP)
        return ERR_MAP;
    return walk(pp, end, depth);
}

static int
walk_entry(const uint8_t **pp, const uint8_t *end)
{
    head h;
    int err = read_head(pp, end, &h);
    if (err)
        return err;
    if (h.type != T_ARRAY || h.n != 2)
        return ERR_SHAPE;
    if ((err = read_head(pp, end, &h)))
        return err;
    if (h.type == T_ARRAY) { /* [[time, metadata], record] */
        if (h.n != 2)
            return ERR_SHAPE;
        if ((err = read_head(pp, end, &h)))
            return err;
        if (!valid_time(&h))
            return ERR_TIME;
        if ((err = walk_map(pp, end, 2)))
            return err;
    } else if (!valid_time(&h)) {
        return ERR_TIME;
    }
    return walk_map(pp, end, 1);
}

static PyObject *
count_entries(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *start = (const uint8_t *)view.buf, *p = start, *end = start + view.len;
    Py_ssize_t count = 0;
    while (p < end) {
        const uint8_t *at = p;
        int err = walk_entry(&p, end);
        if (err) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "%s (entry %zd, at byte %zd)", reasons[err], count, (Py_ssize_t)(at - start));
            return NULL;
        }
        count++;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"count_entries", count_entries, METH_O,
     "count_entries(payload) -> int\n\n"
     "The number of entries in a PackedForward payload, checked as codec._check_entries(codec._unpack_entries(\n"
     "payload), strict=True) checks them, without building them; ValueError where that raises ProtocolError."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_entries", "Counts and validates PackedForward entries without decoding them.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__entries(void)
{
    return PyModule_Create(&moduledef);
}
