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
 * Limited API (abi3), like driver/_speedups.c.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* driver/jsonfile.py _COPY_AS_IS: 0x20-0x7f except " & < > \ */
static unsigned char safe[256];

static void
init_safe(void)
{
    for (int c = 0x20; c <= 0x7f; c++)
        safe[c] = 1;
    safe['"'] = safe['&'] = safe['<'] = safe['>'] = safe['\\'] = 0;
}

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
        while (k < len && safe[(unsigned char)text[k]])
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
        p = put_uint(p, (uint64_t)at);
        memcpy(p, MSG, sizeof(MSG) - 1);
        p += sizeof(MSG) - 1;
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

static PyMethodDef methods[] = {
    {"encode_documents", encode_documents, METH_VARARGS,
     "Elasticsearch documents for a run of entries of one source and hour (see the module comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_encode", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__encode(void)
{
    init_safe();
    return PyModule_Create(&module);
}
