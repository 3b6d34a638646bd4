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
 * A task is a block of 16 images (or its share of the rows, gil_part): grad_y
 * is moved into lanes (fc_lanes.h), the outputs are accumulated up to 4
 * columns at a time for all C channels in registers, and moved back out of
 * lanes into grad_x. Tasks own their outputs: nothing to merge.
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
    const float *gy;
    const float *wp;  /* the weights as wp[((m * kh + i) * GIL_KW + j) * C + c] */
    float *gx;
    const fc_conv_geom *g;
} gil_plan;

/* lane copies of one block's grad_y and grad_x */
static ptrdiff_t gil_scratch_floats(const fc_conv_geom *g)
{
    return (g->k * g->ho * g->wo + g->c * g->h * g->w) * GIL_LANES;
}

/* Whether the lanes route takes this float32 layer (the caller checked the level). */
static int gil_fits(const fc_conv_geom *g)
{
    if (g->groups != 1 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1) return 0;
    const long max_c = FC_MIN(fc_route_override(FC_OVERRIDE_DX_LANES_MAX_C, GIL_MAX_C), GIL_MAX_C);
    if (g->kw != GIL_KW || g->c < 1 || g->c > max_c || g->n < 1 || g->h < 1 || g->w < 1)
        return 0;
    if (g->ho < 1 || g->wo < 1 || g->k < 1) return 0;
    /* lane copies this size stay in L2; past it the implicit route is as good */
    if ((double)gil_scratch_floats(g) * sizeof(float) > GIL_MAX_SCRATCH)
        return 0;
    return 1;
}

/*
 * The products of one output row ih, a block of Q columns from iw0:
 * acc[c][q] for column iw0 + q collects w[m, c, i, j] * gy[m, ih + ph - i,
 * iw0 + q + pw - j] over m, then the row taps i that land inside grad_y
 * (i_lo..i_hi), then the column taps j that do. In the lane copy that grad_y
 * column is entry iw0 + 4 + (q - j), so Q + 4 vectors of a row serve the
 * block, and each broadcast weight serves its Q columns. The weights are
 * packed (m, i, j, c)-major: a row's C x 5 of them at constant offsets.
 *
 * Which taps land inside grad_y depends only on d = q - j: in a block of the
 * 4-wide left border (iw0 = -pw) they are d >= 0, in the right border's
 * (iw0 = wo - pw) d < 0, and in between every tap lands inside. GIL_BLOCK is
 * told that range [DLO, DHI) at compile time, so a border block runs exactly
 * the taps that meet grad_y (about 40% of the full convolution's for LeNet's
 * 14 columns from 10) with no test in its loop. Columns of a border block
 * outside grad_x (iw0 + q < 0 or >= w, when pw > 0) are computed, not stored.
 */
#define GIL_BLOCK(C, Q, DLO, DHI)                                                            \
    do {                                                                                     \
        if (iw0 + (Q) <= 0 || iw0 >= g->w) break; /* wholly outside grad_x */               \
        __m512 acc[C][Q];                                                                    \
        GIL_UNROLL for (int c = 0; c < C; ++c)                                               \
            GIL_UNROLL for (int q = 0; q < Q; ++q) acc[c][q] = zero;                         \
        for (ptrdiff_t m = 0; m < g->k; ++m) {                                               \
            /* column iw0 + pw (d = 0) of grad_y row (m, ih + ph - i) */                     \
            const float *row = gyt + ((m * g->ho + ih + g->ph - i_lo) * g->wo + iw0 + g->pw) \
                                         * GIL_LANES;                                        \
            const float *wm = d->wp + (m * g->kh + i_lo) * GIL_KW * C;                       \
            for (ptrdiff_t i = i_lo; i <= i_hi; ++i, row -= rstride, wm += GIL_KW * C)       \
                GIL_UNROLL for (int j = 0; j < GIL_KW; ++j)                                  \
                    GIL_UNROLL for (int c = 0; c < C; ++c) {                                 \
                        const __m512 wb = _mm512_set1_ps(wm[j * C + c]);                     \
                        GIL_UNROLL for (int q = 0; q < Q; ++q)                               \
                            if (q - j >= (DLO) && q - j < (DHI))                             \
                                acc[c][q] = _mm512_fmadd_ps(                                 \
                                    wb, _mm512_load_ps(row + (q - j) * GIL_LANES), acc[c][q]); \
                    }                                                                        \
        }                                                                                    \
        /* + 0: the implicit route's write-out adds the absent bias */                       \
        GIL_UNROLL for (int q = 0; q < Q; ++q) {                                             \
            if (iw0 + q < 0 || iw0 + q >= g->w) continue;                                    \
            GIL_UNROLL for (int c = 0; c < C; ++c)                                           \
                _mm512_store_ps(gxt + ((c * g->h + ih) * g->w + iw0 + q) * GIL_LANES,        \
                                _mm512_add_ps(acc[c][q], zero));                             \
        }                                                                                    \
    } while (0)

/*
 * The same for any layer the route takes (a padding past 4, or fewer than 4
 * grad_y columns, has no such borders): blocks of Q columns from 0, the taps
 * of each (j, q) tested at run time.
 */
#define GIL_BLOCK_ANY(C, Q)                                                                  \
    do {                                                                                     \
        const ptrdiff_t ncols = FC_MIN((ptrdiff_t)Q, g->w - iw0);                            \
        /* tap j lands inside grad_y for columns q in [qlo[j], qhi[j]) */                    \
        ptrdiff_t qlo[GIL_KW], qhi[GIL_KW];                                                  \
        for (int j = 0; j < GIL_KW; ++j) {                                                   \
            qlo[j] = FC_MAX(0, j - g->pw - iw0);                                             \
            qhi[j] = FC_MIN(ncols, g->wo + j - g->pw - iw0);                                 \
        }                                                                                    \
        __m512 acc[C][Q];                                                                    \
        GIL_UNROLL for (int c = 0; c < C; ++c)                                               \
            GIL_UNROLL for (int q = 0; q < Q; ++q) acc[c][q] = zero;                         \
        for (ptrdiff_t m = 0; m < g->k; ++m) {                                               \
            const float *row = gyt + ((m * g->ho + ih + g->ph - i_lo) * g->wo + iw0 + g->pw) \
                                         * GIL_LANES;                                        \
            const float *wm = d->wp + (m * g->kh + i_lo) * GIL_KW * C;                       \
            for (ptrdiff_t i = i_lo; i <= i_hi; ++i, row -= rstride, wm += GIL_KW * C)       \
                GIL_UNROLL for (int j = 0; j < GIL_KW; ++j)                                  \
                    GIL_UNROLL for (int q = 0; q < Q; ++q) {                                 \
                        if (q < qlo[j] || q >= qhi[j]) continue;                             \
                        const __m512 v = _mm512_load_ps(row + (q - j) * GIL_LANES);          \
                        GIL_UNROLL for (int c = 0; c < C; ++c) acc[c][q] =                   \
                            _mm512_fmadd_ps(_mm512_set1_ps(wm[j * C + c]), v, acc[c][q]);    \
                    }                                                                        \
        }                                                                                    \
        GIL_UNROLL for (int q = 0; q < Q; ++q) {                                             \
            if (q >= ncols) continue;                                                        \
            GIL_UNROLL for (int c = 0; c < C; ++c)                                           \
                _mm512_store_ps(gxt + ((c * g->h + ih) * g->w + iw0 + q) * GIL_LANES,        \
                                _mm512_add_ps(acc[c][q], zero));                             \
        }                                                                                    \
    } while (0)

/* Whether every block of a row is a border block or lands wholly inside
 * (GIL_BLOCK): borders at most 4 wide, and grad_y at least 4 columns wide. */
static int gil_banded(const fc_conv_geom *g)
{
    return g->pw <= GIL_KW - 1 && g->pw_end <= GIL_KW - 1 && g->wo >= GIL_KW - 1;
}

/*
 * All rows of one block of images, C input channels. QB columns per border
 * block (4 = the border's width, or 2: two blocks of it) and QM per inner
 * block keep C x Q accumulators within the registers; an inner remainder of
 * fewer than QM columns gets one narrower block.
 */
#define GIL_DEF_ROWS(C, QB, QM)                                                              \
    FC_TGT_AVX512 static void gil_rows_##C(const gil_plan *d, const float *gyt, float *gxt,  \
                                           ptrdiff_t ih0, ptrdiff_t ih1)                     \
    {                                                                                        \
        const fc_conv_geom *g = d->g;                                                        \
        const ptrdiff_t rstride = g->wo * GIL_LANES;                                         \
        const __m512 zero = _mm512_setzero_ps();                                             \
        const int banded = gil_banded(g);                                                    \
        for (ptrdiff_t ih = ih0; ih < ih1; ++ih) {                                           \
            const ptrdiff_t i_lo = FC_MAX(0, ih + g->ph - (g->ho - 1));                      \
            const ptrdiff_t i_hi = FC_MIN(g->kh - 1, ih + g->ph);                            \
            ptrdiff_t iw0;                                                                   \
            if (!banded) {                                                                   \
                for (iw0 = 0; iw0 < g->w; iw0 += QM) GIL_BLOCK_ANY(C, QM);                   \
                continue;                                                                    \
            }                                                                                \
            /* left border: d = q - j >= -(iw0 + pw) */                                      \
            iw0 = -g->pw;                                                                    \
            if (QB == 4) {                                                                   \
                GIL_BLOCK(C, QB, 0, QB);                                                     \
            } else {                                                                         \
                GIL_BLOCK(C, QB, 0, QB);                                                     \
                iw0 += QB;                                                                   \
                GIL_BLOCK(C, QB, -QB, QB);                                                   \
            }                                                                                \
            /* inside: every tap */                                                          \
            const ptrdiff_t end = g->wo - g->pw;                                             \
            for (iw0 = GIL_KW - 1 - g->pw; iw0 + QM <= end; iw0 += QM)                       \
                GIL_BLOCK(C, QM, 1 - GIL_KW, QM);                                            \
            switch (end - iw0) {                                                             \
            case 1: GIL_BLOCK(C, 1, 1 - GIL_KW, 1); break;                                   \
            case 2: GIL_BLOCK(C, 2, 1 - GIL_KW, 2); break;                                   \
            case 3: GIL_BLOCK(C, 3, 1 - GIL_KW, 3); break;                                   \
            default: break;                                                                  \
            }                                                                                \
            /* right border: d < wo - (iw0 + pw) */                                          \
            iw0 = end;                                                                       \
            if (QB == 4) {                                                                   \
                GIL_BLOCK(C, QB, 1 - GIL_KW, 0);                                             \
            } else {                                                                         \
                GIL_BLOCK(C, QB, 1 - GIL_KW, 0);                                             \
                iw0 += QB;                                                                   \
                GIL_BLOCK(C, QB, 1 - GIL_KW, -QB);                                           \
            }                                                                                \
        }                                                                                    \
    }
GIL_DEF_ROWS(1, 4, 4)
GIL_DEF_ROWS(2, 4, 4)
GIL_DEF_ROWS(3, 4, 4)
GIL_DEF_ROWS(4, 4, 4)
GIL_DEF_ROWS(5, 4, 4)
GIL_DEF_ROWS(6, 4, 4)
GIL_DEF_ROWS(7, 2, 3)
GIL_DEF_ROWS(8, 2, 3)

typedef void (*gil_rows_fn)(const gil_plan *, const float *, float *, ptrdiff_t, ptrdiff_t);
static const gil_rows_fn gil_rows[GIL_MAX_C + 1] = {
    NULL, gil_rows_1, gil_rows_2, gil_rows_3, gil_rows_4,
    gil_rows_5, gil_rows_6, gil_rows_7, gil_rows_8};

/*
 * One task: grad_x rows [ih0, ih1) of the block of nb images from n0. The
 * grad_y rows they read go into lanes (fc_lanes.h), then the products, then
 * the rows out of lanes into grad_x. No tap reads padding, so the lane copies
 * have none: a channel's plane (or its rows of the task) is one run of values,
 * moved in 16 x 16 transposes that a row of 10 would fill only to 10.
 */
static void gil_task(const gil_plan *d, ptrdiff_t n0, int nb, ptrdiff_t ih0, ptrdiff_t ih1,
                     float *buf)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t plane = g->ho * g->wo, hw = g->h * g->w;
    const ptrdiff_t img = g->k * plane, chw = g->c * hw;
    float *gyt = buf, *gxt = buf + img * GIL_LANES;
    const ptrdiff_t r_lo = FC_MAX(0, ih0 + g->ph - (g->kh - 1)), r_hi = FC_MIN(g->ho, ih1 + g->ph);
    if (r_lo == 0 && r_hi == g->ho) {
        fc_lanes_pack(d->gy + n0 * img, img, nb, g->k, plane, 0, plane, gyt);
    } else if (r_lo < r_hi) {
        const ptrdiff_t len = (r_hi - r_lo) * g->wo;
        for (ptrdiff_t m = 0; m < g->k; ++m) {
            const ptrdiff_t off = m * plane + r_lo * g->wo;
            fc_lanes_pack(d->gy + n0 * img + off, img, nb, 1, len, 0, len, gyt + off * GIL_LANES);
        }
    }
    gil_rows[g->c](d, gyt, gxt, ih0, ih1);
    if (ih0 == 0 && ih1 == g->h) {
        fc_lanes_unpack(gxt, g->c, hw, hw, chw, nb, d->gx + n0 * chw);
    } else {
        const ptrdiff_t len = (ih1 - ih0) * g->w;
        for (ptrdiff_t c = 0; c < g->c; ++c) {
            const ptrdiff_t off = c * hw + ih0 * g->w;
            fc_lanes_unpack(gxt + off * GIL_LANES, 1, len, len, chw, nb, d->gx + n0 * chw + off);
        }
    }
}

/* fc_lanes_run's task: part `part` of `parts` of the block's grad_x rows (the
 * blocks share out unevenly among the threads: 16 images on 2 threads take
 * 0.022 ms instead of 0.065 on the implicit route) */
static void gil_part(const void *plan, ptrdiff_t n0, int nb, ptrdiff_t part, ptrdiff_t parts,
                     float *buf)
{
    const gil_plan *d = (const gil_plan *)plan;
    const ptrdiff_t h = d->g->h;
    gil_task(d, n0, nb, part * h / parts, (part + 1) * h / parts, buf);
}

/*
 * A last partial block from 6 images on: a block costs 34 us for LeNet's conv2
 * at one thread, whatever its images, where the implicit route takes 6.4 us an
 * image.
 */
#define GIL_MIN_TAIL 6

static int gil_grad_input(const float *gy, const float *w, const fc_conv_geom *g, int nt,
                          float *gx)
{
    const ptrdiff_t c = g->c, khw = g->kh * GIL_KW;
    float *wp = (float *)fc_malloc(sizeof(float) * (size_t)(g->k * c * khw));
    if (!wp) return FC_ENOMEM;
    for (ptrdiff_t m = 0; m < g->k; ++m)
        for (ptrdiff_t t = 0; t < khw; ++t) /* t = i * GIL_KW + j */
            for (ptrdiff_t ci = 0; ci < c; ++ci)
                wp[(m * khw + t) * c + ci] = w[(m * c + ci) * khw + t];
    gil_plan d;
    d.gy = gy; d.wp = wp; d.g = g; d.gx = gx;
    const int rc = fc_lanes_run(g->n, nt, g->h, sizeof(float) * (size_t)gil_scratch_floats(g),
                                gil_part, &d);
    fc_free(wp);
    return rc;
}
#endif /* FC_X86_SIMD */

#define FC_TEMPLATE "fc_conv_grad_input_impl.h"
#include "fc_instantiate.h"
