/* Numbers as decimal text, for what the core writes on every request. fi_decimal: an integer (a
 * Content-Length, the x-ratelimit-* limits), a loop over the digits where snprintf's format parser
 * cost ~800 instructions a number (measured with cachegrind in situ); it writes at most 20 bytes
 * and no NUL, and returns how many it wrote. fi_two_digits, fi_year, fi_clock: the fields of a date
 * (the answer head's Date, heads.pyx; the access line's timestamp, lines.pyx), no NUL either.
 */
#ifndef FASTINFER_DECIMAL_H
#define FASTINFER_DECIMAL_H

static inline int fi_decimal(char *out, long long n)
{
    char reversed[20];
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    int digits = 0, written = 0;
    do {
        reversed[digits++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0)
        out[written++] = '-';
    while (digits)
        out[written++] = reversed[--digits];
    return written;
}

/* n (0-99) as two digits. */
static inline void fi_two_digits(char *out, int n)
{
    out[0] = (char)('0' + n / 10);
    out[1] = (char)('0' + n % 10);
}

/* year (0-9999) as four digits. */
static inline void fi_year(char *out, int year)
{
    fi_two_digits(out, year / 100);
    fi_two_digits(out + 2, year % 100);
}

/* "HH:MM:SS". */
static inline void fi_clock(char *out, int hour, int minute, int second)
{
    fi_two_digits(out, hour);
    out[2] = ':';
    fi_two_digits(out + 3, minute);
    out[5] = ':';
    fi_two_digits(out + 6, second);
}

#endif
