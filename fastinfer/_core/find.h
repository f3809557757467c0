/* fi_find: the first occurrence of a short needle in a buffer, 16 bytes a step.
 *
 * glibc's memmem reads an SSE relay's whole read once per marker at about two instructions a byte
 * (its two-way scan); a 64-event stream's read is ~11 KB and the relay looks for four markers: ~80k
 * instructions a stream, a sixth of all it costs. This is the "generic SIMD" substring search
 * (Wojciech Mula): compare 16 positions at once with the needle's first byte and, m - 1 bytes
 * on, its last; only where both match are the bytes between compared. In JSON the pair of a
 * marker's ends is rare, so nearly every step is three loads, two compares and a branch.
 * fi_find_any looks for several needles in the same pass. Without SSE2 (not x86) it is memmem. */
#ifndef FASTINFER_FIND_H
#define FASTINFER_FIND_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* memmem, where there is no SSE2 */
#endif
#include <stddef.h>
#include <string.h>

#define FI_MAX_NEEDLES 8

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

/* fi_find_any: the first position where any of k (at most FI_MAX_NEEDLES) non-empty needles starts, or NULL.
 * One pass instead of one a needle: at each 16 positions every needle's first and last bytes are
 * compared and the masks ORed, so a relay's four markers cost one load of the read, not four
 * scans of it. The rest of a needle is compared, inline, only where its pair matched. */
static inline int fi_same_rest(const char *at, const char *needle, size_t m)
{
    size_t j;
    for (j = 1; j < m; j++)
        if (at[j] != needle[j])
            return 0;
    return 1;
}

static inline const char *fi_find_any(const char *s, size_t n, const char *const *needles, const size_t *lengths,
                                      int k)
{
    /* a needle's first byte, and the byte at[j] from it, at each of 16 positions */
    __m128i first[FI_MAX_NEEDLES], last[FI_MAX_NEEDLES];
    size_t at[FI_MAX_NEEDLES];
    size_t longest = 0, i = 0;
    const char *best = NULL, *found;
    int j;
    if (k <= 0 || k > FI_MAX_NEEDLES)
        return NULL;
    for (j = 0; j < k; j++) {
        size_t m = lengths[j];
        if (m > longest)
            longest = m;
        /* the second byte compared: the last, unless it is the first again (a quoted key: quote
           pairs that far apart are in every event), then the one before it */
        at[j] = m >= 3 && needles[j][m - 1] == needles[j][0] ? m - 2 : m - 1;
        first[j] = _mm_set1_epi8(needles[j][0]);
        last[j] = _mm_set1_epi8(needles[j][at[j]]);
    }
    for (; j < 4; j++) {     /* fewer than four: the first again, so the screen below is one shape */
        at[j] = at[0];
        first[j] = first[0];
        last[j] = last[0];
    }
    {
        /* the first four needles' bytes in registers (a relay has four markers); any more looked
           at in a loop */
        const __m128i f0 = first[0], f1 = first[1], f2 = first[2], f3 = first[3];
        const __m128i l0 = last[0], l1 = last[1], l2 = last[2], l3 = last[3];
        const size_t at0 = at[0], at1 = at[1], at2 = at[2], at3 = at[3];
#define FI_PAIR(f, l, o) _mm_and_si128(_mm_cmpeq_epi8(a, f), \
                                       _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + i + (o))), l))
        for (; i + longest - 1 + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i hits = _mm_or_si128(_mm_or_si128(FI_PAIR(f0, l0, at0), FI_PAIR(f1, l1, at1)),
                                        _mm_or_si128(FI_PAIR(f2, l2, at2), FI_PAIR(f3, l3, at3)));
            unsigned earliest = 16;
            for (j = 4; j < k; j++)
                hits = _mm_or_si128(hits, FI_PAIR(first[j], last[j], at[j]));
            if (!_mm_movemask_epi8(hits))
                continue;
            for (j = 0; j < k; j++) {       /* a pair matched: which needle, and is it whole */
                unsigned mask = (unsigned)_mm_movemask_epi8(FI_PAIR(first[j], last[j], at[j]));
                while (mask) {
                    unsigned bit = (unsigned)__builtin_ctz(mask);
                    if (bit >= earliest)
                        break;
                    if (fi_same_rest(s + i + bit, needles[j], lengths[j])) {
                        earliest = bit;
                        break;
                    }
                    mask &= mask - 1;
                }
            }
            if (earliest < 16)
                return s + i + earliest;
        }
#undef FI_PAIR
    }
    /* the last positions, fewer than a step before the longest needle's end: each needle alone */
    for (j = 0; j < k; j++) {
        found = fi_find(s + i, n - i, needles[j], lengths[j]);
        if (found != NULL && (best == NULL || found < best))
            best = found;
    }
    return best;
}

#else

static inline const char *fi_find(const char *s, size_t n, const char *needle, size_t m)
{
    return (const char *)memmem(s, n, needle, m);
}

static inline const char *fi_find_any(const char *s, size_t n, const char *const *needles, const size_t *lengths,
                                      int k)
{
    const char *best = NULL, *found;
    int j;
    for (j = 0; j < k; j++) {
        size_t before = best == NULL ? n : (size_t)(best - s) + lengths[j] - 1;   /* only an earlier start matters */
        found = fi_find(s, before < n ? before : n, needles[j], lengths[j]);
        if (found != NULL && (best == NULL || found < best))
            best = found;
    }
    return best;
}

#endif
#endif
