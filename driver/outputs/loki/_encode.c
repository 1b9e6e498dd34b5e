/* Loki push entries in C: the per-line part of building a PushRequest (driver/outputs/loki/codec.py).
 * In Python the loop cost ~1.1 us per short line, more than half of the output's CPU (profiled on 1M lines).
 *
 * encode_stream(entries, source, metadata, oldest, newest, longest)
 *     -> (encoded: bytes, sent, size, too_old, too_new, too_long, in_order) | None
 *     Exactly codec.encode_stream_reference: the entries (source, time_nano, line, ...) whose source equals
 *     `source` and that pass the limits, each as field 2 of a StreamAdapter: an EntryAdapter holding a
 *     google.protobuf.Timestamp (seconds, nanos; zero fields left out), the line, then `metadata` (already
 *     encoded structuredMetadata fields). None when an entry is not what the decoder makes (not a tuple of at
 *     least 3, a time that is not an int in [0, 2**63), a line that is not bytes, a source that is not str):
 *     the Python reference then runs, so nothing here has to guess.
 * encode_frames(frames, metadata, oldest, newest, longest) -> (used, count, declined, streams)
 *     The same entries straight from journal frames, without the 7-tuples: decoding and destroying them cost
 *     ~0.5 us per short line, more than everything else the Loki output does per line. Frames are parsed by
 *     driver/_logentry.h, exactly as decode_frames parses them; it stops at the first frame that is incomplete
 *     (used: where it starts, declined False) or that FrameDecoder must handle (garbage, an empty frame, a
 *     partial chunk to join, a time before 1970: declined True). streams: per source present, in sorted order,
 *     (source, encoded, sent, size, too_old, too_new, too_long, in_order) as encode_stream returns them for
 *     the decoded entries; count: the frames taken.
 * Limited API (abi3), like driver/_speedups.c.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "../../_logentry.h"

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static int
reserve(buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline size_t
varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline char *
put_varint(char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

/* One StreamAdapter.entries field: an EntryAdapter holding a google.protobuf.Timestamp (seconds, nanos; zero
 * fields left out), the line, then the already encoded structuredMetadata fields. */
static int
put_entry(buf *out, uint64_t ts, const char *line, size_t len, const void *md, size_t md_len)
{
    uint64_t seconds = ts / 1000000000u, nanos = ts % 1000000000u;
    size_t ts_len = (seconds ? 1 + varint_len(seconds) : 0) + (nanos ? 1 + varint_len(nanos) : 0);
    size_t body = 2 + ts_len + 1 + varint_len((uint64_t)len) + len + md_len;
    if (reserve(out, 1 + varint_len(body) + body) < 0)
        return -1;
    char *p = out->p + out->len;
    *p++ = 0x12; /* StreamAdapter.entries */
    p = put_varint(p, body);
    *p++ = 0x0a; /* EntryAdapter.timestamp */
    *p++ = (char)ts_len;
    if (seconds) {
        *p++ = 0x08;
        p = put_varint(p, seconds);
    }
    if (nanos) {
        *p++ = 0x10;
        p = put_varint(p, nanos);
    }
    *p++ = 0x12; /* EntryAdapter.line */
    p = put_varint(p, (uint64_t)len);
    memcpy(p, line, len);
    p += len;
    if (md_len) {
        memcpy(p, md, md_len);
        p += md_len;
    }
    out->len = (size_t)(p - out->p);
    return 0;
}

static PyObject *
encode_stream(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *entries, *source;
    Py_buffer md;
    long long oldest, newest;
    Py_ssize_t longest;
    if (!PyArg_ParseTuple(args, "O!Uy*LLn", &PyList_Type, &entries, &source, &md, &oldest, &newest, &longest))
        return NULL;
    buf out = {NULL, 0, 0};
    Py_ssize_t sent = 0, size = 0, too_old = 0, too_new = 0, too_long = 0;
    int in_order = 1;
    long long last = -1;
    Py_ssize_t n = PyList_Size(entries);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GetItem(entries, i); /* borrowed */
        if (!PyTuple_Check(e) || PyTuple_Size(e) < 3)
            goto decline;
        PyObject *src = PyTuple_GetItem(e, 0), *t = PyTuple_GetItem(e, 1), *line = PyTuple_GetItem(e, 2);
        if (!PyUnicode_Check(src) || !PyLong_Check(t) || !PyBytes_Check(line))
            goto decline;
        if (src != source) {
            int cmp = PyUnicode_Compare(src, source);
            if (cmp == -1 && PyErr_Occurred())
                goto fail;
            if (cmp != 0)
                continue;
        }
        int overflow = 0;
        long long ts = PyLong_AsLongLongAndOverflow(t, &overflow);
        if (overflow || ts < 0) {
            if (PyErr_Occurred())
                goto fail;
            goto decline;
        }
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(line, &data, &len) < 0)
            goto fail;
        if (ts < oldest) {
            too_old++;
            continue;
        }
        if (ts > newest) {
            too_new++;
            continue;
        }
        if (len > longest) {
            too_long++;
            continue;
        }
        if (ts < last)
            in_order = 0;
        last = ts;
        if (put_entry(&out, (uint64_t)ts, data, (size_t)len, md.buf, (size_t)md.len) < 0)
            goto fail;
        sent++;
        size += len + md.len;
    }
    PyObject *encoded = PyBytes_FromStringAndSize(out.p ? out.p : "", (Py_ssize_t)out.len);
    PyMem_Free(out.p);
    PyBuffer_Release(&md);
    if (!encoded)
        return NULL;
    return Py_BuildValue("(NnnnnnO)", encoded, sent, size, too_old, too_new, too_long,
                         in_order ? Py_True : Py_False);
decline:
    PyMem_Free(out.p);
    PyBuffer_Release(&md);
    Py_RETURN_NONE;
fail:
    PyMem_Free(out.p);
    PyBuffer_Release(&md);
    return NULL;
}

/* One source's stream while encode_frames walks the frames. */
typedef struct {
    buf out;
    Py_ssize_t frames, sent, size, too_old, too_new, too_long;
    int in_order;
    long long last;
} stream_t;

static PyObject *
stream_result(stream_t *st, const char *source)
{
    PyObject *encoded = PyBytes_FromStringAndSize(st->out.p ? st->out.p : "", (Py_ssize_t)st->out.len);
    if (!encoded)
        return NULL;
    return Py_BuildValue("(sNnnnnnO)", source, encoded, st->sent, st->size, st->too_old, st->too_new, st->too_long,
                         st->in_order ? Py_True : Py_False);
}

static PyObject *
encode_frames(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data, md;
    long long oldest, newest;
    Py_ssize_t longest;
    if (!PyArg_ParseTuple(args, "y*y*LLn", &data, &md, &oldest, &newest, &longest))
        return NULL;
    const uint8_t *b = (const uint8_t *)data.buf;
    Py_ssize_t end = data.len, pos = 0, frames = 0;
    stream_t st[2]; /* SOURCE_STDOUT, SOURCE_STDERR */
    memset(st, 0, sizeof(st));
    st[0].in_order = st[1].in_order = 1;
    st[0].last = st[1].last = -1;
    int declined = 0;
    PyObject *result = NULL;
    entry_t e;
    for (;;) {
        uint32_t length;
        int got = next_frame(b, pos, end, &e, &length);
        if (got == 0)
            break; /* the rest of this frame is not in the journal yet */
        if (got < 0 || e.partial || e.time_nano < 0) {
            declined = 1; /* garbage, an empty frame, a chunk to join, a time before 1970: FrameDecoder's way */
            break;
        }
        stream_t *s = &st[e.source];
        s->frames++;
        frames++;
        pos += 4 + (Py_ssize_t)length;
        long long ts = e.time_nano;
        if (ts < oldest) {
            s->too_old++;
            continue;
        }
        if (ts > newest) {
            s->too_new++;
            continue;
        }
        if (e.line_len > longest) {
            s->too_long++;
            continue;
        }
        if (ts < s->last)
            s->in_order = 0;
        s->last = ts;
        if (put_entry(&s->out, (uint64_t)ts, (const char *)e.line, (size_t)e.line_len, md.buf, (size_t)md.len) < 0)
            goto done;
        s->sent++;
        s->size += e.line_len + md.len;
    }
    PyObject *streams = PyList_New(0);
    if (!streams)
        goto done;
    /* In sorted source order ("stderr" < "stdout"), as the sink's Python path lists them. */
    static const int order[2] = {SOURCE_STDERR, SOURCE_STDOUT};
    static const char *names[2] = {"stdout", "stderr"};
    for (int k = 0; k < 2; k++) {
        stream_t *s = &st[order[k]];
        if (!s->frames)
            continue;
        PyObject *one = stream_result(s, names[order[k]]);
        if (!one || PyList_Append(streams, one) < 0) {
            Py_XDECREF(one);
            Py_DECREF(streams);
            goto done;
        }
        Py_DECREF(one);
    }
    result = Py_BuildValue("(nnON)", pos, frames, declined ? Py_True : Py_False, streams);
done:
    PyMem_Free(st[0].out.p);
    PyMem_Free(st[1].out.p);
    PyBuffer_Release(&data);
    PyBuffer_Release(&md);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_stream", encode_stream, METH_VARARGS,
     "encode_stream(entries, source, metadata, oldest, newest, longest)\n"
     "    -> (encoded, sent, size, too_old, too_new, too_long, in_order) | None\n\n"
     "codec.encode_stream_reference in C; None for input it declines (the reference then runs)."},
    {"encode_frames", encode_frames, METH_VARARGS,
     "encode_frames(frames, metadata, oldest, newest, longest) -> (used, count, declined, streams)\n\n"
     "Journal frames straight to each source's stream entries: decode_frames then encode_stream, no tuples."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_encode", "Loki push entries, encoded without a Python object per entry.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__encode(void)
{
    return PyModule_Create(&moduledef);
}
