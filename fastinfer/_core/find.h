/* fi_find: the first occurrence of a short needle in a buffer, 16 bytes a step.
 *
 * glibc's memmem reads an SSE relay's whole read once per marker at about two instructions a byte
 * (its two-way scan); a 64-event stream's read is ~11 KB and the relay looks for four markers: ~80k
 * instructions a stream, a sixth of all it costs. This is the "generic SIMD" substring search
 * (Wojciech Mula): compare 16 positions at once with the needle's first byte and, m - 1 bytes
 * on, its last; only where both match are the bytes between compared. In JSON the pair of a
 * marker's ends is rare, so nearly every step is three loads, two compares and a branch.
 * Without SSE2 (not x86) it is memmem. */
#ifndef FASTINFER_FIND_H
#define FASTINFER_FIND_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* memmem, where there is no SSE2 */
#endif
#include <stddef.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>

static inline const char *fi_find(const char *s, size_t n, const char *needle, size_t m)
{
    size_t i = 0;
    if (m == 0)
        return s;
    if (n < m)
        return NULL;
    if (m == 1)
        return (const char *)memchr(s, (unsigned char)needle[0], n);
    const __m128i first = _mm_set1_epi8(needle[0]);
    const __m128i last = _mm_set1_epi8(needle[m - 1]);
    for (; i + m - 1 + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + m - 1));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, first),
                                                                  _mm_cmpeq_epi8(b, last)));
        while (mask) {
            unsigned bit = (unsigned)__builtin_ctz(mask);
            if (memcmp(s + i + bit + 1, needle + 1, m - 2) == 0)
                return s + i + bit;
            mask &= mask - 1;
        }
    }
    for (; i + m <= n; i++) {       /* the last positions, fewer than a step */
        if (s[i] == needle[0] && s[i + m - 1] == needle[m - 1] && memcmp(s + i + 1, needle + 1, m - 2) == 0)
            return s + i;
    }
    return NULL;
}

#else

static inline const char *fi_find(const char *s, size_t n, const char *needle, size_t m)
{
    return (const char *)memmem(s, n, needle, m);
}

#endif
#endif
