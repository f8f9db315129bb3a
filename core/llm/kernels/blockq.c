/* Matrix-vector products over weights kept in the bundled GGUF's own block formats.
 *
 * Why: a decode step streams every weight once per token, so its speed is the bytes it reads. The
 * bundled model's weights ARE Q4_1 (layers) and Q8_0 (embedding/head) blocks; the bf16 copy the
 * engine loads is round_bf16(d*q + m) of them, 2 bytes a weight. Here each block is expanded in
 * registers to exactly those bf16 values (the same fp32 multiply-add, the same round-to-nearest-even),
 * so every product equals a bf16 matmul's product and only the summation order differs, while 0.75
 * (Q4_1) or 1.125 (Q8_0) bytes a weight are read.
 *
 * Layouts (prepared by core/llm/blockq.py): Q4_1 `qs` uint8 (n, k/2) in ggml's nibble order (byte j
 * of a 32-weight block holds weight j low, weight j+16 high), `dm` float32 (n, k/32, 2) = (d, m).
 * Q8_0 `qs` int8 (n, k), `d` float32 (n, k/32). `x` (rows, k) and `y` (rows, n) are bf16 (`bf16`
 * = 1) or float32. Plain C with AVX-512F and OpenMP (torch's own runtime): it builds in a second,
 * and Python checks the CPU before loading it.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline __m512 round_bf16(__m512 v) {
    /* round-to-nearest-even to bf16 precision, as torch's float -> bfloat16 conversion does */
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    b = _mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u));
    return _mm512_castsi512_ps(b);
}

static inline uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7FFF + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

/* The bf16 weights of one Q4_1 block: lanes 0-15 and 16-31. */
static inline void block_q4(const uint8_t *qs, const float *dm, __m512 *lo, __m512 *hi) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    /* the block's 16 possible weights d*q + m (d*q is exact in fp32, so fma == mul then add) */
    __m512 lut = round_bf16(_mm512_fmadd_ps(_mm512_set1_ps(dm[0]), iota, _mm512_set1_ps(dm[1])));
    __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
    *lo = _mm512_permutexvar_ps(_mm512_and_si512(idx, _mm512_set1_epi32(0xF)), lut);
    *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), lut);
}

/* The bf16 weights of one Q8_0 block. */
static inline void block_q8(const int8_t *qs, const float *d, __m512 *lo, __m512 *hi) {
    const __m512 scale = _mm512_set1_ps(d[0]);
    __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs));
    __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16)));
    *lo = round_bf16(_mm512_mul_ps(_mm512_cvtepi32_ps(q0), scale));
    *hi = round_bf16(_mm512_mul_ps(_mm512_cvtepi32_ps(q1), scale));
}

/* y[r] = dot(weight row, x[r]) for R rows at once: each block is expanded once for all of them.
 * R is a constant after inlining, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void row_dots(int q4, const void *qs, const float *sc,
                                                           int64_t blocks, const float *x, int64_t k,
                                                           const int R, float *out) {
    __m512 acc[8];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
        __m512 lo, hi;
        if (q4)
            block_q4((const uint8_t *)qs + 16 * b, sc + 2 * b, &lo, &hi);
        else
            block_q8((const int8_t *)qs + 32 * b, sc + b, &lo, &hi);
        for (int r = 0; r < R; ++r) {
            acc[r] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + r * k + 32 * b), acc[r]);
            acc[r] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + r * k + 32 * b + 16), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

static inline __attribute__((always_inline)) void row_all(int q4, const void *qs, const float *sc, int64_t blocks, const float *x, int64_t k,
                    int64_t rows, float *out) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) row_dots(q4, qs, sc, blocks, x + r * k, k, 8, out + r);
    switch (rows - r) {
        case 7: row_dots(q4, qs, sc, blocks, x + r * k, k, 7, out + r); break;
        case 6: row_dots(q4, qs, sc, blocks, x + r * k, k, 6, out + r); break;
        case 5: row_dots(q4, qs, sc, blocks, x + r * k, k, 5, out + r); break;
        case 4: row_dots(q4, qs, sc, blocks, x + r * k, k, 4, out + r); break;
        case 3: row_dots(q4, qs, sc, blocks, x + r * k, k, 3, out + r); break;
        case 2: row_dots(q4, qs, sc, blocks, x + r * k, k, 2, out + r); break;
        case 1: row_dots(q4, qs, sc, blocks, x + r * k, k, 1, out + r); break;
        default: break;
    }
}

/* x (rows, k) as float32, converted from bf16 when needed; NULL when it cannot be allocated */
static float *inputs(const void *x, int64_t rows, int64_t k, int bf16) {
    float *xf = aligned_alloc(64, (size_t)(rows * k * 4 + 63) / 64 * 64);
    if (!xf) return NULL;
    if (!bf16) {
        memcpy(xf, x, (size_t)(rows * k) * 4);
        return xf;
    }
    const uint16_t *xb = (const uint16_t *)x;
    for (int64_t i = 0; i < rows * k; ++i) {
        uint32_t b = (uint32_t)xb[i] << 16;
        memcpy(xf + i, &b, 4);
    }
    return xf;
}

static inline void store(void *y, int64_t at, float v, int bf16) {
    if (bf16)
        ((uint16_t *)y)[at] = to_bf16(v);
    else
        ((float *)y)[at] = v;
}

static int gemv(int q4, const void *x, int64_t rows, int64_t k, const void *qs, const float *sc, int64_t n,
                void *y, int bf16, int threads) {
    const int64_t blocks = k / 32, row_bytes = q4 ? k / 2 : k, row_scales = q4 ? 2 * blocks : blocks;
    float *xf = inputs(x, rows, k, bf16);
    if (!xf) return -1;
#pragma omp parallel num_threads(threads)
    {
        float out[rows];
#pragma omp for schedule(static)
        for (int64_t j = 0; j < n; ++j) {
            const void *row = (const uint8_t *)qs + j * row_bytes;
            if (q4)
                row_all(1, row, sc + j * row_scales, blocks, xf, k, rows, out);
            else
                row_all(0, row, sc + j * row_scales, blocks, xf, k, rows, out);
            for (int64_t r = 0; r < rows; ++r) store(y, r * n + j, out[r], bf16);
        }
    }
    free(xf);
    return 0;
}

int q4_gemv(const void *x, int64_t rows, int64_t k, const uint8_t *qs, const float *dm, int64_t n, void *y,
            int bf16, int threads) {
    return gemv(1, x, rows, k, qs, dm, n, y, bf16, threads);
}

int q8_gemv(const void *x, int64_t rows, int64_t k, const int8_t *qs, const float *d, int64_t n, void *y,
            int bf16, int threads) {
    return gemv(0, x, rows, k, qs, d, n, y, bf16, threads);
}

/* How many of the n rows differ, in any bit, from the bf16 matrix w (n, k): the load-time check
 * that the blocks hold exactly the model's weights. */
int64_t mismatched_rows(int q4, const void *qs, const float *sc, int64_t n, int64_t k, const uint16_t *w) {
    const int64_t blocks = k / 32, row_bytes = q4 ? k / 2 : k, row_scales = q4 ? 2 * blocks : blocks;
    int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static)
    for (int64_t j = 0; j < n; ++j) {
        __mmask16 diff = 0;
        for (int64_t b = 0; b < blocks; ++b) {
            __m512 lo, hi;
            if (q4)
                block_q4((const uint8_t *)qs + j * row_bytes + 16 * b, sc + j * row_scales + 2 * b, &lo, &hi);
            else
                block_q8((const int8_t *)qs + j * row_bytes + 32 * b, sc + j * row_scales + b, &lo, &hi);
            const uint16_t *ref = w + j * k + 32 * b;
            __m512i r0 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)ref)), 16);
            __m512i r1 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(ref + 16))), 16);
            diff |= _mm512_cmpneq_epi32_mask(_mm512_castps_si512(lo), r0);
            diff |= _mm512_cmpneq_epi32_mask(_mm512_castps_si512(hi), r1);
        }
        bad += diff != 0;
    }
    return bad;
}
