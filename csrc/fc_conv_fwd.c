/* fc_conv_fwd.c - the convolution forward, for float and double. */
#include "fc_internal.h"
#if FC_X86_SIMD
#include <immintrin.h>

#include "fc_lanes.h"
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
        const __m512 best = fc_lanes_max4(v);
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

#if FC_X86_SIMD
/*
 * The image-lanes route (float32, AVX-512) for layers with few input channels
 * and 5 taps per row, stride 1: LeNet's conv2 (6 -> 16 channels, 10x10 from
 * 14x14; 231 -> 141 us at batch 64, one thread) and conv1 (1 -> 6, 28x28
 * padded by 2; 137 -> 93 us). Layers whose lane copies outgrow L2 (1 -> 32
 * at 28x28) stay on the implicit route.
 *
 * The implicit route lays conv2's outputs on the input's column grid (10 of
 * every 14 columns are outputs); here the 16 lanes of a vector are 16 images,
 * so no lane is wasted, and the row taps that fall on padding are skipped.
 * Per output element the arithmetic is the implicit route's: one FMA chain
 * from +0 over the taps (c, i, j) in that order (a skipped tap would add
 * w * 0, which changes nothing finite), then + bias and the ReLU select of
 * its write-out. So the bits are that route's (tests/test_conv_lanes.py).
 * A task is a block of 16 images (or its share of the output channels,
 * fwl_part): x is moved into lanes (fc_lanes.h; zero columns for the padding),
 * outputs are accumulated for up to 8 channels x 2 columns in registers, then
 * moved out of lanes into y.
 */
#define FWL_LANES FC_LANES
#define FWL_KW 5
#define FWL_KB 8                    /* output channels per register block */
#define FWL_MAX_C 8
#define FWL_MAX_SCRATCH (768 * 1024) /* lane copies per thread, within L2 */
#if defined(__GNUC__) && !defined(__clang__)
#define FWL_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define FWL_UNROLL _Pragma("unroll")
#else
#define FWL_UNROLL
#endif

typedef struct {
    const float *x, *bias;
    const float *wp; /* per block of FWL_KB channels from k0, of kb: the weights as
                      * wp[k0 * c * kh * kw + ((c * kh + i) * FWL_KW + j) * kb + k] */
    float *y;      /* the output, or its 2x2/2 max-pool when pool */
    const fc_conv_geom *g;
    int relu, pool;
    ptrdiff_t we;  /* output columns in lanes (wo rounded up to a pair) */
    ptrdiff_t wt;  /* columns of the lane copy of an input row */
} fwl_plan;

static ptrdiff_t fwl_scratch_floats(const fc_conv_geom *g, ptrdiff_t we, ptrdiff_t wt)
{
    return (g->c * g->h * wt + g->k * g->ho * we) * FWL_LANES;
}

/* Whether the lanes route takes this float32 layer (the caller checked the level). */
static int fwl_fits(const fc_conv_geom *g)
{
    if (g->groups != 1 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1) return 0;
    const long max_c = FC_MIN(fc_route_override(FC_OVERRIDE_FWD_LANES_MAX_C, FWL_MAX_C), FWL_MAX_C);
    if (g->kw != FWL_KW || g->c < 1 || g->c > max_c || g->k < 1 || g->n < 1) return 0;
    if (g->h < 1 || g->w < 1 || g->ho < 1 || g->wo < 1) return 0;
    const ptrdiff_t we = FC_ROUNDUP(g->wo, 2), wt = we + FWL_KW - 1;
    if ((double)fwl_scratch_floats(g, we, wt) * sizeof(float) > FWL_MAX_SCRATCH) return 0;
    return 1;
}

/*
 * Output channels [k0, k0 + KB) of one block, two columns at a time:
 * acc[k][q] for column ow0 + q collects w[k, c, i, j] * x[c, oh - ph + i,
 * ow0 + q - pw + j] over c, the row taps inside x, then j; in the lane copy
 * that column is entry ow0 + q + j, so six vectors serve both columns and all
 * five j. Written out as the implicit route's job_write: + bias, then the ReLU
 * select (v <= 0 ? 0 : v, so NaN stays NaN).
 */
#define FWL_DEF_ROWS(KB)                                                                     \
    FC_TGT_AVX512 static void fwl_rows_##KB(const fwl_plan *d, ptrdiff_t k0, const float *xt, \
                                            float *yt)                                       \
    {                                                                                        \
        const fc_conv_geom *g = d->g;                                                        \
        const ptrdiff_t kh = g->kh, khw = kh * FWL_KW;                                       \
        const __m512 zero = _mm512_setzero_ps();                                             \
        for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {                                           \
            const ptrdiff_t i_lo = FC_MAX(0, g->ph - oh);                                    \
            const ptrdiff_t i_hi = FC_MIN(kh - 1, g->h - 1 + g->ph - oh);                    \
            for (ptrdiff_t ow0 = 0; ow0 < d->we; ow0 += 2) {                                 \
                __m512 acc[KB][2];                                                           \
                FWL_UNROLL for (int k = 0; k < KB; ++k) acc[k][0] = acc[k][1] = zero;        \
                for (ptrdiff_t c = 0; c < g->c; ++c) {                                       \
                    for (ptrdiff_t i = i_lo; i <= i_hi; ++i) {                               \
                        const float *row = xt + ((c * g->h + oh - g->ph + i) * d->wt + ow0)  \
                                                    * FWL_LANES;                             \
                        __m512 v[6];                                                         \
                        FWL_UNROLL for (int t = 0; t < 6; ++t)                               \
                            v[t] = _mm512_load_ps(row + t * FWL_LANES);                      \
                        const float *wk = d->wp + k0 * g->c * khw + (c * khw + i * FWL_KW) * KB; \
                        FWL_UNROLL for (int j = 0; j < FWL_KW; ++j)                          \
                            FWL_UNROLL for (int k = 0; k < KB; ++k) {                        \
                                const __m512 wb = _mm512_set1_ps(wk[j * KB + k]);            \
                                acc[k][0] = _mm512_fmadd_ps(wb, v[j], acc[k][0]);            \
                                acc[k][1] = _mm512_fmadd_ps(wb, v[j + 1], acc[k][1]);        \
                            }                                                                \
                    }                                                                        \
                }                                                                            \
                FWL_UNROLL for (int k = 0; k < KB; ++k) {                                    \
                    float *o = yt + (((k0 + k) * g->ho + oh) * d->we + ow0) * FWL_LANES;     \
                    /* (a register array of biases would spill the accumulators) */          \
                    const __m512 bv = _mm512_set1_ps(d->bias ? d->bias[k0 + k] : 0.0f);      \
                    FWL_UNROLL for (int q = 0; q < 2; ++q) {                                 \
                        __m512 s = _mm512_add_ps(acc[k][q], bv);                             \
                        if (d->relu)                                                         \
                            s = _mm512_mask_blend_ps(                                        \
                                _mm512_cmp_ps_mask(s, zero, _CMP_LE_OQ), s, zero);           \
                        _mm512_store_ps(o + q * FWL_LANES, s);                               \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
FWL_DEF_ROWS(1)
FWL_DEF_ROWS(2)
FWL_DEF_ROWS(3)
FWL_DEF_ROWS(4)
FWL_DEF_ROWS(5)
FWL_DEF_ROWS(6)
FWL_DEF_ROWS(7)
FWL_DEF_ROWS(8)

typedef void (*fwl_rows_fn)(const fwl_plan *, ptrdiff_t, const float *, float *);
static const fwl_rows_fn fwl_rows[FWL_KB + 1] = {
    NULL, fwl_rows_1, fwl_rows_2, fwl_rows_3, fwl_rows_4,
    fwl_rows_5, fwl_rows_6, fwl_rows_7, fwl_rows_8};

/*
 * The 2x2/2 max-pool of a block's outputs, in the lanes and in place: the four
 * candidates of a window in raster order, a larger value or a NaN taking over,
 * which is what pool2_row does to the same values (bias and ReLU are already in
 * them here), for channels [k0, k1). Pooled entry (k * ho2 + r) * wo2 + j is
 * written after its four reads and before any later window's, all of which
 * lie further on.
 */
FC_TGT_AVX512 static void fwl_pool2(const fwl_plan *d, ptrdiff_t k0, ptrdiff_t k1, float *yt)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t ho2 = g->ho / 2, wo2 = g->wo / 2, row = d->we * FWL_LANES;
    float *out = yt + k0 * ho2 * wo2 * FWL_LANES;
    for (ptrdiff_t k = k0; k < k1; ++k)
        for (ptrdiff_t r = 0; r < ho2; ++r) {
            const float *r0 = yt + (k * g->ho + 2 * r) * row, *r1 = r0 + row;
            for (ptrdiff_t j = 0; j < wo2; ++j, out += FWL_LANES) {
                const __m512 v[4] = {_mm512_load_ps(r0 + 2 * j * FWL_LANES),
                                     _mm512_load_ps(r0 + (2 * j + 1) * FWL_LANES),
                                     _mm512_load_ps(r1 + 2 * j * FWL_LANES),
                                     _mm512_load_ps(r1 + (2 * j + 1) * FWL_LANES)};
                const __m512 best = fc_lanes_max4(v);
                _mm512_store_ps(out, best);
            }
        }
}

/* fc_lanes_run's task: output channels [k0, k1) of one block of 16 images (all
 * of them, or a share of the blocks of FWL_KB when the blocks share out
 * unevenly among the threads: 16 images on 2 threads). x's rows into lanes
 * (zero columns for the padding), the products, then out of lanes into y
 * (pooled first when fwl_plan.y is the 2x2/2 max-pool's output, as
 * fc_conv2d_fwd_maxpool2's). Where a lane copy has no columns of its own (no
 * padding, an even width), each channel's plane moves as one run of values, in
 * full 16 x 16 transposes: conv2's 10x10 output planes in 7 instead of 10 rows
 * of 10. */
static void fwl_part(const void *plan, ptrdiff_t n0, int nb, ptrdiff_t part, ptrdiff_t parts,
                     float *buf)
{
    const fwl_plan *d = (const fwl_plan *)plan;
    const fc_conv_geom *g = d->g;
    const ptrdiff_t nkb = FC_CEILDIV(g->k, (ptrdiff_t)FWL_KB);
    const ptrdiff_t k0 = part * nkb / parts * FWL_KB;
    const ptrdiff_t k1 = FC_MIN(g->k, (part + 1) * nkb / parts * FWL_KB);
    const ptrdiff_t xt_floats = g->c * g->h * d->wt * FWL_LANES;
    const ptrdiff_t hw = g->h * g->w, chw = g->c * hw;
    float *yt = buf + xt_floats;
    if (g->pw == 0 && d->wt == g->w)
        fc_lanes_pack(d->x + n0 * chw, chw, nb, g->c, hw, 0, hw, buf);
    else
        fc_lanes_pack(d->x + n0 * chw, chw, nb, g->c * g->h, g->w, g->pw, d->wt, buf);
    for (ptrdiff_t kb = k0; kb < k1; kb += FWL_KB)
        fwl_rows[FC_MIN((ptrdiff_t)FWL_KB, g->k - kb)](d, kb, buf, yt);
    if (d->pool) {
        const ptrdiff_t plane = (g->ho / 2) * (g->wo / 2);
        fwl_pool2(d, k0, k1, yt); /* pooled planes one after another */
        fc_lanes_unpack(yt + k0 * plane * FWL_LANES, k1 - k0, plane, plane, g->k * plane, nb,
                        d->y + (n0 * g->k + k0) * plane);
    } else {
        const ptrdiff_t plane = g->ho * g->wo;
        if (d->we == g->wo)
            fc_lanes_unpack(yt + k0 * plane * FWL_LANES, k1 - k0, plane, plane, g->k * plane, nb,
                            d->y + (n0 * g->k + k0) * plane);
        else
            fc_lanes_unpack(yt + k0 * g->ho * d->we * FWL_LANES, (k1 - k0) * g->ho, g->wo, d->we,
                            g->k * plane, nb, d->y + (n0 * g->k + k0) * plane);
    }
}

/* A last partial block from 10 images on: a block costs 34 us for LeNet's
 * conv2 at one thread, whatever its images, where the implicit route takes
 * 3.5 us an image. */
#define FWL_MIN_TAIL 10

static int fwl_forward(const float *x, const float *w, const float *bias, const fc_conv_geom *g,
                       int relu, int pool, int nt, float *y)
{
    /* a block's C x kh x 5 x KB weights (c, i, j, k)-major: a row's 5 x KB of
     * them at constant offsets from one pointer, where w's layout put each
     * channel's a run-time stride apart (an address computed per broadcast) */
    const ptrdiff_t khw = g->kh * FWL_KW, ckhw = g->c * khw;
    float *wp = (float *)fc_malloc(sizeof(float) * (size_t)(g->k * ckhw));
    if (!wp) return FC_ENOMEM;
    for (ptrdiff_t k0 = 0; k0 < g->k; k0 += FWL_KB) {
        const ptrdiff_t kb = FC_MIN((ptrdiff_t)FWL_KB, g->k - k0);
        for (ptrdiff_t t = 0; t < ckhw; ++t) /* t = (c * kh + i) * 5 + j */
            for (ptrdiff_t k = 0; k < kb; ++k)
                wp[k0 * ckhw + t * kb + k] = w[(k0 + k) * ckhw + t];
    }
    fwl_plan d;
    d.x = x; d.wp = wp; d.bias = bias; d.g = g; d.relu = relu; d.pool = pool; d.y = y;
    d.we = FC_ROUNDUP(g->wo, 2);
    d.wt = d.we + FWL_KW - 1;
    const int rc = fc_lanes_run(g->n, nt, FC_CEILDIV(g->k, (ptrdiff_t)FWL_KB),
                                sizeof(float) * (size_t)fwl_scratch_floats(g, d.we, d.wt),
                                fwl_part, &d);
    fc_free(wp);
    return rc;
}
#endif /* FC_X86_SIMD */

#define FC_TEMPLATE "fc_conv_fwd_impl.h"
#include "fc_instantiate.h"
