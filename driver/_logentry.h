/* The FIFO frame's protobuf LogEntry, parsed conservatively: shared by the C modules that read journal frames
 * (driver/_speedups.c's decode_frames, driver/outputs/loki/_encode.c's encode_frames), so both take exactly the
 * same frames and leave the same ones to upb (driver/frames.py).
 *
 * parse_entry(p, end, &e) -> 1 when [p, end) is a LogEntry this parser is certain upb reads the same way: only
 * fields 1-5 with their wire types, canonical varints, valid UTF-8 ids, source "stdout" or "stderr". The line and
 * partial id point into the frame.
 * Include after Python.h (Py_ssize_t); every function is static.
 */
#ifndef LOGBRIDGE_LOGENTRY_H
#define LOGBRIDGE_LOGENTRY_H

#include <stdint.h>
#include <string.h>

#define MAX_FRAME 1000000 /* frames.MAX_FRAME */
#define SOURCE_NONE (-1)
#define SOURCE_STDOUT 0
#define SOURCE_STDERR 1

/* A frame's big-endian u32 payload length. */
static inline uint32_t
frame_length(const uint8_t *h)
{
    return ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
}

/* ------------------------------------------------------------------------------------------------------- */
/* UTF-8 as Go's utf8.DecodeRune and Python's strict decoder see it: the length of the valid sequence at s,
 * 0 when the byte at s does not start one (overlong, surrogate, > U+10FFFF, truncated, stray continuation). */

static inline Py_ssize_t
utf8_seq(const uint8_t *s, Py_ssize_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3)
            return 0;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        return (s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80) ? 3 : 0;
    }
    if (c < 0xF5) {
        if (n < 4)
            return 0;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        return (s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) ? 4 : 0;
    }
    return 0;
}

static int
utf8_valid(const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t k = s[i] < 0x80 ? 1 : utf8_seq(s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------------------- */
/* protobuf LogEntry */

/* A canonical varint of at most 10 bytes (a 10th byte may only carry bit 63). Non-canonical encodings are
 * legal protobuf, but dockerd never writes them: they go to upb rather than risk a differing reading. */
static inline int
read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end)
            return 0;
        uint8_t c = *p++;
        if (i == 9 && c != 1)
            return 0;
        v |= (uint64_t)(c & 0x7F) << (7 * i);
        if (!(c & 0x80)) {
            if (c == 0 && i > 0)
                return 0;
            *out = v;
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* The bytes of a length-delimited field, which must lie inside [p, end). */
static inline int
read_len(const uint8_t **pp, const uint8_t *end, const uint8_t **data, Py_ssize_t *len)
{
    uint64_t n;
    if (!read_varint(pp, end, &n) || n > (uint64_t)(end - *pp))
        return 0;
    *data = *pp;
    *len = (Py_ssize_t)n;
    *pp += n;
    return 1;
}

typedef struct {
    int source; /* SOURCE_STDOUT, SOURCE_STDERR, or SOURCE_NONE when absent */
    int64_t time_nano;
    const uint8_t *line;
    Py_ssize_t line_len;
    int partial;
    int last;
    const uint8_t *id;
    Py_ssize_t id_len;
    int32_t ordinal;
} entry_t;

/* PartialLogEntryMetadata into e. Called once per occurrence of field 5: a repeated sub-message merges into
 * the earlier one, and for scalar fields that is "the later occurrence of each field wins", as here. */
static int
parse_meta(const uint8_t *p, const uint8_t *end, entry_t *e)
{
    uint64_t v;
    while (p < end) {
        uint8_t tag = *p++;
        switch (tag) {
        case 0x08: /* 1 last, varint */
            if (!read_varint(&p, end, &v))
                return 0;
            e->last = v != 0;
            break;
        case 0x12: /* 2 id, string */
            if (!read_len(&p, end, &e->id, &e->id_len) || !utf8_valid(e->id, e->id_len))
                return 0;
            break;
        case 0x18: /* 3 ordinal, int32 */
            if (!read_varint(&p, end, &v))
                return 0;
            e->ordinal = (int32_t)(uint32_t)v;
            break;
        default:
            return 0;
        }
    }
    return 1;
}

static int
parse_entry(const uint8_t *p, const uint8_t *end, entry_t *e)
{
    const uint8_t *data;
    Py_ssize_t len;
    uint64_t v;
    memset(e, 0, sizeof(*e));
    e->source = SOURCE_NONE;
    e->line = p; /* any valid pointer for an empty line */
    while (p < end) {
        uint8_t tag = *p++;
        switch (tag) {
        case 0x0A: /* 1 source, string */
            if (!read_len(&p, end, &data, &len) || len != 6)
                return 0;
            if (memcmp(data, "stdout", 6) == 0)
                e->source = SOURCE_STDOUT;
            else if (memcmp(data, "stderr", 6) == 0)
                e->source = SOURCE_STDERR;
            else
                return 0;
            break;
        case 0x10: /* 2 time_nano, int64 */
            if (!read_varint(&p, end, &v))
                return 0;
            e->time_nano = (int64_t)v;
            break;
        case 0x1A: /* 3 line, bytes */
            if (!read_len(&p, end, &e->line, &e->line_len))
                return 0;
            break;
        case 0x20: /* 4 partial, bool */
            if (!read_varint(&p, end, &v))
                return 0;
            e->partial = v != 0;
            break;
        case 0x2A: /* 5 partial_log_metadata */
            if (!read_len(&p, end, &data, &len) || !parse_meta(data, data + len, e))
                return 0;
            break;
        default:
            return 0;
        }
    }
    return e->source != SOURCE_NONE;
}

/* The frame at b[pos, end) as the direct encoders walk a journal: 1 with its entry in *e and its payload length in
 * *length; 0 when the rest of it is not in the journal yet (the walk stops there, nothing declined); -1 when it is
 * FrameDecoder's to read (garbage, an empty frame, an entry this parser is not certain upb reads the same way).
 * Each encoder's own rules (chunks to join, times) come after. */
static inline int
next_frame(const uint8_t *b, Py_ssize_t pos, Py_ssize_t end, entry_t *e, uint32_t *length)
{
    if (end - pos < 4)
        return 0;
    uint32_t n = frame_length(b + pos);
    if ((Py_ssize_t)n > end - pos - 4 && n <= MAX_FRAME)
        return 0;
    if (n == 0 || n > MAX_FRAME || !parse_entry(b + pos + 4, b + pos + 4 + n, e))
        return -1;
    *length = n;
    return 1;
}

#endif
