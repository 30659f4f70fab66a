/* strbuf.c — bounded, allocation-free text building for reports, error messages
 * and the abort line. Owns no state; never calls printf or malloc (usable inside
 * malloc, in the reporting path and, for the integer helpers, in signal handlers).
 * Any thread; a strbuf itself belongs to one thread.
 */
#include "internal.h"

#include <string.h>

void strbuf_init(strbuf_t *sb, char *buf, size_t cap)
{
    sb->buf = buf;
    sb->cap = buf ? cap : 0;
    sb->len = 0;
    if (sb->cap)
        sb->buf[0] = '\0';
}

/* Append n bytes; len keeps counting past cap (snprintf contract), the text stays
 * NUL-terminated inside cap. */
void strbuf_putn(strbuf_t *sb, const char *s, size_t n)
{
    if (sb->cap && sb->len + 1 < sb->cap) {
        size_t room = sb->cap - 1 - sb->len;
        size_t k = n < room ? n : room;
        memcpy(sb->buf + sb->len, s, k);
        sb->buf[sb->len + k] = '\0';
    }
    sb->len += n;
}

void strbuf_putc(strbuf_t *sb, char c)
{
    strbuf_putn(sb, &c, 1);
}

void strbuf_puts(strbuf_t *sb, const char *s)
{
    strbuf_putn(sb, s ? s : "(null)", s ? strlen(s) : 6);
}

void strbuf_u64(strbuf_t *sb, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    strbuf_putn(sb, tmp + i, sizeof tmp - i);
}

void strbuf_i64(strbuf_t *sb, int64_t v)
{
    if (v < 0) {
        strbuf_putc(sb, '-');
        strbuf_u64(sb, (uint64_t)0 - (uint64_t)v);
    } else {
        strbuf_u64(sb, (uint64_t)v);
    }
}

void strbuf_hex(strbuf_t *sb, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[18];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = digits[v & 15];
        v >>= 4;
    } while (v);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    strbuf_putn(sb, tmp + i, sizeof tmp - i);
}

/* num/den as a decimal with `decimals` digits (truncated); den 0 prints 0. */
void strbuf_ratio(strbuf_t *sb, uint64_t num, uint64_t den, int decimals)
{
    if (!den) {
        strbuf_putc(sb, '0');
        return;
    }
    strbuf_u64(sb, num / den);
    if (decimals <= 0)
        return;
    strbuf_putc(sb, '.');
    unsigned __int128 rem = num % den;
    for (int i = 0; i < decimals; i++) {
        rem *= 10;
        strbuf_putc(sb, (char)('0' + (int)(rem / den)));
        rem %= den;
    }
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0; /* also stops at the terminating NUL */
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, out of range or a surrogate */
    return n;
}

/* A JSON string literal, quoted. Valid UTF-8 passes through; control characters
 * are escaped and each invalid byte becomes U+FFFD, so the document always parses
 * whatever bytes a file name holds. */
void strbuf_json_str(strbuf_t *sb, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    strbuf_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            strbuf_putc(sb, '\\');
            strbuf_putc(sb, (char)c);
        } else if (c == '\n') {
            strbuf_puts(sb, "\\n");
        } else if (c == '\t') {
            strbuf_puts(sb, "\\t");
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            strbuf_putn(sb, esc, 6);
        } else if (c >= 0x80) {
            size_t n = utf8_len(p);
            if (n) {
                strbuf_putn(sb, (const char *)p, n);
                p += n;
                continue;
            }
            strbuf_puts(sb, "\\ufffd");
        } else {
            strbuf_putc(sb, (char)c);
        }
        p++;
    }
    strbuf_putc(sb, '"');
}

