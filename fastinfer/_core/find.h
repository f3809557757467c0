/* fi_find: the first occurrence of a short needle in a buffer, 16 bytes a step.
 *
 * glibc's memmem reads an SSE relay's whole read once per marker at about two instructions a byte
 * (its two-way scan); a 64-event stream's read is ~11 KB and the relay looks for four or five markers: ~80k
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
 * One pass instead of one a needle: at each step of positions (16 with SSE2, 32 with AVX2 where
 * the CPU has it, asked once) every needle's first byte and one more are compared and the masks
 * ORed, so a relay's five markers cost one load of the read, not five scans of it. The rest of a
 * needle is compared, inline, only where its pair matched. */
static inline int fi_same_rest(const char *at, const char *needle, size_t m)
{
    size_t j;
    for (j = 1; j < m; j++)
        if (at[j] != needle[j])
            return 0;
    return 1;
}

/* what a screen compares of each needle: its first byte, and the one at[j] from it (the last,
 * unless it is the first again: a quoted key's quote pairs that far apart are in every event;
 * then the one before it); fewer than five needles are padded with the first, so the screen's
 * test of a step is one shape, unrolled, with the bytes in registers (five: the OpenAI relay's
 * markers; more go round a loop) */
typedef struct {
    const char *const *needles;
    const size_t *lengths;
    int k;
    size_t longest;
    char first[FI_MAX_NEEDLES], second[FI_MAX_NEEDLES];
    size_t at[FI_MAX_NEEDLES];
} fi_screen;

/* the screen's loop over steps of WIDTH positions: the offset of the first whole needle, or
 * (size_t)-1 with *stopped where the steps ended (the tail is the caller's) */
#define FI_SCREEN(NAME, TARGET, VEC, WIDTH, LOADU, SET1, CMPEQ, AND, OR, MOVEMASK)                      \
TARGET static size_t NAME(const char *s, size_t n, const fi_screen *sc, size_t *stopped)                 \
{                                                                                                        \
    VEC first[FI_MAX_NEEDLES], second[FI_MAX_NEEDLES];                                                   \
    size_t i = 0;                                                                                        \
    int j;                                                                                               \
    for (j = 0; j < FI_MAX_NEEDLES; j++) {                                                               \
        first[j] = SET1(sc->first[j]);                                                                   \
        second[j] = SET1(sc->second[j]);                                                                 \
    }                                                                                                    \
    {                                                                                                    \
        const VEC f0 = first[0], f1 = first[1], f2 = first[2], f3 = first[3], f4 = first[4];             \
        const VEC l0 = second[0], l1 = second[1], l2 = second[2], l3 = second[3], l4 = second[4];        \
        const size_t at0 = sc->at[0], at1 = sc->at[1], at2 = sc->at[2], at3 = sc->at[3];                 \
        const size_t at4 = sc->at[4];                                                                    \
        for (; i + sc->longest - 1 + WIDTH <= n; i += WIDTH) {                                           \
            VEC a = LOADU((const VEC *)(s + i));                                                         \
            VEC hits = OR(OR(AND(CMPEQ(a, f0), CMPEQ(LOADU((const VEC *)(s + i + at0)), l0)),            \
                             AND(CMPEQ(a, f1), CMPEQ(LOADU((const VEC *)(s + i + at1)), l1))),           \
                          OR(AND(CMPEQ(a, f2), CMPEQ(LOADU((const VEC *)(s + i + at2)), l2)),            \
                             AND(CMPEQ(a, f3), CMPEQ(LOADU((const VEC *)(s + i + at3)), l3))));          \
            hits = OR(hits, AND(CMPEQ(a, f4), CMPEQ(LOADU((const VEC *)(s + i + at4)), l4)));            \
            unsigned earliest = WIDTH;                                                                   \
            for (j = 5; j < sc->k; j++)                                                                  \
                hits = OR(hits, AND(CMPEQ(a, first[j]),                                                  \
                                    CMPEQ(LOADU((const VEC *)(s + i + sc->at[j])), second[j])));         \
            if (!MOVEMASK(hits))                                                                         \
                continue;                                                                                \
            for (j = 0; j < sc->k; j++) {       /* a pair matched: which needle, and is it whole */      \
                unsigned mask = (unsigned)MOVEMASK(AND(CMPEQ(a, first[j]),                               \
                                                       CMPEQ(LOADU((const VEC *)(s + i + sc->at[j])),    \
                                                             second[j])));                               \
                while (mask) {                                                                           \
                    unsigned bit = (unsigned)__builtin_ctz(mask);                                        \
                    if (bit >= earliest)                                                                 \
                        break;                                                                           \
                    if (fi_same_rest(s + i + bit, sc->needles[j], sc->lengths[j])) {                     \
                        earliest = bit;                                                                  \
                        break;                                                                           \
                    }                                                                                    \
                    mask &= mask - 1;                                                                    \
                }                                                                                        \
            }                                                                                            \
            if (earliest < WIDTH)                                                                        \
                return i + earliest;                                                                     \
        }                                                                                                \
    }                                                                                                    \
    *stopped = i;                                                                                        \
    return (size_t)-1;                                                                                   \
}

FI_SCREEN(fi_screen_sse2, , __m128i, 16, _mm_loadu_si128, _mm_set1_epi8, _mm_cmpeq_epi8, _mm_and_si128,
          _mm_or_si128, _mm_movemask_epi8)

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FI_HAS_AVX2 1
FI_SCREEN(fi_screen_avx2, __attribute__((target("avx2"))), __m256i, 32, _mm256_loadu_si256, _mm256_set1_epi8,
          _mm256_cmpeq_epi8, _mm256_and_si256, _mm256_or_si256, _mm256_movemask_epi8)
#else
#define FI_HAS_AVX2 0
#endif
#undef FI_SCREEN

/* 1 when the CPU has AVX2 (asked once) */
static inline int fi_has_avx2(void)
{
#if FI_HAS_AVX2
    static int avx2 = -1;
    if (avx2 < 0)
        avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    return avx2;
#else
    return 0;
#endif
}

static inline size_t fi_screen_with(const char *s, size_t n, const fi_screen *sc, size_t *stopped, int wide)
{
#if FI_HAS_AVX2
    return wide && fi_has_avx2() ? fi_screen_avx2(s, n, sc, stopped) : fi_screen_sse2(s, n, sc, stopped);
#else
    (void)wide;
    return fi_screen_sse2(s, n, sc, stopped);
#endif
}

static inline int fi_any_holds_zero(const char *const *needles, const size_t *lengths, int k)
{
    int j;
    for (j = 0; j < k; j++)
        if (memchr(needles[j], 0, lengths[j]) != NULL)
            return 1;
    return 0;
}

/* the padded tail's room: what a screen step leaves (fewer than the longest needle and 32 positions),
 * then as many zero bytes; needles longer than FI_TAIL_NEEDLE end their search one by one */
#define FI_TAIL_NEEDLE 64
#define FI_TAIL_ROOM (2 * (FI_TAIL_NEEDLE + 32))

/* wide: the AVX2 screen (when the CPU has it: fi_has_avx2), else SSE2's; the tests ask for each */
static inline const char *fi_find_any_using(const char *s, size_t n, const char *const *needles,
                                            const size_t *lengths, int k, int wide)
{
    fi_screen sc;
    size_t i = 0, found_at;
    const char *best = NULL, *found;
    int j;
    if (k <= 0 || k > FI_MAX_NEEDLES)
        return NULL;
    sc.needles = needles;
    sc.lengths = lengths;
    sc.k = k;
    sc.longest = 0;
    for (j = 0; j < FI_MAX_NEEDLES; j++) {
        int from = j < k ? j : 0;
        size_t m = lengths[from];
        if (m > sc.longest)
            sc.longest = m;
        sc.at[j] = m >= 3 && needles[from][m - 1] == needles[from][0] ? m - 2 : m - 1;
        sc.first[j] = needles[from][0];
        sc.second[j] = needles[from][sc.at[j]];
    }
    found_at = fi_screen_with(s, n, &sc, &i, wide);
    if (found_at != (size_t)-1)
        return s + found_at;
    /* the last positions, fewer than a step before the longest needle's end (a short read's all): one
     * more step of the screen over a copy of them padded with zero bytes, which a needle without one
     * cannot match, not even in part (by each needle alone, they cost a relayed event ~500
     * instructions). What it finds where a needle could reach into the padding is taken when no
     * needle holds a zero byte (asked then: a [DONE] at a stream's end), else looked for again below. */
    if (sc.longest <= FI_TAIL_NEEDLE) {
        char tail[FI_TAIL_ROOM];
        size_t rest = n - i, padded = rest + sc.longest - 1 + 32, unused;
        memcpy(tail, s + i, rest);
        memset(tail + rest, 0, padded - rest);
        found_at = fi_screen_with(tail, padded, &sc, &unused, wide);
        if (found_at == (size_t)-1)
            return NULL;
        if (found_at + sc.longest <= rest || !fi_any_holds_zero(needles, lengths, k))
            return s + i + found_at;
    }
    /* each needle alone */
    for (j = 0; j < k; j++) {
        found = fi_find(s + i, n - i, needles[j], lengths[j]);
        if (found != NULL && (best == NULL || found < best))
            best = found;
    }
    return best;
}

static inline const char *fi_find_any(const char *s, size_t n, const char *const *needles, const size_t *lengths,
                                      int k)
{
    return fi_find_any_using(s, n, needles, lengths, k, 1);
}

#else

static inline const char *fi_find(const char *s, size_t n, const char *needle, size_t m)
{
    return (const char *)memmem(s, n, needle, m);
}

static inline int fi_has_avx2(void) { return 0; }

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

static inline const char *fi_find_any_using(const char *s, size_t n, const char *const *needles,
                                            const size_t *lengths, int k, int wide)
{
    (void)wide;
    return fi_find_any(s, n, needles, lengths, k);
}

#endif
#endif
