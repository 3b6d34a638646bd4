/* fc_pool.c - instantiates the pooling kernels for float and double. */
#include <math.h>

#include "fc_internal.h"

/*
 * Vector 2x2/2 max pooling for one output row; returns how many outputs it did
 * (the rest go through the scalar loop). Same rule as the scalar code: raster
 * order, strict '>' so the first maximum wins, and a NaN always takes over.
 */
#if FC_X86_SIMD
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw"))) static ptrdiff_t
max2x2_avx512_f32(const float *r0, ptrdiff_t w, ptrdiff_t wo, int64_t base, float *y,
                  int64_t *idx)
{
    const float *r1 = r0 + w;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i o1 = _mm512_set1_epi32(1), o2 = _mm512_set1_epi32((int)w),
                  o3 = _mm512_set1_epi32((int)w + 1);
    const __m512i lane2 = _mm512_slli_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 1);
    for (ptrdiff_t ow = 0; ow < wo; ow += 16) {
        /* the last group of a row (often the only one: a 28-wide plane has 14
         * outputs per row) runs masked, so nothing past the row is touched */
        const ptrdiff_t n = wo - ow < 16 ? wo - ow : 16;
        const __mmask16 ma = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1);
        const __mmask16 mb = n > 8 ? (__mmask16)((1u << (2 * n - 16)) - 1) : (__mmask16)0;
        const __mmask16 my = (__mmask16)((1u << n) - 1);
        __m512 a = _mm512_maskz_loadu_ps(ma, r0 + 2 * ow), b = _mm512_maskz_loadu_ps(mb, r0 + 2 * ow + 16);
        __m512 c = _mm512_maskz_loadu_ps(ma, r1 + 2 * ow), d = _mm512_maskz_loadu_ps(mb, r1 + 2 * ow + 16);
        __m512 v0 = _mm512_permutex2var_ps(a, even, b), v1 = _mm512_permutex2var_ps(a, odd, b);
        __m512 v2 = _mm512_permutex2var_ps(c, even, d), v3 = _mm512_permutex2var_ps(c, odd, d);
        __m512 best = v0;
        __m512i off = _mm512_setzero_si512();
        __mmask16 t;
        t = _mm512_cmp_ps_mask(v1, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, t, v1);
        off = _mm512_mask_mov_epi32(off, t, o1);
        t = _mm512_cmp_ps_mask(v2, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v2, v2, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, t, v2);
        off = _mm512_mask_mov_epi32(off, t, o2);
        t = _mm512_cmp_ps_mask(v3, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v3, v3, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, t, v3);
        off = _mm512_mask_mov_epi32(off, t, o3);
        _mm512_mask_storeu_ps(y + ow, my, best);
        if (idx) {
            __m512i rel = _mm512_add_epi32(off, lane2); /* 2*lane + offset, < 2**31 */
            __m512i b64 = _mm512_set1_epi64(base + 2 * ow);
            _mm512_mask_storeu_epi64(idx + ow, (__mmask8)(my & 0xFF),
                _mm512_add_epi64(b64, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(rel))));
            _mm512_mask_storeu_epi64(idx + ow + 8, (__mmask8)(my >> 8),
                _mm512_add_epi64(b64, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(rel, 1))));
        }
    }
    return wo;
}

/*
 * Backward of 2x2/2 max pooling for one plane when every output's argmax lies
 * in its own 2x2 tile (true of the forward's indices; the indices are not
 * trusted, each is checked): every element of grad_x is written once,
 * grad_out where the index points and 0 elsewhere, instead of a memset and a
 * read-modify-write scatter. The value is 0 + grad_out, as the scatter's
 * 0 += grad_out makes it (a -0 becomes +0). Returns 0, possibly after writing
 * part of the plane, when an index is not in its tile: the caller then redoes
 * the plane with the scatter. One call per plane: the constants and the call
 * cost more than a 14-output row.
 */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static int
max2x2_bwd_avx512_f32(const float *gy, const int64_t *idx, ptrdiff_t h, ptrdiff_t w,
                      ptrdiff_t ho, ptrdiff_t wo, float *gx)
{
    /* output lane i of a group: its tile starts 2*i columns in */
    const __m512i lane2 = _mm512_slli_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), 1);
    const __m512i one = _mm512_set1_epi64(1), wv = _mm512_set1_epi64((long long)w),
                  w1 = _mm512_set1_epi64((long long)w + 1);
    /* interleave lanes of (even, odd): 0, 16, 1, 17, ... */
    const __m512i zip = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m256 zero = _mm256_setzero_ps();
    for (ptrdiff_t oh = 0; oh < ho; ++oh) {
        float *r0 = gx + 2 * oh * w, *r1 = r0 + w;
        const float *gr = gy + oh * wo;
        const int64_t *ir = idx + oh * wo;
        const int64_t base = (int64_t)(2 * oh * w);
        for (ptrdiff_t ow = 0; ow < wo; ow += 8) {
            const ptrdiff_t n = wo - ow < 8 ? wo - ow : 8;
            const __mmask8 m = (__mmask8)((1u << n) - 1);
            const __mmask16 m2 = (__mmask16)((1u << (2 * n)) - 1);
            const __m512i d = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(m, ir + ow),
                _mm512_add_epi64(_mm512_set1_epi64(base + 2 * ow), lane2));
            const __mmask8 k0 = _mm512_cmpeq_epi64_mask(d, _mm512_setzero_si512());
            const __mmask8 k1 = _mm512_cmpeq_epi64_mask(d, one);
            const __mmask8 k2 = _mm512_cmpeq_epi64_mask(d, wv);
            const __mmask8 k3 = _mm512_cmpeq_epi64_mask(d, w1);
            if ((__mmask8)((k0 | k1 | k2 | k3) & m) != m) return 0;
            const __m256 v = _mm256_add_ps(_mm256_maskz_loadu_ps(m, gr + ow), zero);
            const __m512 top = _mm512_permutex2var_ps(
                _mm512_castps256_ps512(_mm256_maskz_mov_ps(k0, v)), zip,
                _mm512_castps256_ps512(_mm256_maskz_mov_ps(k1, v)));
            const __m512 bot = _mm512_permutex2var_ps(
                _mm512_castps256_ps512(_mm256_maskz_mov_ps(k2, v)), zip,
                _mm512_castps256_ps512(_mm256_maskz_mov_ps(k3, v)));
            _mm512_mask_storeu_ps(r0 + 2 * ow, m2, top);
            _mm512_mask_storeu_ps(r1 + 2 * ow, m2, bot);
        }
        for (ptrdiff_t x = 2 * wo; x < w; ++x) r0[x] = r1[x] = 0;
    }
    if (2 * ho < h) memset(gx + 2 * ho * w, 0, sizeof(float) * (size_t)((h - 2 * ho) * w));
    return 1;
}

/* The same for double: 8 outputs a step, the offsets kept as 64-bit lanes. */
__attribute__((target("avx512f"))) static ptrdiff_t
max2x2_avx512_f64(const double *r0, ptrdiff_t w, ptrdiff_t wo, int64_t base, double *y,
                  int64_t *idx)
{
    const double *r1 = r0 + w;
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi64(even, _mm512_set1_epi64(1));
    const __m512i o1 = _mm512_set1_epi64(1), o2 = _mm512_set1_epi64((long long)w),
                  o3 = _mm512_set1_epi64((long long)w + 1);
    const __m512i lane2 = _mm512_slli_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), 1);
    for (ptrdiff_t ow = 0; ow < wo; ow += 8) {
        const ptrdiff_t n = wo - ow < 8 ? wo - ow : 8;
        const __mmask8 ma = n >= 4 ? (__mmask8)0xFF : (__mmask8)((1u << (2 * n)) - 1);
        const __mmask8 mb = n > 4 ? (__mmask8)((1u << (2 * n - 8)) - 1) : (__mmask8)0;
        const __mmask8 my = (__mmask8)((1u << n) - 1);
        __m512d a = _mm512_maskz_loadu_pd(ma, r0 + 2 * ow), b = _mm512_maskz_loadu_pd(mb, r0 + 2 * ow + 8);
        __m512d c = _mm512_maskz_loadu_pd(ma, r1 + 2 * ow), d = _mm512_maskz_loadu_pd(mb, r1 + 2 * ow + 8);
        __m512d v0 = _mm512_permutex2var_pd(a, even, b), v1 = _mm512_permutex2var_pd(a, odd, b);
        __m512d v2 = _mm512_permutex2var_pd(c, even, d), v3 = _mm512_permutex2var_pd(c, odd, d);
        __m512d best = v0;
        __m512i off = _mm512_setzero_si512();
        __mmask8 t;
        t = _mm512_cmp_pd_mask(v1, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v1, v1, _CMP_UNORD_Q);
        best = _mm512_mask_mov_pd(best, t, v1);
        off = _mm512_mask_mov_epi64(off, t, o1);
        t = _mm512_cmp_pd_mask(v2, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v2, v2, _CMP_UNORD_Q);
        best = _mm512_mask_mov_pd(best, t, v2);
        off = _mm512_mask_mov_epi64(off, t, o2);
        t = _mm512_cmp_pd_mask(v3, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v3, v3, _CMP_UNORD_Q);
        best = _mm512_mask_mov_pd(best, t, v3);
        off = _mm512_mask_mov_epi64(off, t, o3);
        _mm512_mask_storeu_pd(y + ow, my, best);
        if (idx)
            _mm512_mask_storeu_epi64(idx + ow, my,
                _mm512_add_epi64(_mm512_set1_epi64(base + 2 * ow), _mm512_add_epi64(off, lane2)));
    }
    return wo;
}
#endif

static ptrdiff_t max2x2_simd_f32(const float *r0, ptrdiff_t w, ptrdiff_t wo, int64_t base,
                                 float *y, int64_t *idx)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() >= FC_SIMD_AVX512 && w < (1 << 30)) {
        fc_simd_ran(FC_SIMD_AVX512);
        return max2x2_avx512_f32(r0, w, wo, base, y, idx);
    }
#endif
    (void)r0; (void)w; (void)wo; (void)base; (void)y; (void)idx;
    return 0;
}

static ptrdiff_t max2x2_simd_f64(const double *r0, ptrdiff_t w, ptrdiff_t wo, int64_t base,
                                 double *y, int64_t *idx)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() >= FC_SIMD_AVX512) {
        fc_simd_ran(FC_SIMD_AVX512);
        return max2x2_avx512_f64(r0, w, wo, base, y, idx);
    }
#endif
    (void)r0; (void)w; (void)wo; (void)base; (void)y; (void)idx;
    return 0;
}

/*
 * One plane of the 2x2/2 max-pool backward by rows (see max2x2_bwd_avx512_f32);
 * returns 0 when there is no such vector code or an index is not in its tile.
 * Rows and columns past the tiles (odd sizes) get 0.
 */
static int max2x2_bwd_plane_f32(const float *gy, const int64_t *idx, ptrdiff_t h, ptrdiff_t w,
                                ptrdiff_t ho, ptrdiff_t wo, float *gx)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() >= FC_SIMD_AVX512) {
        fc_simd_ran(FC_SIMD_AVX512);
        return max2x2_bwd_avx512_f32(gy, idx, h, w, ho, wo, gx);
    }
#endif
    (void)gy; (void)idx; (void)h; (void)w; (void)ho; (void)wo; (void)gx;
    return 0;
}

static int max2x2_bwd_plane_f64(const double *gy, const int64_t *idx, ptrdiff_t h, ptrdiff_t w,
                                ptrdiff_t ho, ptrdiff_t wo, double *gx)
{
    (void)gy; (void)idx; (void)h; (void)w; (void)ho; (void)wo; (void)gx;
    return 0; /* no vector code: the scatter */
}

/* whether the 2x2/2 row kernel is vector code; otherwise the generic plane path
 * (vectorised selects) is faster than the scalar row */
static int max2x2_fast_f32(void)
{
#if FC_X86_SIMD
    return fc_simd_level() >= FC_SIMD_AVX512; /* the level implies avx512bw */
#else
    return 0;
#endif
}

static int max2x2_fast_f64(void)
{
#if FC_X86_SIMD
    return fc_simd_level() >= FC_SIMD_AVX512;
#else
    return 0;
#endif
}

#define FC_TEMPLATE "fc_pool_impl.h"
#include "fc_instantiate.h"
