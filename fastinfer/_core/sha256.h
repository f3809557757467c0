/* fi_sha256: SHA-256 (FIPS 180-4) of a buffer, and fi_same: two buffers compared in constant time.
 *
 * A gateway key is looked up by its digest on every request. Python's hashlib goes through
 * OpenSSL's EVP layer, which on 3.11 fetches the digest's implementation on every call and
 * makes a hash object, an update and a digest: ~6.7k instructions and ~270 ns for a short key,
 * most of it around the hashing. A key is one or two 64-byte blocks: here a block is the
 * specification's rounds word for word, or, where the CPU has them, the SHA extensions'
 * (fi_sha256_block_ni). Checked against hashlib, both forms, over every length across the block
 * boundaries and random keys (tests/core/test_keys.py). */
#ifndef FASTINFER_SHA256_H
#define FASTINFER_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* the first 32 bits of the fractional parts of the cube roots of the first 64 primes */
static const uint32_t fi_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define FI_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t fi_load_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void fi_store_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* one 64-byte block into the state h */
static void fi_sha256_block(uint32_t h[8], const unsigned char *block)
{
    uint32_t w[64];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    int i;
    for (i = 0; i < 16; i++)
        w[i] = fi_load_be32(block + 4 * i);
    for (i = 16; i < 64; i++) {
        uint32_t s0 = FI_ROTR(w[i - 15], 7) ^ FI_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = FI_ROTR(w[i - 2], 17) ^ FI_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (i = 0; i < 64; i++) {
        uint32_t t1 = k + (FI_ROTR(e, 6) ^ FI_ROTR(e, 11) ^ FI_ROTR(e, 25)) + ((e & f) ^ (~e & g))
                      + fi_sha256_k[i] + w[i];
        uint32_t t2 = (FI_ROTR(a, 2) ^ FI_ROTR(a, 13) ^ FI_ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define FI_SHA_NI 1

/* The same block with the SHA extensions (Intel SHA-NI, AMD Zen): two rounds an instruction,
 * ~4x faster than the portable form. The state lives as ABEF and CDGH, the layout
 * sha256rnds2 works on. Chosen at run time (fi_sha256_has_ni), so one wheel serves every x86-64. */
__attribute__((target("sha,sse4.1")))
static void fi_sha256_block_ni(uint32_t h[8], const unsigned char *block)
{
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i w[16], abef, cdgh, abef_before, cdgh_before, cdab, efgh, k, feba, dchg;
    int i;
    /* h: ABCD EFGH -> ABEF CDGH */
    cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
    efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
    abef = _mm_alignr_epi8(cdab, efgh, 8);
    cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    abef_before = abef;
    cdgh_before = cdgh;
    /* the message schedule, four words a vector: w[j] is W[4j .. 4j+3] */
    for (i = 0; i < 4; i++)
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), byteswap);
    for (i = 4; i < 16; i++)
        w[i] = _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]), _mm_alignr_epi8(w[i - 1], w[i - 2], 4)),
            w[i - 1]);
    for (i = 0; i < 16; i++) {
        k = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)(fi_sha256_k + 4 * i)));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, k);                          /* rounds 4i, 4i+1 */
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(k, 0x0E)); /* 4i+2, 4i+3 */
    }
    abef = _mm_add_epi32(abef, abef_before);
    cdgh = _mm_add_epi32(cdgh, cdgh_before);
    /* ABEF CDGH -> ABCD EFGH */
    feba = _mm_shuffle_epi32(abef, 0x1B);
    dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/* 1 when the CPU has the SHA extensions and SSSE3/SSE4.1 (asked once, by the module's init) */
static int fi_sha256_has_ni(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & (1u << 29)) != 0;     /* CPUID.(EAX=7,ECX=0):EBX.SHA[bit 29] */
}
#else
#define FI_SHA_NI 0
static int fi_sha256_has_ni(void) { return 0; }
#endif

/* use_ni: fi_sha256_has_ni()'s answer (0 forces the portable form: the tests check both) */
static void fi_sha256(const unsigned char *data, size_t length, unsigned char out[32], int use_ni)
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    unsigned char last[64];
    size_t whole = length & ~(size_t)63, rest = length - whole, i;
    uint64_t bits = (uint64_t)length * 8;
    void (*block)(uint32_t *, const unsigned char *) = fi_sha256_block;
#if FI_SHA_NI
    if (use_ni)
        block = fi_sha256_block_ni;
#else
    (void)use_ni;
#endif
    for (i = 0; i < whole; i += 64)
        block(h, data + i);
    /* the padding: a 1 bit, zeros, the length in bits as the block's last 8 bytes (a block more
       when fewer than 9 bytes are left in this one) */
    memcpy(last, data + whole, rest);
    last[rest] = 0x80;
    if (rest >= 56) {
        memset(last + rest + 1, 0, 63 - rest);
        block(h, last);
        memset(last, 0, 56);
    } else {
        memset(last + rest + 1, 0, 55 - rest);
    }
    for (i = 0; i < 8; i++)
        last[63 - i] = (unsigned char)(bits >> (8 * i));
    block(h, last);
    for (i = 0; i < 8; i++)
        fi_store_be32(out + 4 * i, h[i]);
}

/* 1 when the n bytes of a and b are the same; the time does not depend on where they differ */
static inline int fi_same(const unsigned char *a, const unsigned char *b, size_t n)
{
    unsigned char differ = 0;
    size_t i;
    for (i = 0; i < n; i++)
        differ |= a[i] ^ b[i];
    return differ == 0;
}

#endif
