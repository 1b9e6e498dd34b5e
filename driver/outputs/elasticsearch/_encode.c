/* Elasticsearch documents in C: the per-line part of driver/outputs/elasticsearch/codec.py's DocumentTemplate.
 * In Python the loop cost ~2 us per short line (a 500-byte document each), the largest per-line cost of the
 * output (profiled on 100k lines); here it is a copy.
 *
 * encode_documents(entries, offsets, start, head, with_ids, tail, source, sec_lo, sec_hi) -> (docs, next)
 *     From entries[start], while each entry is what the decoder makes (a tuple of at least 3: source str equal
 *     to `source`, time_nano an int with its second in [sec_lo, sec_hi), line bytes made only of bytes that
 *     json-file's escaper copies as they are) and its offset an int >= 0, one document per entry:
 *         head [offset '"'] '}}\n{"@timestamp":"' YYYY-MM-DDTHH:MM:SS.nnnnnnnnn 'Z","event":{"sequence":'
 *         offset '},"message":"' line tail
 *     exactly as DocumentTemplate.documents_pure writes it (`[offset '"']` only with with_ids). Stops at the
 *     first entry it does not take: `next` is its index (start: none taken), and the Python reference does
 *     that one, so nothing here has to guess about escaping.
 *
 * encode_frames(frames, base, out_head, out_tail, err_head, err_tail, with_ids, sec_lo, sec_hi)
 *         -> (used, body, ends, declined, next_time)
 *     The same documents straight from journal frames (`base`: the journal offset of frames[0]), as one _bulk
 *     body: no 7-tuple, no bytes object per line (decoding and the per-document objects were most of the
 *     output's CPU). Frames are parsed by driver/_logentry.h as decode_frames parses them, and lines escaped by
 *     driver/_jsonescape.h as json-file's escaper does. Each entry's head and tail are its source's (they are
 *     the same for every entry of one source whose second is in [sec_lo, sec_hi)). It stops at the first frame
 *     that is incomplete (used: where it starts), whose time is outside the window (next_time: that time, else
 *     -1; the caller asks again with that hour's heads and tails), or that FrameDecoder must handle (garbage, an
 *     empty frame, a partial chunk to join, a time before 1970: declined True). ends: each document's end in
 *     body, native uint64s (memoryview.cast("Q")), so one document can still be cut out for a retry or a 413.
 *     Exact size: one pass measures, the second writes into the body.
 * Limited API (abi3), like driver/_speedups.c.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../_logentry.h"
#include "../../_jsonescape.h"

static inline char *
put_uint(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static inline char *
put2(char *p, int v)
{
    *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* "YYYY-MM-DDTHH:MM:SS" of a second since the epoch (UTC; days to civil date as in H. Hinnant's algorithm). */
static void
second_prefix(int64_t sec, char out[19])
{
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y += 1;
    char *p = out;
    p = put2(p, (int)(y / 100));
    p = put2(p, (int)(y % 100));
    *p++ = '-';
    p = put2(p, (int)m);
    *p++ = '-';
    p = put2(p, (int)d);
    *p++ = 'T';
    p = put2(p, (int)(rem / 3600));
    *p++ = ':';
    p = put2(p, (int)(rem / 60 % 60));
    *p++ = ':';
    put2(p, (int)(rem % 60));
}

static const char MID[] = "}}\n{\"@timestamp\":\"";
static const char SEQ[] = "Z\",\"event\":{\"sequence\":";
static const char MSG[] = "},\"message\":\"";

static inline size_t
uint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* The part of a document after the head (and the id's offset): up to the escaped message. */
static inline char *
put_middle(char *p, const char second[19], long long ns, uint64_t at)
{
    memcpy(p, MID, sizeof(MID) - 1);
    p += sizeof(MID) - 1;
    memcpy(p, second, 19);
    p += 19;
    *p++ = '.';
    for (int d = 8; d >= 0; d--) {
        p[d] = (char)('0' + ns % 10);
        ns /= 10;
    }
    p += 9;
    memcpy(p, SEQ, sizeof(SEQ) - 1);
    p += sizeof(SEQ) - 1;
    p = put_uint(p, at);
    memcpy(p, MSG, sizeof(MSG) - 1);
    return p + sizeof(MSG) - 1;
}

static PyObject *
encode_documents(PyObject *self, PyObject *args)
{
    PyObject *entries, *offsets, *source;
    Py_ssize_t start;
    const char *head, *tail;
    Py_ssize_t head_len, tail_len;
    int with_ids;
    long long sec_lo, sec_hi;
    if (!PyArg_ParseTuple(args, "OOny#py#ULL", &entries, &offsets, &start, &head, &head_len, &with_ids, &tail,
                          &tail_len, &source, &sec_lo, &sec_hi))
        return NULL;
    if (!PyList_Check(entries) || !PyList_Check(offsets)) {
        PyErr_SetString(PyExc_TypeError, "entries and offsets must be lists");
        return NULL;
    }
    Py_ssize_t n = PyList_Size(entries);
    if (PyList_Size(offsets) != n || start < 0 || start > n) {
        PyErr_SetString(PyExc_ValueError, "offsets must match entries and start must be within them");
        return NULL;
    }
    PyObject *docs = PyList_New(0);
    if (!docs)
        return NULL;
    char second[19];
    long long prev_sec = -1;
    char *buf = NULL;
    size_t cap = 0;
    Py_ssize_t i = start;
    for (; i < n; i++) {
        PyObject *e = PyList_GetItem(entries, i);
        if (!PyTuple_Check(e) || PyTuple_Size(e) < 3)
            break;
        PyObject *src = PyTuple_GetItem(e, 0), *tn = PyTuple_GetItem(e, 1), *line = PyTuple_GetItem(e, 2);
        if (src != source) {
            if (!PyUnicode_Check(src))
                break;
            int same = PyObject_RichCompareBool(src, source, Py_EQ);
            if (same < 0)
                goto fail;
            if (!same)
                break;
        }
        if (!PyLong_Check(tn) || !PyBytes_Check(line))
            break;
        int overflow = 0;
        long long time_nano = PyLong_AsLongLongAndOverflow(tn, &overflow);
        if (overflow || (time_nano == -1 && PyErr_Occurred()) || time_nano < 0) {
            PyErr_Clear();
            break;
        }
        long long sec = time_nano / 1000000000LL, ns = time_nano % 1000000000LL;
        if (sec < sec_lo || sec >= sec_hi)
            break;
        PyObject *off = PyList_GetItem(offsets, i);
        if (!PyLong_Check(off))
            break;
        long long at = PyLong_AsLongLongAndOverflow(off, &overflow);
        if (overflow || at < 0) {
            PyErr_Clear();
            break;
        }
        char *text;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(line, &text, &len) < 0)
            goto fail;
        Py_ssize_t k = 0;
        while (k < len && copy_as_is[(unsigned char)text[k]])
            k++;
        if (k != len)
            break;
        if (sec != prev_sec) {
            second_prefix(sec, second);
            prev_sec = sec;
        }
        size_t need = (size_t)head_len + 21 + sizeof(MID) + 19 + 10 + sizeof(SEQ) + 20 + sizeof(MSG) + (size_t)len
                      + (size_t)tail_len;
        if (need > cap) {
            char *p = PyMem_Realloc(buf, need);
            if (!p) {
                PyErr_NoMemory();
                goto fail;
            }
            buf = p;
            cap = need;
        }
        char *p = buf;
        memcpy(p, head, (size_t)head_len);
        p += head_len;
        if (with_ids) {
            p = put_uint(p, (uint64_t)at);
            *p++ = '"';
        }
        p = put_middle(p, second, ns, (uint64_t)at);
        memcpy(p, text, (size_t)len);
        p += len;
        memcpy(p, tail, (size_t)tail_len);
        p += tail_len;
        PyObject *doc = PyBytes_FromStringAndSize(buf, p - buf);
        if (!doc)
            goto fail;
        int r = PyList_Append(docs, doc);
        Py_DECREF(doc);
        if (r < 0)
            goto fail;
    }
    PyMem_Free(buf);
    return Py_BuildValue("(Nn)", docs, i);
fail:
    PyMem_Free(buf);
    Py_DECREF(docs);
    return NULL;
}

/* One frame's entry as the first pass of encode_frames keeps it for the second. */
typedef struct {
    const uint8_t *line;
    Py_ssize_t line_len, escaped;
    int64_t time_nano;
    uint64_t at;
    int source;
} doc_t;

static PyObject *
encode_frames(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data, heads[2], tails[2];
    long long base, sec_lo, sec_hi;
    int with_ids;
    if (!PyArg_ParseTuple(args, "y*Ly*y*y*y*pLL", &data, &base, &heads[0], &tails[0], &heads[1], &tails[1],
                          &with_ids, &sec_lo, &sec_hi))
        return NULL;
    PyObject *result = NULL, *body = NULL, *ends = NULL;
    const uint8_t *b = (const uint8_t *)data.buf;
    Py_ssize_t end = data.len, pos = 0, n = 0, cap = 0;
    doc_t *docs = NULL;
    int declined = 0;
    long long next_time = -1;
    size_t total = 0;
    entry_t e;
    if (base < 0) {
        PyErr_SetString(PyExc_ValueError, "base must be >= 0");
        goto done;
    }
    /* Both passes touch no Python object (the buffers are held, body and ends are not shared yet), so the GIL is
       let go meanwhile: the event loop writes json.log and bulk requests on the other CPU instead of waiting for
       this worker thread's batch. */
    int nomem = 0;
    /* first pass: parse, keep, measure */
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        uint32_t length;
        int got = next_frame(b, pos, end, &e, &length);
        if (got == 0)
            break; /* the rest of this frame is not in the journal yet */
        if (got < 0 || e.partial || e.time_nano < 0) {
            declined = 1; /* garbage, an empty frame, a chunk to join, a time before 1970: FrameDecoder's way */
            break;
        }
        long long sec = e.time_nano / 1000000000LL;
        if (sec < sec_lo || sec >= sec_hi) {
            next_time = e.time_nano; /* another hour: maybe another target */
            break;
        }
        if (n == cap) {
            Py_ssize_t more = cap ? cap * 2 : 1024;
            doc_t *p = realloc(docs, (size_t)more * sizeof(doc_t));
            if (!p) {
                nomem = 1;
                break;
            }
            docs = p;
            cap = more;
        }
        doc_t *d = &docs[n++];
        d->line = e.line;
        d->line_len = e.line_len;
        d->escaped = escaped_len(e.line, e.line_len);
        d->time_nano = e.time_nano;
        d->at = (uint64_t)base + (uint64_t)pos;
        d->source = e.source;
        size_t digits = uint_len(d->at);
        total += (size_t)heads[e.source].len + (with_ids ? digits + 1 : 0) + sizeof(MID) - 1 + 19 + 10
                 + sizeof(SEQ) - 1 + digits + sizeof(MSG) - 1 + (size_t)d->escaped + (size_t)tails[e.source].len;
        pos += 4 + (Py_ssize_t)length;
    }
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
        goto done;
    }
    if (total > (size_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    ends = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint64_t));
    if (!body || !ends)
        goto done;
    /* second pass: write */
    char *out = PyBytes_AsString(body), *start = out;
    uint64_t *ends_at = (uint64_t *)PyBytes_AsString(ends);
    char second[19];
    long long prev_sec = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        doc_t *d = &docs[i];
        long long sec = d->time_nano / 1000000000LL;
        if (sec != prev_sec) {
            second_prefix(sec, second);
            prev_sec = sec;
        }
        memcpy(out, heads[d->source].buf, (size_t)heads[d->source].len);
        out += heads[d->source].len;
        if (with_ids) {
            out = put_uint(out, d->at);
            *out++ = '"';
        }
        out = put_middle(out, second, d->time_nano % 1000000000LL, d->at);
        if (d->escaped == d->line_len) { /* nothing to escape (same length means no escape: each is longer) */
            memcpy(out, d->line, (size_t)d->line_len);
            out += d->line_len;
        } else {
            out = (char *)escape_into((uint8_t *)out, d->line, d->line_len);
        }
        memcpy(out, tails[d->source].buf, (size_t)tails[d->source].len);
        out += tails[d->source].len;
        ends_at[i] = (uint64_t)(out - start);
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nOOOL)", pos, body, ends, declined ? Py_True : Py_False, next_time);
done:
    Py_XDECREF(body);
    Py_XDECREF(ends);
    free(docs); /* malloc, not PyMem: allocated without the GIL */
    PyBuffer_Release(&data);
    for (int k = 0; k < 2; k++) {
        PyBuffer_Release(&heads[k]);
        PyBuffer_Release(&tails[k]);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"encode_documents", encode_documents, METH_VARARGS,
     "Elasticsearch documents for a run of entries of one source and hour (see the module comment)."},
    {"encode_frames", encode_frames, METH_VARARGS,
     "A _bulk body and its documents' ends straight from journal frames of one hour (see the module comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_encode", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__encode(void)
{
    jsonescape_init();
    return PyModule_Create(&module);
}
