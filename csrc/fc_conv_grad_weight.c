/* fc_conv_grad_weight.c - the convolution grad_weight routes, for float and double. */
#include "fc_internal.h"

#if FC_X86_SIMD
#include <immintrin.h>

#include "fc_transpose16.h"

/*
 * fc_ukernels.c's AVX-512 float32 dot5 kernel for 3 rows instead of 4 and 5
 * consecutive offsets (one kernel row of taps, stride 1): a layer with 6
 * output channels (LeNet's conv1) then fills two tiles exactly instead of
 * padding the second to 4 rows (a quarter of the FMAs), and the five shifted
 * x vectors are cut out of two loads with valignd (five unaligned loads, four
 * splitting a cache line, left 3 rows load-bound). Every accumulator is the
 * same chain as in the table's kernel (images, vectors of columns,
 * gv * sv + acc) with the same horizontal sum: a weight's bits do not depend
 * on the tile height.
 */
__attribute__((target("avx512f,avx2,fma")))
static void dot5x3_avx512_f32(ptrdiff_t len, int nimg, const float *const *g, ptrdiff_t gs,
                              const float *s, ptrdiff_t ss, const ptrdiff_t *off, float *out,
                              ptrdiff_t ldo)
{
    __m512 acc[3][5];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 5; ++c) acc[r][c] = _mm512_setzero_ps();
    for (int im = 0; im < nimg; ++im) {
        const float *g0 = g[0] + im * gs, *g1 = g[1] + im * gs, *g2 = g[2] + im * gs;
        const float *sp = s + im * ss + off[0];
        __m512i lo = _mm512_castps_si512(_mm512_loadu_ps(sp));
        for (ptrdiff_t q = 0; q < len; q += 16) {
            const __m512i hi = _mm512_castps_si512(_mm512_loadu_ps(sp + q + 16));
            const __m512 v0 = _mm512_loadu_ps(g0 + q), v1 = _mm512_loadu_ps(g1 + q);
            const __m512 v2 = _mm512_loadu_ps(g2 + q);
            __m512 sv = _mm512_castsi512_ps(lo);
#define DOT5X3_COL(C)                                                   \
            acc[0][C] = _mm512_fmadd_ps(v0, sv, acc[0][C]);             \
            acc[1][C] = _mm512_fmadd_ps(v1, sv, acc[1][C]);             \
            acc[2][C] = _mm512_fmadd_ps(v2, sv, acc[2][C]);
            DOT5X3_COL(0)
            sv = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 1));
            DOT5X3_COL(1)
            sv = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 2));
            DOT5X3_COL(2)
            sv = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 3));
            DOT5X3_COL(3)
            sv = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 4));
            DOT5X3_COL(4)
#undef DOT5X3_COL
            lo = hi;
        }
    }
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 5; ++c) out[r * ldo + c] += _mm512_reduce_add_ps(acc[r][c]);
}
#endif

#if FC_X86_SIMD
/* r[i] = row i of 16 (x < nx: masked loads, the rest 0) -> r[x] = column x,
 * in registers (fc_transpose16.h). */
__attribute__((target("avx512f,avx2,fma")))
static inline void tile16_avx512_f32(const float *s, ptrdiff_t ss, int nx, __m512 r[16])
{
    const __mmask16 k = (__mmask16)((1u << nx) - 1u);
    for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(k, s + i * ss);
    fc_transpose16_avx512(r);
}

/*
 * Copies by those tiles (no arithmetic), where element-by-element stores were
 * a tenth of the grad_weight pass: NHWC rows, d[x * ds + c] = s[c * ss + x]
 * (c < 16, x < nx); and two 8-row panels of packed grad_y, a0[x * 8 + r] =
 * s[r * ss + x], a1[x * 8 + r] = s[(8 + r) * ss + x] (r < 8, x < nx).
 */
__attribute__((target("avx512f,avx2,fma")))
static void nhwc_tile_avx512_f32(const float *s, ptrdiff_t ss, int nx, float *d, ptrdiff_t ds)
{
    __m512 r[16];
    tile16_avx512_f32(s, ss, nx, r);
    for (int x = 0; x < nx; ++x) _mm512_storeu_ps(d + x * ds, r[x]);
}

__attribute__((target("avx512f,avx2,fma")))
static void pack16_avx512_f32(const float *s, ptrdiff_t ss, int nx, float *a0, float *a1)
{
    __m512 r[16];
    tile16_avx512_f32(s, ss, nx, r);
    for (int x = 0; x < nx; ++x) {
        _mm256_storeu_ps(a0 + x * 8, _mm512_castps512_ps256(r[x]));
        _mm256_storeu_pd((double *)(a1 + x * 8),
                         _mm512_extractf64x4_pd(_mm512_castps_pd(r[x]), 1));
    }
}
#endif

typedef void (*fc_pack16_f32)(const float *, ptrdiff_t, int, float *, float *);
typedef void (*fc_pack16_f64)(const double *, ptrdiff_t, int, double *, double *);
/* The two-panel grad_y packer of the current level, or NULL. */
static fc_pack16_f32 pack16_f32(void)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() == FC_SIMD_AVX512) return pack16_avx512_f32;
#endif
    return NULL;
}
static fc_pack16_f64 pack16_f64(void) { return NULL; }

typedef void (*fc_nhwc_tile_f32)(const float *, ptrdiff_t, int, float *, ptrdiff_t);
typedef void (*fc_nhwc_tile_f64)(const double *, ptrdiff_t, int, double *, ptrdiff_t);
/* The NHWC tile of the current level, or NULL (then element by element). */
static fc_nhwc_tile_f32 nhwc_tile_f32(void)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() == FC_SIMD_AVX512) return nhwc_tile_avx512_f32;
#endif
    return NULL;
}
static fc_nhwc_tile_f64 nhwc_tile_f64(void) { return NULL; }

/* The 3-row consecutive-offset dot5 kernel of the current level, or NULL. */
static fc_dot_f32 dot5x3_f32(void)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() == FC_SIMD_AVX512) return dot5x3_avx512_f32;
#endif
    return NULL;
}
static fc_dot_f64 dot5x3_f64(void) { return NULL; }

#define FC_TEMPLATE "fc_conv_grad_weight_impl.h"
#include "fc_instantiate.h"
