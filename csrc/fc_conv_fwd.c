/* fc_conv_fwd.c - the convolution forward, for float and double. */
#include "fc_internal.h"
#if FC_X86_SIMD
#include <immintrin.h>
#endif

/*
 * Vector code of the conv + 2x2/2 max-pool write-out (pool2_row in
 * fc_conv_fwd_impl.h): outputs [0, wo2) of one pooled row from conv rows c0, c1
 * (bias added, ReLU if asked, then the four candidates in raster order, a
 * larger value or a NaN taking over: the scalar loop's operations lane by lane).
 * Masked loads read no further than column 2 * wo2 of either row. Returns the
 * outputs done (0 without AVX-512); the template's scalar loop does the rest.
 */
#if FC_X86_SIMD
__attribute__((target("avx512f"))) static ptrdiff_t
pool2_avx512_f32(const float *c0, const float *c1, float bias, int relu, ptrdiff_t wo2,
                 float *out)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (ptrdiff_t j = 0; j < wo2; j += 16) {
        const ptrdiff_t n = wo2 - j < 16 ? wo2 - j : 16;
        const __mmask16 ma = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1);
        const __mmask16 mb = n > 8 ? (__mmask16)((1u << (2 * n - 16)) - 1) : (__mmask16)0;
        const __m512 a0 = _mm512_maskz_loadu_ps(ma, c0 + 2 * j);
        const __m512 b0 = _mm512_maskz_loadu_ps(mb, c0 + 2 * j + 16);
        const __m512 a1 = _mm512_maskz_loadu_ps(ma, c1 + 2 * j);
        const __m512 b1 = _mm512_maskz_loadu_ps(mb, c1 + 2 * j + 16);
        __m512 v[4] = {_mm512_add_ps(_mm512_permutex2var_ps(a0, even, b0), b),
                       _mm512_add_ps(_mm512_permutex2var_ps(a0, odd, b0), b),
                       _mm512_add_ps(_mm512_permutex2var_ps(a1, even, b1), b),
                       _mm512_add_ps(_mm512_permutex2var_ps(a1, odd, b1), b)};
        if (relu)
            for (int i = 0; i < 4; ++i)
                v[i] = _mm512_mask_mov_ps(v[i], _mm512_cmp_ps_mask(v[i], zero, _CMP_LE_OQ), zero);
        __m512 best = v[0];
        for (int i = 1; i < 4; ++i) {
            const __mmask16 t = _mm512_cmp_ps_mask(v[i], best, _CMP_GT_OQ) |
                                _mm512_cmp_ps_mask(v[i], v[i], _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, t, v[i]);
        }
        _mm512_mask_storeu_ps(out + j, (__mmask16)((1u << n) - 1), best);
    }
    return wo2;
}

__attribute__((target("avx512f"))) static ptrdiff_t
pool2_avx512_f64(const double *c0, const double *c1, double bias, int relu, ptrdiff_t wo2,
                 double *out)
{
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi64(even, _mm512_set1_epi64(1));
    const __m512d b = _mm512_set1_pd(bias), zero = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < wo2; j += 8) {
        const ptrdiff_t n = wo2 - j < 8 ? wo2 - j : 8;
        const __mmask8 ma = n >= 4 ? (__mmask8)0xFF : (__mmask8)((1u << (2 * n)) - 1);
        const __mmask8 mb = n > 4 ? (__mmask8)((1u << (2 * n - 8)) - 1) : (__mmask8)0;
        const __m512d a0 = _mm512_maskz_loadu_pd(ma, c0 + 2 * j);
        const __m512d b0 = _mm512_maskz_loadu_pd(mb, c0 + 2 * j + 8);
        const __m512d a1 = _mm512_maskz_loadu_pd(ma, c1 + 2 * j);
        const __m512d b1 = _mm512_maskz_loadu_pd(mb, c1 + 2 * j + 8);
        __m512d v[4] = {_mm512_add_pd(_mm512_permutex2var_pd(a0, even, b0), b),
                        _mm512_add_pd(_mm512_permutex2var_pd(a0, odd, b0), b),
                        _mm512_add_pd(_mm512_permutex2var_pd(a1, even, b1), b),
                        _mm512_add_pd(_mm512_permutex2var_pd(a1, odd, b1), b)};
        if (relu)
            for (int i = 0; i < 4; ++i)
                v[i] = _mm512_mask_mov_pd(v[i], _mm512_cmp_pd_mask(v[i], zero, _CMP_LE_OQ), zero);
        __m512d best = v[0];
        for (int i = 1; i < 4; ++i) {
            const __mmask8 t = _mm512_cmp_pd_mask(v[i], best, _CMP_GT_OQ) |
                               _mm512_cmp_pd_mask(v[i], v[i], _CMP_UNORD_Q);
            best = _mm512_mask_mov_pd(best, t, v[i]);
        }
        _mm512_mask_storeu_pd(out + j, (__mmask8)((1u << n) - 1), best);
    }
    return wo2;
}
#endif

/* AVX2: 8 outputs a step; the even/odd split of 16 columns is an in-lane
 * shuffle and a cross-lane permute. */
__attribute__((target("avx2"))) static ptrdiff_t
pool2_avx2_f32(const float *c0, const float *c1, float bias, int relu, ptrdiff_t wo2,
               float *out)
{
    const __m256 b = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
    ptrdiff_t j = 0;
    for (; j + 8 <= wo2; j += 8) {
        __m256 v[4];
        for (int r = 0; r < 2; ++r) {
            const float *c = r ? c1 : c0;
            const __m256 lo = _mm256_loadu_ps(c + 2 * j), hi = _mm256_loadu_ps(c + 2 * j + 8);
            /* [l0 l2 h0 h2 | l4 l6 h4 h6] -> [l0 l2 l4 l6 h0 h2 h4 h6] */
            v[2 * r] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
            v[2 * r + 1] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
        }
        for (int i = 0; i < 4; ++i) {
            v[i] = _mm256_add_ps(v[i], b);
            if (relu) v[i] = _mm256_blendv_ps(v[i], zero, _mm256_cmp_ps(v[i], zero, _CMP_LE_OQ));
        }
        __m256 best = v[0];
        for (int i = 1; i < 4; ++i) {
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v[i], best, _CMP_GT_OQ),
                                             _mm256_cmp_ps(v[i], v[i], _CMP_UNORD_Q));
            best = _mm256_blendv_ps(best, v[i], take);
        }
        _mm256_storeu_ps(out + j, best);
    }
    return j;
}

static ptrdiff_t pool2_simd_f32(const float *c0, const float *c1, float bias, int relu,
                                ptrdiff_t wo2, float *out)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() >= FC_SIMD_AVX512) {
        fc_simd_ran(FC_SIMD_AVX512);
        return pool2_avx512_f32(c0, c1, bias, relu, wo2, out);
    }
    if (fc_simd_dispatch() >= FC_SIMD_AVX2) {
        fc_simd_ran(FC_SIMD_AVX2);
        return pool2_avx2_f32(c0, c1, bias, relu, wo2, out);
    }
#endif
    (void)c0; (void)c1; (void)bias; (void)relu; (void)wo2; (void)out;
    return 0;
}

static ptrdiff_t pool2_simd_f64(const double *c0, const double *c1, double bias, int relu,
                                ptrdiff_t wo2, double *out)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() >= FC_SIMD_AVX512) {
        fc_simd_ran(FC_SIMD_AVX512);
        return pool2_avx512_f64(c0, c1, bias, relu, wo2, out);
    }
#endif
    (void)c0; (void)c1; (void)bias; (void)relu; (void)wo2; (void)out;
    return 0;
}

#define FC_TEMPLATE "fc_conv_fwd_impl.h"
#include "fc_instantiate.h"
