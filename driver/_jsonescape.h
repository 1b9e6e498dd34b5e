/* The JSON string escaper dockerd's json-file lines use (ffjson), shared by driver/_speedups.c and
 * driver/outputs/elasticsearch/_encode.c so both write the same bytes. Include after _logentry.h (utf8_seq);
 * call jsonescape_init() once from the module's init. */
#ifndef LOGBRIDGE_JSONESCAPE_H
#define LOGBRIDGE_JSONESCAPE_H

#include <stdint.h>
#include <string.h>

/* Printable ASCII that ffjson copies as is: everything from 0x20 to 0x7f except " & < > \ */
static uint8_t copy_as_is[256];
static const char hexdigits[] = "0123456789abcdef";

/* The JSON string body dockerd writes for s[:n]; out must hold 6 * n bytes. */
static uint8_t *
escape_into(uint8_t *o, const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t run = i;
        while (run < n && copy_as_is[s[run]])
            run++;
        if (run > i) {
            memcpy(o, s + i, run - i);
            o += run - i;
            i = run;
            if (i >= n)
                break;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            default: /* other controls, < > & */
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hexdigits[c >> 4];
                *o++ = hexdigits[c & 0xF];
            }
            i++;
            continue;
        }
        Py_ssize_t k = utf8_seq(s + i, n - i);
        if (k == 0) {
            memcpy(o, "\\ufffd", 6);
            o += 6;
            i++;
        } else if (k == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
            memcpy(o, "\\u202", 5);
            o[5] = s[i + 2] == 0xA8 ? '8' : '9';
            o += 6;
            i += 3;
        } else {
            memcpy(o, s + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

/* The length escape_into writes for s[:n] (an exact-size buffer can be allocated before writing). */
static Py_ssize_t
escaped_len(const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, out = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (copy_as_is[c]) {
            out++;
            i++;
        } else if (c < 0x80) {
            out += (c == '"' || c == '\\' || c == '\n' || c == '\r') ? 2 : 6;
            i++;
        } else {
            Py_ssize_t k = utf8_seq(s + i, n - i);
            if (k == 0) {
                out += 6;
                i++;
            } else if (k == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                out += 6;
                i += 3;
            } else {
                out += k;
                i += k;
            }
        }
    }
    return out;
}

static void
jsonescape_init(void)
{
    for (int c = 0x20; c <= 0x7F; c++)
        copy_as_is[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&';
}

#endif
