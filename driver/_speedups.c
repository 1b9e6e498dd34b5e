/* C versions of the consumers' hot path: FIFO frame decoding (driver/frames.py), json-file line encoding
 * (driver/jsonfile.py) and forward record packing (driver/outputs/forward/codec.py). The pure-Python code stays the
 * reference and the fallback: the functions here only take what they are sure to get byte-for-byte right and
 * leave everything else to it.
 *
 * decode_frames(buf, pos, offsets=None) -> (entries, new_pos, (out_lines, out_bytes, err_lines, err_bytes))
 *     Decodes consecutive ordinary frames from buf[pos:] into FrameDecoder's 7-tuples (and, given a list as
 *     offsets, appends to it where each entry's frame starts in buf) and stops (new_pos is
 *     where that frame starts) at the first frame that is not one: torn, too long, empty, or a payload this
 *     parser is not certain upb reads the same way (unknown field, unexpected wire type, non-canonical varint,
 *     string that is not valid UTF-8, source other than stdout/stderr or missing).
 *
 * encode_lines(entries, attrs_json) -> list[bytes] | None
 *     jsonfile.encode_entries for a list of entries, or None when the batch holds something outside this
 *     fast path (unusual source, empty non-final partial chunk, a time outside int64 or years 1..9999).
 *
 * encode_frame_lines(frames, attrs_json) -> (used, count, declined, joined, (out_lines, out_bytes, err_lines, err_bytes))
 *     encode_lines straight from journal frames, the lines joined in one bytes object, without a 7-tuple per entry
 *     (building and freeing them was most of the json.log writer's cost). Frames are parsed by driver/_logentry.h as
 *     decode_frames parses them; it stops at the first frame that is incomplete (used: where it starts, declined
 *     False) or that needs the decoded way (declined True): garbage, an empty frame, what decode_frames leaves to
 *     upb, an empty chunk that is not the last one. count: the frames taken; the four
 *     counts are decode_frames' for them. The GIL is let go while it encodes.
 *
 * encode_records(entries, event_time, prefix_out, prefix_err, partial_prefix_out, partial_prefix_err, extras)
 *     -> list[bytes] | None
 *     forward.codec.RecordEncoder.encode_batch on its fast path (no extra shadows a per-record key): the caller
 *     passes what it packed once per container, C adds the time, the line and the partial_* fields. None when
 *     the batch holds something outside this fast path (a source other than stdout/stderr, a line that is not
 *     bytes, flags that are not bools, a partial id that is not plain UTF-8, an ordinal outside int64).
 *
 * encode_record_frames(frames, event_time, prefix_out, prefix_err, partial_prefix_out, partial_prefix_err, extras,
 *                      id_key, id_prefix, base, budget, partials) -> (used, count, declined, packed)
 *     The same packed Entries straight from journal frames, concatenated, without the 7-tuples (building and
 *     freeing them was the forward output's largest per-line cost after the encoding itself). Frames are parsed by
 *     driver/_logentry.h as decode_frames parses them; each Entry is what encode_records makes of the decoded
 *     entry, plus, with an id_key (packed key, or empty for none), the record id id_prefix + hex(base + the
 *     frame's position in frames) as RecordEncoder._with_ids appends it. It stops at the first frame that is
 *     incomplete (used: where it starts, declined False) or that needs the decoded way (declined True): garbage,
 *     an empty frame, what decode_frames leaves to upb, a partial chunk when `partials` is false (the caller joins
 *     chunks), an Entry that would take the packed size over `budget` (BatchBuilder would start a second frame).
 *     count: the frames taken.
 *
 * Limited API (abi3): one build loads on every CPython >= 3.11 (the buffer protocol joined it in 3.11).
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_logentry.h"
#include "_jsonescape.h"

#define NS 1000000000LL

static PyObject *str_stdout, *str_stderr, *str_empty;

/* 0 for "stdout", 1 for "stderr" (exact str only: a subclass could compare its own way), -1 for anything else. */
static inline int
source_index(PyObject *source)
{
    if (source == str_stdout)
        return 0;
    if (source == str_stderr)
        return 1;
    if (!PyUnicode_CheckExact(source))
        return -1;
    if (PyUnicode_CompareWithASCIIString(source, "stdout") == 0)
        return 0;
    if (PyUnicode_CompareWithASCIIString(source, "stderr") == 0)
        return 1;
    return -1;
}


static PyObject *
entry_tuple(const entry_t *e)
{
    PyObject *t = PyTuple_New(7);
    if (t == NULL)
        return NULL;
    PyObject *time_nano = PyLong_FromLongLong(e->time_nano);
    PyObject *line = PyBytes_FromStringAndSize((const char *)e->line, e->line_len);
    PyObject *id = NULL, *ordinal = NULL;
    if (e->partial) {
        id = PyUnicode_DecodeUTF8((const char *)e->id, e->id_len, "strict");
        ordinal = PyLong_FromLong(e->ordinal);
    } else {
        Py_INCREF(str_empty);
        id = str_empty;
        ordinal = PyLong_FromLong(0);
    }
    if (time_nano == NULL || line == NULL || id == NULL || ordinal == NULL) {
        Py_XDECREF(time_nano);
        Py_XDECREF(line);
        Py_XDECREF(id);
        Py_XDECREF(ordinal);
        Py_DECREF(t);
        return NULL;
    }
    PyObject *partial = e->partial ? Py_True : Py_False;
    PyObject *last = (e->partial && e->last) ? Py_True : Py_False;
    PyObject *source = e->source == SOURCE_STDERR ? str_stderr : str_stdout;
    Py_INCREF(source);
    Py_INCREF(partial);
    Py_INCREF(last);
    PyTuple_SetItem(t, 0, source);
    PyTuple_SetItem(t, 1, time_nano);
    PyTuple_SetItem(t, 2, line);
    PyTuple_SetItem(t, 3, partial);
    PyTuple_SetItem(t, 4, last);
    PyTuple_SetItem(t, 5, id);
    PyTuple_SetItem(t, 6, ordinal);
    return t;
}

static PyObject *
decode_frames(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *obj, *offsets = Py_None;
    Py_ssize_t pos;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "On|O:decode_frames", &obj, &pos, &offsets))
        return NULL;
    if (offsets == Py_None)
        offsets = NULL; /* the usual case: one pointer test per frame */
    else if (!PyList_Check(offsets)) {
        PyErr_SetString(PyExc_TypeError, "offsets must be a list or None");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *buf = (const uint8_t *)view.buf;
    Py_ssize_t end = view.len;
    if (pos < 0 || pos > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos outside the buffer");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long long out_lines = 0, out_bytes = 0, err_lines = 0, err_bytes = 0;
    entry_t e;
    while (end - pos >= 4) {
        const uint8_t *h = buf + pos;
        uint32_t length = frame_length(h);
        if (length == 0 || length > MAX_FRAME || (Py_ssize_t)length > end - pos - 4)
            break;
        if (!parse_entry(h + 4, h + 4 + length, &e))
            break;
        PyObject *t = entry_tuple(&e);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(t);
        if (offsets != NULL) {
            PyObject *at = PyLong_FromSsize_t(pos);
            if (at == NULL || PyList_Append(offsets, at) < 0) {
                Py_XDECREF(at);
                Py_DECREF(out);
                PyBuffer_Release(&view);
                return NULL;
            }
            Py_DECREF(at);
        }
        if (e.source == SOURCE_STDERR) {
            err_lines++;
            err_bytes += e.line_len;
        } else {
            out_lines++;
            out_bytes += e.line_len;
        }
        pos += 4 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn(LLLL))", out, pos, out_lines, out_bytes, err_lines, err_bytes);
}

/* ------------------------------------------------------------------------------------------------------- */
/* json-file lines */


static inline char *
put2(char *o, int v)
{
    o[0] = (char)('0' + v / 10);
    o[1] = (char)('0' + v % 10);
    return o + 2;
}

/* `YYYY-MM-DDTHH:MM:SS` (19 bytes) for seconds since the epoch, proleptic Gregorian UTC (H. Hinnant's
 * civil_from_days). Returns 0 for a year outside 1..9999. */
static int
second_prefix(int64_t sec, char *o)
{
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    if (m <= 2)
        y += 1;
    if (y < 1 || y > 9999)
        return 0;
    int yy = (int)y;
    o[0] = (char)('0' + yy / 1000);
    o[1] = (char)('0' + yy / 100 % 10);
    o[2] = (char)('0' + yy / 10 % 10);
    o[3] = (char)('0' + yy % 10);
    o[4] = '-';
    put2(o + 5, m);
    o[7] = '-';
    put2(o + 8, d);
    o[10] = 'T';
    put2(o + 11, (int)(rem / 3600));
    o[13] = ':';
    put2(o + 14, (int)(rem / 60 % 60));
    o[16] = ':';
    put2(o + 17, (int)(rem % 60));
    return 1;
}

/* `.fffffffff` with trailing zeros trimmed, nothing for a whole second. Returns the bytes written (<= 10). */
static int
fraction(int64_t ns, char *o)
{
    if (ns == 0)
        return 0;
    char digits[9];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + ns % 10);
        ns /= 10;
    }
    int n = 9;
    while (digits[n - 1] == '0')
        n--;
    o[0] = '.';
    memcpy(o + 1, digits, n);
    return n + 1;
}

#define HEAD "{\"log\":\""
#define HEAD_LEN 8

static PyObject *
encode_lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *entries, *attrs_obj;
    if (!PyArg_ParseTuple(args, "OO:encode_lines", &entries, &attrs_obj))
        return NULL;
    if (!PyList_Check(entries))
        Py_RETURN_NONE;
    const char *attrs = NULL;
    Py_ssize_t attrs_len = 0;
    if (attrs_obj != Py_None) {
        if (!PyBytes_Check(attrs_obj))
            Py_RETURN_NONE;
        attrs = PyBytes_AsString(attrs_obj);
        attrs_len = PyBytes_Size(attrs_obj);
        if (attrs == NULL)
            return NULL;
    }
    /* What follows the escaped line up to the time: [stdout/stderr][partial/complete]. */
    char tails[2][2][64 + 1];
    Py_ssize_t tail_len[2][2];
    for (int s = 0; s < 2; s++) {
        for (int c = 0; c < 2; c++) {
            int n = snprintf(tails[s][c], sizeof(tails[s][c]), "%s\",\"stream\":\"%s\"%s", c ? "\\n" : "",
                             s ? "stderr" : "stdout", attrs_len ? ",\"attrs\":" : ",\"time\":\"");
            tail_len[s][c] = n;
        }
    }
    static const char after_attrs[] = ",\"time\":\"";
    const Py_ssize_t after_attrs_len = sizeof(after_attrs) - 1;

    Py_ssize_t n_entries = PyList_Size(entries);
    PyObject *out = PyList_New(n_entries);
    if (out == NULL)
        return NULL;
    uint8_t *scratch = NULL;
    Py_ssize_t cap = 0;
    int64_t prev_sec = 0;
    int have_prefix = 0;
    char prefix[19];

    for (Py_ssize_t i = 0; i < n_entries; i++) {
        PyObject *entry = PyList_GetItem(entries, i); /* borrowed */
        if (entry == NULL)
            goto error;
        if (!PyTuple_Check(entry) || PyTuple_Size(entry) != 7)
            goto fallback;
        PyObject *source = PyTuple_GetItem(entry, 0);
        PyObject *time_obj = PyTuple_GetItem(entry, 1);
        PyObject *line = PyTuple_GetItem(entry, 2);
        PyObject *partial = PyTuple_GetItem(entry, 3);
        PyObject *last = PyTuple_GetItem(entry, 4);
        int s = source_index(source);
        if (s < 0)
            goto fallback;
        if (!PyLong_Check(time_obj) || !PyBytes_Check(line))
            goto fallback;
        int overflow = 0;
        long long t = PyLong_AsLongLongAndOverflow(time_obj, &overflow);
        if (overflow)
            goto fallback;
        if (t == -1 && PyErr_Occurred())
            goto error;
        /* Flags other than True/False go the Python way: their truth test could run arbitrary code. */
        if (!PyBool_Check(partial) || !PyBool_Check(last))
            goto fallback;
        int complete = partial == Py_False || last == Py_True;
        Py_ssize_t line_len = PyBytes_Size(line);
        const uint8_t *line_buf = (const uint8_t *)PyBytes_AsString(line);
        if (line_buf == NULL)
            goto error;
        if (line_len == 0 && !complete)
            goto fallback;
        int64_t sec = t / NS, ns = t % NS;
        if (ns < 0) {
            ns += NS;
            sec -= 1;
        }
        if (!have_prefix || sec != prev_sec) {
            if (!second_prefix(sec, prefix))
                goto fallback;
            have_prefix = 1;
            prev_sec = sec;
        }
        Py_ssize_t need = HEAD_LEN + 6 * line_len + 64 + attrs_len + after_attrs_len + 19 + 10 + 4;
        if (need > cap) {
            Py_ssize_t ncap = need > 2 * cap ? need : 2 * cap;
            uint8_t *nb = (uint8_t *)realloc(scratch, ncap);
            if (nb == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            scratch = nb;
            cap = ncap;
        }
        uint8_t *o = scratch;
        memcpy(o, HEAD, HEAD_LEN);
        o = escape_into(o + HEAD_LEN, line_buf, line_len);
        memcpy(o, tails[s][complete], tail_len[s][complete]);
        o += tail_len[s][complete];
        if (attrs_len) {
            memcpy(o, attrs, attrs_len);
            o += attrs_len;
            memcpy(o, after_attrs, after_attrs_len);
            o += after_attrs_len;
        }
        memcpy(o, prefix, 19);
        o += 19;
        o += fraction(ns, (char *)o);
        memcpy(o, "Z\"}\n", 4);
        o += 4;
        PyObject *b = PyBytes_FromStringAndSize((const char *)scratch, o - scratch);
        if (b == NULL)
            goto error;
        PyList_SetItem(out, i, b);
    }
    free(scratch);
    return out;

fallback:
    free(scratch);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    free(scratch);
    Py_DECREF(out);
    return NULL;
}

/* The bytes a json-file line of an entry with line_len bytes takes at most (escape_into writes <= 6 per byte). */
#define LINE_BOUND(line_len, attrs_len) (HEAD_LEN + 6 * (line_len) + 64 + (attrs_len) + 9 + 19 + 10 + 4)

static PyObject *
encode_frame_lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data, attrs_view = {0};
    PyObject *attrs_obj;
    if (!PyArg_ParseTuple(args, "y*O:encode_frame_lines", &data, &attrs_obj))
        return NULL;
    const uint8_t *attrs = NULL;
    Py_ssize_t attrs_len = 0;
    if (attrs_obj != Py_None) {
        if (!PyBytes_Check(attrs_obj)) {
            PyBuffer_Release(&data);
            PyErr_SetString(PyExc_TypeError, "attrs_json must be bytes or None");
            return NULL;
        }
        if (PyObject_GetBuffer(attrs_obj, &attrs_view, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&data);
            return NULL;
        }
        attrs = (const uint8_t *)attrs_view.buf;
        attrs_len = attrs_view.len;
    }
    char tails[2][2][64];
    Py_ssize_t tail_len[2][2];
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 2; c++)
            tail_len[s][c] = snprintf(tails[s][c], sizeof(tails[s][c]), "%s\",\"stream\":\"%s\"%s", c ? "\\n" : "",
                                      s ? "stderr" : "stdout", attrs_len ? ",\"attrs\":" : ",\"time\":\"");
    static const char after_attrs[] = ",\"time\":\"";
    const Py_ssize_t after_attrs_len = sizeof(after_attrs) - 1;

    const uint8_t *b = (const uint8_t *)data.buf;
    Py_ssize_t end = data.len, pos = 0, count = 0, size = 0, cap = 0;
    long long counts[4] = {0, 0, 0, 0}; /* stdout lines, stdout bytes, stderr lines, stderr bytes */
    uint8_t *out = NULL;
    int declined = 0, nomem = 0;
    PyObject *result = NULL;
    entry_t e;
    /* No Python object is touched in the loop (both buffers are held), so the event loop runs on meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    int64_t prev_sec = 0;
    int have_prefix = 0;
    char prefix[19];
    for (;;) {
        uint32_t length;
        int got = next_frame(b, pos, end, &e, &length);
        if (got == 0)
            break; /* the rest of this frame is not in the journal yet */
        int complete = !e.partial || e.last;
        if (got < 0 || (e.line_len == 0 && !complete)) {
            declined = 1; /* garbage, an empty or unusual frame, an empty chunk: FrameDecoder and encode_entries */
            break;
        }
        int64_t sec = e.time_nano / NS, ns = e.time_nano % NS;
        if (ns < 0) {
            ns += NS;
            sec -= 1;
        }
        if (!have_prefix || sec != prev_sec) {
            if (!second_prefix(sec, prefix)) {
                declined = 1; /* outside years 1..9999: cannot happen for an int64 time, kept as a guard */
                break;
            }
            have_prefix = 1;
            prev_sec = sec;
        }
        Py_ssize_t need = size + LINE_BOUND(e.line_len, attrs_len);
        if (need > cap) {
            Py_ssize_t ncap = need > 2 * cap ? need + 65536 : 2 * cap;
            uint8_t *grown = (uint8_t *)realloc(out, (size_t)ncap);
            if (grown == NULL) {
                nomem = 1;
                break;
            }
            out = grown;
            cap = ncap;
        }
        int s = e.source;
        uint8_t *o = out + size;
        memcpy(o, HEAD, HEAD_LEN);
        o = escape_into(o + HEAD_LEN, e.line, e.line_len);
        memcpy(o, tails[s][complete], tail_len[s][complete]);
        o += tail_len[s][complete];
        if (attrs_len) {
            memcpy(o, attrs, attrs_len);
            o += attrs_len;
            memcpy(o, after_attrs, after_attrs_len);
            o += after_attrs_len;
        }
        memcpy(o, prefix, 19);
        o += 19;
        o += fraction(ns, (char *)o);
        memcpy(o, "Z\"}\n", 4);
        o += 4;
        size = o - out;
        counts[2 * s] += 1;
        counts[2 * s + 1] += e.line_len;
        count++;
        pos += 4 + (Py_ssize_t)length;
    }
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
    } else {
        PyObject *joined = PyBytes_FromStringAndSize(out ? (const char *)out : "", size);
        if (joined != NULL)
            result = Py_BuildValue("(nnON(LLLL))", pos, count, declined ? Py_True : Py_False, joined, counts[0],
                                   counts[1], counts[2], counts[3]);
    }
    free(out); /* malloc, not PyMem: allocated without the GIL */
    PyBuffer_Release(&data);
    if (attrs != NULL)
        PyBuffer_Release(&attrs_view);
    return result;
}

/* ------------------------------------------------------------------------------------------------------- */
/* forward records */

#define MAX_SECONDS 0xFFFFFFFDLL /* 0xFFFFFFFE/0xFFFFFFFF (with 0 ns) are Fluent Bit's group markers */

/* The fixed parts of the partial_* fields, packed as codec._partial_tail packs them (record_for's order). */
static const char partial_head[] = "\xaf" "partial_message" "\xa4" "true" "\xaa" "partial_id";
static const char partial_ordinal[] = "\xaf" "partial_ordinal";
static const char partial_last_true[] = "\xac" "partial_last" "\xa4" "true";
static const char partial_last_false[] = "\xac" "partial_last" "\xa5" "false";
#define CLEN(s) ((Py_ssize_t)sizeof(s) - 1)

static inline uint8_t *
put_be32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
    return o + 4;
}

/* An Entry's head: the [time, record] array and the time, as an EventTime or as integer seconds. */
static inline uint8_t *
put_entry_head(uint8_t *o, int event_time, uint32_t sec, uint32_t nsec)
{
    *o++ = 0x92; /* [time, record] */
    if (event_time) {
        *o++ = 0xD7; /* fixext 8, type 0: EventTime */
        *o++ = 0x00;
        o = put_be32(o, sec);
        return put_be32(o, nsec);
    }
    *o++ = 0xCE; /* uint32 */
    return put_be32(o, sec);
}

/* The size of codec._str_header(n); n < 2**32. */
static inline Py_ssize_t
str_header_len(Py_ssize_t n)
{
    return n < 32 ? 1 : n < 256 ? 2 : n < 0x10000 ? 3 : 5;
}

/* codec._str_header(n): fixstr, str8, str16 or str32. */
static inline uint8_t *
put_str_header(uint8_t *o, Py_ssize_t n)
{
    if (n < 32) {
        *o++ = (uint8_t)(0xA0 | n);
    } else if (n < 256) {
        *o++ = 0xD9;
        *o++ = (uint8_t)n;
    } else if (n < 0x10000) {
        *o++ = 0xDA;
        *o++ = (uint8_t)(n >> 8);
        *o++ = (uint8_t)n;
    } else {
        *o++ = 0xDB;
        o = put_be32(o, (uint32_t)n);
    }
    return o;
}

static inline uint8_t *
put(uint8_t *o, const void *s, Py_ssize_t n)
{
    if (n > 0) /* an empty partial id has no bytes at all: memcpy from NULL is undefined even for 0 bytes */
        memcpy(o, s, n);
    return o + n;
}

static PyObject *
encode_records(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *entries;
    int event_time;
    const char *pfx[2][2], *extras;
    Py_ssize_t pfx_len[2][2], extras_len;
    if (!PyArg_ParseTuple(args, "Opy#y#y#y#y#:encode_records", &entries, &event_time, &pfx[0][0], &pfx_len[0][0],
                          &pfx[0][1], &pfx_len[0][1], &pfx[1][0], &pfx_len[1][0], &pfx[1][1], &pfx_len[1][1],
                          &extras, &extras_len))
        return NULL;
    /* Exact types: Python iterates, and a subclass may iterate over something else than its items. */
    int is_list = PyList_CheckExact(entries);
    if (!is_list && !PyTuple_CheckExact(entries))
        Py_RETURN_NONE;
    Py_ssize_t n_entries = is_list ? PyList_Size(entries) : PyTuple_Size(entries);
    PyObject *out = PyList_New(n_entries);
    if (out == NULL)
        return NULL;
    PyObject *entry = NULL;

    for (Py_ssize_t i = 0; i < n_entries; i++) {
        /* Held while in use: an allocation below may collect garbage, and a finalizer may change the list. */
        entry = is_list ? PyList_GetItem(entries, i) : PyTuple_GetItem(entries, i);
        if (entry == NULL) {
            PyErr_Clear();
            goto fallback;
        }
        Py_INCREF(entry);
        if (!PyTuple_Check(entry) || PyTuple_Size(entry) != 7)
            goto fallback;
        PyObject *source = PyTuple_GetItem(entry, 0);
        PyObject *time_obj = PyTuple_GetItem(entry, 1);
        PyObject *line = PyTuple_GetItem(entry, 2);
        PyObject *partial = PyTuple_GetItem(entry, 3);
        int s = source_index(source);
        if (s < 0)
            goto fallback; /* any other source needs a prefix of its own */
        /* Exact types: a subclass could format or test its truth its own way. bool is the exact type of a flag. */
        if (!PyLong_CheckExact(time_obj) || !PyBytes_CheckExact(line) || !PyBool_Check(partial))
            goto fallback;

        /* The time clamped as codec._split_ns does: <= 0 is 0.0, past the last second EventTime may carry is
         * that second with 0 ns. The integer format sends the same seconds. */
        int overflow = 0;
        long long t = PyLong_AsLongLongAndOverflow(time_obj, &overflow);
        if (t == -1 && PyErr_Occurred())
            goto error;
        uint32_t sec = 0, nsec = 0;
        if (overflow > 0 || (overflow == 0 && t / NS > MAX_SECONDS)) {
            sec = (uint32_t)MAX_SECONDS;
        } else if (overflow == 0 && t > 0) {
            sec = (uint32_t)(t / NS);
            nsec = (uint32_t)(t % NS);
        }

        Py_ssize_t line_len = PyBytes_Size(line);
        const char *line_buf = PyBytes_AsString(line);
        if (line_buf == NULL)
            goto error;
        if ((unsigned long long)line_len > 0xFFFFFFFFULL)
            goto fallback; /* beyond str32: Python raises */
        int p = partial == Py_True;
        Py_ssize_t size = (event_time ? 11 : 6) + pfx_len[p][s] + str_header_len(line_len) + line_len + extras_len;

        /* A partial chunk's own fields: the id as UTF-8, the ordinal in decimal (str(int)). */
        int last = 0;
        const char *id = NULL;
        Py_ssize_t id_len = 0;
        char ordinal[24];
        int ordinal_len = 0;
        if (p) {
            PyObject *last_obj = PyTuple_GetItem(entry, 4);
            PyObject *id_obj = PyTuple_GetItem(entry, 5);
            PyObject *ordinal_obj = PyTuple_GetItem(entry, 6);
            if (!PyBool_Check(last_obj) || !PyUnicode_CheckExact(id_obj) || !PyLong_CheckExact(ordinal_obj))
                goto fallback;
            last = last_obj == Py_True;
            id = PyUnicode_AsUTF8AndSize(id_obj, &id_len);
            if (id == NULL) { /* lone surrogates: Python's surrogateescape packs some of them as raw bytes */
                PyErr_Clear();
                goto fallback;
            }
            if ((unsigned long long)id_len > 0xFFFFFFFFULL)
                goto fallback;
            long long ord = PyLong_AsLongLongAndOverflow(ordinal_obj, &overflow);
            if (ord == -1 && PyErr_Occurred())
                goto error;
            if (overflow)
                goto fallback;
            ordinal_len = snprintf(ordinal, sizeof(ordinal), "%lld", ord);
            size += CLEN(partial_head) + str_header_len(id_len) + id_len + CLEN(partial_ordinal) + 1 + ordinal_len +
                    (last ? CLEN(partial_last_true) : CLEN(partial_last_false));
        }

        /* Written in place (exact size: the limited API cannot shrink a bytes object); no one else has it yet. */
        PyObject *b = PyBytes_FromStringAndSize(NULL, size);
        if (b == NULL)
            goto error;
        PyList_SetItem(out, i, b);
        uint8_t *o = (uint8_t *)PyBytes_AsString(b);
        if (o == NULL)
            goto error;
        o = put_entry_head(o, event_time, sec, nsec);
        o = put(o, pfx[p][s], pfx_len[p][s]);
        o = put_str_header(o, line_len);
        o = put(o, line_buf, line_len);
        o = put(o, extras, extras_len);
        if (p) {
            o = put(o, partial_head, CLEN(partial_head));
            o = put_str_header(o, id_len);
            o = put(o, id, id_len);
            o = put(o, partial_ordinal, CLEN(partial_ordinal));
            *o++ = (uint8_t)(0xA0 | ordinal_len);
            o = put(o, ordinal, ordinal_len);
            if (last)
                o = put(o, partial_last_true, CLEN(partial_last_true));
            else
                o = put(o, partial_last_false, CLEN(partial_last_false));
        }
        Py_CLEAR(entry);
    }
    return out;

fallback:
    Py_XDECREF(entry);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(entry);
    Py_DECREF(out);
    return NULL;
}

/* Lowercase hex without leading zeros ("0" for 0), as f"{v:x}"; o must hold 16 bytes. Returns the digits. */
static int
put_hex(char *o, uint64_t v)
{
    char digits[16];
    int n = 0;
    do {
        digits[n++] = hexdigits[v & 0xF];
        v >>= 4;
    } while (v);
    for (int i = 0; i < n; i++)
        o[i] = digits[n - 1 - i];
    return n;
}

static PyObject *
encode_record_frames(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    int event_time, partials;
    const char *pfx[2][2], *extras, *id_key, *id_prefix;
    Py_ssize_t pfx_len[2][2], extras_len, id_key_len, id_prefix_len, base, budget;
    if (!PyArg_ParseTuple(args, "y*py#y#y#y#y#y#y#nnp:encode_record_frames", &data, &event_time, &pfx[0][0],
                          &pfx_len[0][0], &pfx[0][1], &pfx_len[0][1], &pfx[1][0], &pfx_len[1][0], &pfx[1][1],
                          &pfx_len[1][1], &extras, &extras_len, &id_key, &id_key_len, &id_prefix, &id_prefix_len,
                          &base, &budget, &partials))
        return NULL;
    const uint8_t *b = (const uint8_t *)data.buf;
    Py_ssize_t end = data.len, pos = 0, count = 0, size = 0, cap = 0;
    uint8_t *out = NULL;
    int declined = 0;
    PyObject *result = NULL;
    entry_t e;
    for (;;) {
        uint32_t length;
        int got = next_frame(b, pos, end, &e, &length);
        if (got == 0)
            break; /* the rest of this frame is not in the journal yet */
        if (got < 0 || (e.partial && !partials)) {
            declined = 1; /* garbage, an empty frame, an entry upb must read, a chunk to join: FrameDecoder's way */
            break;
        }
        /* The time clamped as codec._split_ns does (see encode_records). */
        uint32_t sec = 0, nsec = 0;
        if (e.time_nano / NS > MAX_SECONDS) {
            sec = (uint32_t)MAX_SECONDS;
        } else if (e.time_nano > 0) {
            sec = (uint32_t)(e.time_nano / NS);
            nsec = (uint32_t)(e.time_nano % NS);
        }
        int s = e.source, p = e.partial;
        Py_ssize_t n = (event_time ? 11 : 6) + pfx_len[p][s] + str_header_len(e.line_len) + e.line_len + extras_len;
        char ordinal[16], hex[16];
        int ordinal_len = 0, hex_len = 0;
        if (p) {
            ordinal_len = snprintf(ordinal, sizeof(ordinal), "%d", (int)e.ordinal);
            n += CLEN(partial_head) + str_header_len(e.id_len) + e.id_len + CLEN(partial_ordinal) + 1 + ordinal_len +
                 (e.last ? CLEN(partial_last_true) : CLEN(partial_last_false));
        }
        if (id_key_len) { /* the record id: the id prefix and the frame's journal offset in hex */
            hex_len = put_hex(hex, (uint64_t)(base + pos));
            n += id_key_len + str_header_len(id_prefix_len + hex_len) + id_prefix_len + hex_len;
        }
        if (size + n > budget) {
            declined = 1; /* more than one forward frame: BatchBuilder.extend splits them */
            break;
        }
        if (size + n > cap) {
            Py_ssize_t ncap = size + n > 2 * cap ? size + n + 4096 : 2 * cap;
            uint8_t *grown = (uint8_t *)PyMem_Realloc(out, ncap);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            out = grown;
            cap = ncap;
        }
        uint8_t *o = out + size;
        o = put_entry_head(o, event_time, sec, nsec);
        o = put(o, pfx[p][s], pfx_len[p][s]);
        o = put_str_header(o, e.line_len);
        o = put(o, e.line, e.line_len);
        o = put(o, extras, extras_len);
        if (p) {
            o = put(o, partial_head, CLEN(partial_head));
            o = put_str_header(o, e.id_len);
            o = put(o, e.id, e.id_len);
            o = put(o, partial_ordinal, CLEN(partial_ordinal));
            *o++ = (uint8_t)(0xA0 | ordinal_len);
            o = put(o, ordinal, ordinal_len);
            if (e.last)
                o = put(o, partial_last_true, CLEN(partial_last_true));
            else
                o = put(o, partial_last_false, CLEN(partial_last_false));
        }
        if (id_key_len) {
            o = put(o, id_key, id_key_len);
            o = put_str_header(o, id_prefix_len + hex_len);
            o = put(o, id_prefix, id_prefix_len);
            o = put(o, hex, hex_len);
        }
        size += n;
        count++;
        pos += 4 + (Py_ssize_t)length;
    }
    PyObject *packed = PyBytes_FromStringAndSize(out ? (const char *)out : "", size);
    if (packed != NULL)
        result = Py_BuildValue("(nnON)", pos, count, declined ? Py_True : Py_False, packed);
done:
    PyMem_Free(out);
    PyBuffer_Release(&data);
    return result;
}

/* ------------------------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"decode_frames", decode_frames, METH_VARARGS,
     "decode_frames(buf, pos, offsets=None) -> (entries, new_pos, (out_lines, out_bytes, err_lines, err_bytes))\n\n"
     "Decodes the ordinary frames at buf[pos:], stopping at the first one left to the Python decoder; appends each"
     " entry's frame start to offsets when it is a list."},
    {"encode_lines", encode_lines, METH_VARARGS,
     "encode_lines(entries, attrs_json) -> list[bytes] | None\n\n"
     "jsonfile.encode_entries for a list of entries, or None when the batch needs the Python encoder."},
    {"encode_frame_lines", encode_frame_lines, METH_VARARGS,
     "encode_frame_lines(frames, attrs_json) -> (used, count, declined, joined, (out_lines, out_bytes, err_lines,"
     " err_bytes))\n\n"
     "encode_lines for the ordinary frames at the start of frames, joined, without a tuple per entry; declined: a"
     " frame that needs the decoded way."},
    {"encode_records", encode_records, METH_VARARGS,
     "encode_records(entries, event_time, prefix_out, prefix_err, partial_prefix_out, partial_prefix_err, extras)"
     " -> list[bytes] | None\n\n"
     "RecordEncoder.encode_batch's fast path for a list of entries, or None when the batch needs the Python loop."},
    {"encode_record_frames", encode_record_frames, METH_VARARGS,
     "encode_record_frames(frames, event_time, prefix_out, prefix_err, partial_prefix_out, partial_prefix_err, extras,"
     " id_key, id_prefix, base, budget, partials) -> (used, count, declined, packed)\n\n"
     "decode_frames then encode_records (and the record ids) for the ordinary frames at the start of frames, without"
     " a tuple per entry; declined: a frame or a size that needs the decoded way."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_speedups", "C versions of frames.FrameDecoder.decode, jsonfile.encode_entries (and encode_frames), RecordEncoder.encode_batch and encode_frames.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    jsonescape_init();
    if (str_stdout == NULL) {
        str_stdout = PyUnicode_InternFromString("stdout");
        str_stderr = PyUnicode_InternFromString("stderr");
        str_empty = PyUnicode_FromStringAndSize("", 0);
        if (str_stdout == NULL || str_stderr == NULL || str_empty == NULL)
            return NULL;
    }
    return PyModule_Create(&moduledef);
}
