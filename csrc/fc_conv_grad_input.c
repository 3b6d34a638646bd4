/* fc_conv_grad_input.c - the convolution grad_input routes, for float and double. */
#include "fc_internal.h"

#if FC_X86_SIMD
#include "fc_lanes.h"

/*
 * The image-lanes route (float32, AVX-512): grad_x for layers with few input
 * channels (5 to 8; up to 4 with 16+ output channels take col2im) and 5 taps
 * per row, stride 1: LeNet's conv2 (6 <- 16 channels, 14x14).
 *
 * The implicit route gives such a layer 6 rows per micro-kernel call, lays its
 * columns on a grid padded by 4 on every side and runs all kh*kw taps of every
 * output: for 14x14 from 10x10 about 60% of its multiplies meet padding. Here
 * the 16 lanes of a vector are 16 images instead of 16 pixels, so a vector
 * holds no padding and the row taps that fall outside grad_y are skipped. Per
 * output element the arithmetic is the implicit route's: one FMA chain from
 * +0 over the taps (m, i, j) in that order (a skipped tap would have added
 * w * 0, which changes nothing finite), then + 0 as its write-out adds the
 * absent bias. So the bits are that route's (tests/test_grad_input_lanes.py).
 *
 * A task is a block of 16 images: grad_y is moved into lanes (fc_lanes.h;
 * zero columns on both sides, so column taps need no test), the outputs are
 * accumulated two columns at a time for all C channels in registers, and
 * moved back out of lanes into grad_x. Tasks own their images: nothing to merge.
 */
#define GIL_LANES FC_LANES
#define GIL_KW 5
#define GIL_MAX_C 8
/* lane scratch per thread (grad_y and grad_x of one block) kept within L2 */
#define GIL_MAX_SCRATCH (768 * 1024)
#if defined(__GNUC__) && !defined(__clang__)
#define GIL_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define GIL_UNROLL _Pragma("unroll")
#else
#define GIL_UNROLL
#endif

typedef struct {
    const float *gy, *w;
    float *gx;
    const fc_conv_geom *g;
    ptrdiff_t wt;   /* columns of the lane copy of a grad_y row */
    ptrdiff_t we;   /* columns of a grad_x row in lanes (w rounded up to a pair) */
} gil_plan;

static ptrdiff_t gil_scratch_floats(const fc_conv_geom *g, ptrdiff_t wt, ptrdiff_t we)
{
    return (g->k * g->ho * wt + g->c * g->h * we) * GIL_LANES;
}

/* Whether the lanes route takes this float32 layer (the caller checked the level). */
static int gil_fits(const fc_conv_geom *g)
{
    if (g->groups != 1 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1) return 0;
    const long max_c = FC_MIN(fc_route_override(FC_OVERRIDE_DX_LANES_MAX_C, GIL_MAX_C), GIL_MAX_C);
    if (g->kw != GIL_KW || g->c < 1 || g->c > max_c || g->n < 1 || g->h < 1 || g->w < 1)
        return 0;
    if (g->ho < 1 || g->wo < 1 || g->k < 1) return 0;
    const ptrdiff_t we = FC_ROUNDUP(g->w, 2), wt = we + GIL_KW - 1;
    /* lane copies this size stay in L2; past it the implicit route is as good */
    if ((double)gil_scratch_floats(g, wt, we) * sizeof(float) > GIL_MAX_SCRATCH) return 0;
    return 1;
}

/*
 * Output rows of one block, two columns at a time: acc[c][q] for column iw0 + q
 * collects w[m, c, i, j] * gy[m, ih + ph - i, iw0 + q + pw - j] over m, then the
 * row taps i that land inside grad_y, then the column taps j that land inside
 * it for either column. In the lane copy, column iw0 + q + pw - j is entry
 * iw0 + q + 4 - j, so one row of six vectors serves both columns and all
 * five j.
 */
#define GIL_DEF_ROWS(C)                                                                      \
    FC_TGT_AVX512 static void gil_rows_##C(const gil_plan *d, const float *gyt, float *gxt)  \
    {                                                                                        \
        const fc_conv_geom *g = d->g;                                                        \
        const ptrdiff_t kh = g->kh, khw = kh * GIL_KW, mstride = C * khw;                    \
        for (ptrdiff_t ih = 0; ih < g->h; ++ih) {                                            \
            const ptrdiff_t i_lo = FC_MAX(0, ih + g->ph - (g->ho - 1));                      \
            const ptrdiff_t i_hi = FC_MIN(kh - 1, ih + g->ph);                               \
            for (ptrdiff_t iw0 = 0; iw0 < d->we; iw0 += 2) {                                 \
                __m512 acc[C][2];                                                            \
                GIL_UNROLL for (int c = 0; c < C; ++c)                                      \
                    acc[c][0] = acc[c][1] = _mm512_setzero_ps();                             \
                /* column taps landing inside grad_y for one of the two columns */    \
                const ptrdiff_t j_lo = FC_MAX(0, iw0 + g->pw - (g->wo - 1));                 \
                const ptrdiff_t j_hi = FC_MIN(GIL_KW - 1, iw0 + 1 + g->pw);                  \
                for (ptrdiff_t m = 0; m < g->k; ++m) {                                       \
                    for (ptrdiff_t i = i_lo; i <= i_hi; ++i) {                               \
                        const float *row = gyt + ((m * g->ho + ih + g->ph - i) * d->wt + iw0) \
                                                     * GIL_LANES;                             \
                        const float *wm = d->w + m * mstride + i * GIL_KW;                   \
                        if (j_lo == 0 && j_hi == GIL_KW - 1) {                               \
                            __m512 v[6];                                                     \
                            GIL_UNROLL for (int k = 0; k < 6; ++k)                          \
                                v[k] = _mm512_load_ps(row + k * GIL_LANES);                  \
                            GIL_UNROLL for (int j = 0; j < GIL_KW; ++j)                     \
                                GIL_UNROLL for (int c = 0; c < C; ++c) {                    \
                                    const __m512 wb = _mm512_set1_ps(wm[c * khw + j]);       \
                                    acc[c][0] = _mm512_fmadd_ps(wb, v[4 - j], acc[c][0]);    \
                                    acc[c][1] = _mm512_fmadd_ps(wb, v[5 - j], acc[c][1]);    \
                                }                                                            \
                        } else { /* a border pair: the taps on padding are skipped */        \
                            for (ptrdiff_t j = j_lo; j <= j_hi; ++j) {                       \
                                const __m512 v0 = _mm512_load_ps(row + (4 - j) * GIL_LANES); \
                                const __m512 v1 = _mm512_load_ps(row + (5 - j) * GIL_LANES); \
                                GIL_UNROLL for (int c = 0; c < C; ++c) {                    \
                                    const __m512 wb = _mm512_set1_ps(wm[c * khw + j]);       \
                                    acc[c][0] = _mm512_fmadd_ps(wb, v0, acc[c][0]);          \
                                    acc[c][1] = _mm512_fmadd_ps(wb, v1, acc[c][1]);          \
                                }                                                            \
                            }                                                                \
                        }                                                                    \
                    }                                                                        \
                }                                                                            \
                const __m512 zero = _mm512_setzero_ps();                                     \
                GIL_UNROLL for (int c = 0; c < C; ++c) {                                     \
                    float *o = gxt + ((c * g->h + ih) * d->we + iw0) * GIL_LANES;            \
                    _mm512_store_ps(o, _mm512_add_ps(acc[c][0], zero));                      \
                    _mm512_store_ps(o + GIL_LANES, _mm512_add_ps(acc[c][1], zero));          \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
GIL_DEF_ROWS(1)
GIL_DEF_ROWS(2)
GIL_DEF_ROWS(3)
GIL_DEF_ROWS(4)
GIL_DEF_ROWS(5)
GIL_DEF_ROWS(6)
GIL_DEF_ROWS(7)
GIL_DEF_ROWS(8)

typedef void (*gil_rows_fn)(const gil_plan *, const float *, float *);
static const gil_rows_fn gil_rows[GIL_MAX_C + 1] = {
    NULL, gil_rows_1, gil_rows_2, gil_rows_3, gil_rows_4,
    gil_rows_5, gil_rows_6, gil_rows_7, gil_rows_8};

/* One block of 16 images: grad_y's rows into lanes (column ow at entry
 * ow + 4 - pw, fc_lanes.h), the products, then out of lanes into grad_x. */
static void gil_block(const void *plan, ptrdiff_t n0, int nb, float *buf)
{
    const gil_plan *d = (const gil_plan *)plan;
    const fc_conv_geom *g = d->g;
    const ptrdiff_t gyt_floats = g->k * g->ho * d->wt * GIL_LANES;
    const ptrdiff_t img = g->k * g->ho * g->wo, chw = g->c * g->h * g->w;
    fc_lanes_pack(d->gy + n0 * img, img, nb, g->k * g->ho, g->wo, GIL_KW - 1 - g->pw, d->wt,
                  buf);
    gil_rows[g->c](d, buf, buf + gyt_floats);
    fc_lanes_unpack(buf + gyt_floats, g->c * g->h, g->w, d->we, chw, nb, d->gx + n0 * chw);
}

static int gil_grad_input(const float *gy, const float *w, const fc_conv_geom *g, int nt,
                          float *gx)
{
    gil_plan d;
    d.gy = gy; d.w = w; d.g = g; d.gx = gx;
    d.we = FC_ROUNDUP(g->w, 2);
    d.wt = d.we + GIL_KW - 1;
    return fc_lanes_run(g->n, nt, sizeof(float) * (size_t)gil_scratch_floats(g, d.wt, d.we),
                        gil_block, &d);
}
#endif /* FC_X86_SIMD */

#define FC_TEMPLATE "fc_conv_grad_input_impl.h"
#include "fc_instantiate.h"
