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

#if FC_X86_SIMD
#include "fc_lanes.h"

/*
 * The image-lanes route (float32, AVX-512) for layers of small images: the
 * dot route's small layers, such as LeNet's conv2 (6 -> 16 channels, 5x5,
 * 10x10 from 14x14), whose dot route lays grad_y on the input's column grid,
 * so that 44 of every 144 products per output plane fall on junk columns or
 * the vector tail; and the packed route's up to GWL_MAX_WEIGHTS weights per
 * group. Here the 16 lanes of a vector are 16 images: every product is a term
 * of the sum.
 *
 *   gw[m, (c, i, j)] = sum over images, then lanes, of
 *                      sum_(oh, ow) G[m][oh, ow] * X[c][oh*sh + i*dh, ow*sw + j*dw]
 *
 * with G (grad_y) and X (x, zero-padded) moved into lanes per block of 16
 * images (fc_lanes.h; a short last block has zero lanes, which add +0). A
 * register tile of mt output channels x nt taps (3 or 4 x 5 or 6: at most 24
 * zmm accumulators) runs the pixel loop innermost, one load of G per channel
 * and one of X per tap for mt * nt FMAs.
 *
 * Bits: a weight's lane l is one FMA chain from +0 over the pixels (oh, ow)
 * of a block; the blocks of a chunk are added in order (a chain that ran on
 * through the chunk lost a digit by 2,048 images: 1.7e-6 against float64 for
 * LeNet conv1, the dot route 2.2e-7); chunks (fixed runs of blocks, a
 * function of the batch size only) are added in chunk order, then the 16
 * lanes are summed by one fixed reduction. Which thread ran a task never enters, so every
 * thread count gives the same bits (tests/test_grad_weight_lanes.py). The
 * bias is the same with G summed alone.
 */
#define GWL_MT_MAX 4
#define GWL_NT_MAX 6
#define GWL_MAX_SCRATCH (1024 * 1024) /* lane copy of a block's x, per thread */
/* Chunks of blocks, partials merged in order. Two, not the dot route's 8: a
 * chunk's partials are 16 lanes per weight (150 KiB for conv2), and reading
 * fewer of them cut conv2 from 0.160 to 0.154 ms at one thread and from 0.091
 * to 0.084 at two; more threads split a chunk's register tiles instead. */
#define GWL_CHUNKS 2
#define GWL_MIN_REM 12                /* a last block's fewest images (gwl_images) */
/* Weights per group, measured against the packed route up to 64 -> 64 3x3 on
 * 7x7 (1.22 -> 1.13 ms at batch 64, one thread; 8 -> 32 5x5 on 28x28: 4.74 ->
 * 2.83); past it the partials (16 lanes per weight) outgrow L2. Layers whose
 * images outgrow GWL_MAX_SCRATCH stay packed whatever their weights. */
#define GWL_MAX_WEIGHTS 40960
#if defined(__GNUC__) && !defined(__clang__)
#define GWL_UNROLL _Pragma("GCC unroll 8")
#elif defined(__clang__)
#define GWL_UNROLL _Pragma("unroll")
#else
#define GWL_UNROLL
#endif

typedef struct {
    const float *gy, *x;
    const fc_conv_geom *g;
    int want_bias, mt, nt;     /* register tile: mt output channels x nt taps */
    ptrdiff_t cg, mg, ckk;
    ptrdiff_t hp, wp, hw;      /* padded input rows / columns; output pixels */
    ptrdiff_t mpad, ldp;       /* rows of a group's partials (mg up to mt); taps (ckk up to nt) */
    ptrdiff_t tiles_g, ntile;  /* register tiles per group; in all */
    ptrdiff_t nblk, nch;       /* blocks of 16 images; chunks of blocks */
    ptrdiff_t nsplit, ntask;   /* tile ranges per chunk; tasks (chunk, tile range) */
    ptrdiff_t part;            /* floats of one chunk's partials: weights, then bias */
    const ptrdiff_t *toff;     /* ldp taps: offset of tap (c, i, j) in X, in floats */
    float *parts;
} gwl_plan;

/* One call of a register tile: a block's G rows against a run of taps. */
typedef struct {
    const float *gt;           /* G rows of the tile, gstride floats apart */
    ptrdiff_t gstride;
    const float *xb;           /* X of the tile's group */
    const ptrdiff_t *toff;     /* the run's taps: offsets in X */
    ptrdiff_t ho, wo, xrow, xcol; /* pixels; X floats per output row, column */
    int first;                 /* a chunk's first block: its sums are stored, not added */
    float *out;                /* partials of tap t, row r: out + (r * ldo + t) * 16 */
    ptrdiff_t ldo;
    float *bias;               /* or NULL: partial bias of row r at bias + r * 16 */
    int brows;                 /* rows of the tile that are output channels */
} gwl_args;

/*
 * acc[r][t] += sum over the pixels of G row r * X at pixel + toff[t], and
 * with `bias` the rows' sums of G alone (the same pixel order, in registers
 * beside the tile: the add pipes are idle while the FMAs run). mt, nt and
 * with_bias are constants where it is inlined, so the accumulators are
 * registers.
 */
FC_ALWAYS_INLINE FC_TGT_AVX512 void gwl_tile_body(const int mt, const int nt, const int with_bias,
                                                  const gwl_args *a)
{
    __m512 acc[GWL_MT_MAX][GWL_NT_MAX], bs[GWL_MT_MAX];
    ptrdiff_t o[GWL_NT_MAX];
    const ptrdiff_t gstride = a->gstride, ho = a->ho, wo = a->wo, xrow = a->xrow, xcol = a->xcol;
    const ptrdiff_t ldo = a->ldo;
    float *out = a->out;
    GWL_UNROLL
    for (int t = 0; t < nt; ++t) o[t] = a->toff[t];
    GWL_UNROLL
    for (int r = 0; r < mt; ++r) {
        GWL_UNROLL
        for (int t = 0; t < nt; ++t) acc[r][t] = _mm512_setzero_ps();
        if (with_bias) bs[r] = _mm512_setzero_ps();
    }
    const float *gp = a->gt;
    for (ptrdiff_t oh = 0; oh < ho; ++oh) {
        const float *xp = a->xb + oh * xrow;
        for (ptrdiff_t ow = 0; ow < wo; ++ow, gp += 16, xp += xcol) {
            __m512 gv[GWL_MT_MAX];
            GWL_UNROLL
            for (int r = 0; r < mt; ++r) {
                gv[r] = _mm512_load_ps(gp + r * gstride);
                if (with_bias) bs[r] = _mm512_add_ps(bs[r], gv[r]);
            }
            GWL_UNROLL
            for (int t = 0; t < nt; ++t) {
                const __m512 xv = _mm512_load_ps(xp + o[t]);
                GWL_UNROLL
                for (int r = 0; r < mt; ++r) acc[r][t] = _mm512_fmadd_ps(gv[r], xv, acc[r][t]);
            }
        }
    }
    /* the block's sums into the chunk's (its first block: they are the chunk's) */
    GWL_UNROLL
    for (int r = 0; r < mt; ++r) {
        GWL_UNROLL
        for (int t = 0; t < nt; ++t) {
            float *o_rt = out + (r * ldo + t) * 16;
            _mm512_store_ps(o_rt, a->first ? acc[r][t]
                                           : _mm512_add_ps(_mm512_load_ps(o_rt), acc[r][t]));
        }
        if (with_bias && r < a->brows)
            _mm512_store_ps(a->bias + r * 16,
                            a->first ? bs[r]
                                     : _mm512_add_ps(_mm512_load_ps(a->bias + r * 16), bs[r]));
    }
}

typedef void (*gwl_tile_fn)(const gwl_args *);
#define GWL_TILE(MT, NT)                                                                    \
    FC_TGT_AVX512 static void gwl_tile_##MT##x##NT(const gwl_args *a)                       \
    {                                                                                       \
        if (a->bias) gwl_tile_body(MT, NT, 1, a);                                           \
        else gwl_tile_body(MT, NT, 0, a);                                                   \
    }
GWL_TILE(3, 5)
GWL_TILE(3, 6)
GWL_TILE(4, 5)
GWL_TILE(4, 6)

static gwl_tile_fn gwl_tile(int mt, int nt)
{
    if (mt == 3) return nt == 5 ? gwl_tile_3x5 : gwl_tile_3x6;
    return nt == 5 ? gwl_tile_4x5 : gwl_tile_4x6;
}

/* Floats of a task's scratch: X of one block, then one tile's rows of G. */
static ptrdiff_t gwl_scratch_floats(const fc_conv_geom *g, ptrdiff_t hp, ptrdiff_t wp)
{
    return (g->c * hp * wp + (ptrdiff_t)GWL_MT_MAX * g->ho * g->wo) * FC_LANES;
}

/* Block n0 .. n0 + nb of x into lanes, every channel zero-padded: X[c][y][x][lane]. */
FC_TGT_AVX512 static void gwl_pack_x(const gwl_plan *d, ptrdiff_t n0, int nb, float *xb)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t hwx = g->h * g->w, row = d->wp * FC_LANES;
    for (ptrdiff_t c = 0; c < g->c; ++c) {
        float *xc = xb + c * d->hp * row;
        memset(xc, 0, sizeof(float) * (size_t)(g->ph * row));
        fc_lanes_pack(d->x + (n0 * g->c + c) * hwx, g->c * hwx, nb, g->h, g->w, g->pw, d->wp,
                      xc + g->ph * row);
        memset(xc + (g->ph + g->h) * row, 0, sizeof(float) * (size_t)(g->ph_end * row));
    }
}

/* 16 columns x0.. of the 16 lanes' runs, moved into lanes at gt + x0 * 16
 * (cols of them; the columns past cols and the lanes from nb read as 0). The
 * column count is a constant where it is inlined with cols = 16, so the 16
 * vectors stay in registers. */
FC_ALWAYS_INLINE FC_TGT_AVX512 void gwl_move16(const float *src, ptrdiff_t img, int nb,
                                               ptrdiff_t x0, ptrdiff_t cols, float *gt)
{
    const __mmask16 m = fc_lanes_mask(cols);
    __m512 v[16];
    for (int lane = 0; lane < 16; ++lane) /* a lane past nb: its mask is empty */
        v[lane] = _mm512_maskz_loadu_ps(lane < nb ? m : 0,
                                        src + (lane < nb ? lane : 0) * img + x0);
    fc_transpose16_avx512(v);
    for (ptrdiff_t c = 0; c < cols; ++c) _mm512_store_ps(gt + (x0 + c) * FC_LANES, v[c]);
}

/* gt[t * 16 + lane] = src[lane * img + t] for t < len (zero lanes from nb):
 * fc_lanes_pack for one run with no padding (whose loop over the run for pad
 * columns was a tenth of LeNet conv1's pass). */
FC_TGT_AVX512 static void gwl_pack_g(const float *src, ptrdiff_t img, int nb, ptrdiff_t len,
                                     float *gt)
{
    ptrdiff_t x0 = 0;
    for (; x0 + 16 <= len; x0 += 16) gwl_move16(src, img, nb, x0, 16, gt);
    if (x0 < len) gwl_move16(src, img, nb, x0, len - x0, gt);
}

/* Task t = (chunk, range of register tiles): every block of the chunk, into
 * the chunk's partials (the task's own rows of them). */
FC_TGT_AVX512 static void gwl_task(const gwl_plan *d, ptrdiff_t t, float *xb)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t ch = t / d->nsplit, sp = t % d->nsplit;
    const ptrdiff_t tl0 = sp * d->ntile / d->nsplit, tl1 = (sp + 1) * d->ntile / d->nsplit;
    const ptrdiff_t b0 = ch * d->nblk / d->nch, b1 = (ch + 1) * d->nblk / d->nch;
    const ptrdiff_t hw = d->hw, mt = d->mt, nt = d->nt, plane = d->hp * d->wp * FC_LANES;
    float *pc = d->parts + ch * d->part;
    float *pbias = pc + g->groups * d->mpad * d->ldp * FC_LANES;
    float *gt = xb + g->c * plane;
    const gwl_tile_fn tile = gwl_tile(d->mt, d->nt);
    for (ptrdiff_t b = b0; b < b1; ++b) {
        const ptrdiff_t n0 = b * FC_LANES;
        const int nb = (int)FC_MIN((ptrdiff_t)FC_LANES, g->n - n0);
        gwl_pack_x(d, n0, nb, xb);
        for (ptrdiff_t tl = tl0; tl < tl1; ++tl) {
            const ptrdiff_t gi = tl / d->tiles_g, m0 = (tl % d->tiles_g) * mt;
            const ptrdiff_t rows = FC_MIN(mt, d->mg - m0);
            /* the tile's rows are contiguous in grad_y: one run of rows * hw */
            gwl_pack_g(d->gy + (n0 * g->k + gi * d->mg + m0) * hw, g->k * hw, nb, rows * hw, gt);
            /* rows past the group's channels: zeros, whose sums are never read */
            memset(gt + rows * hw * FC_LANES, 0,
                   sizeof(float) * (size_t)((mt - rows) * hw * FC_LANES));
            gwl_args a;
            a.gt = gt; a.gstride = hw * FC_LANES; a.xb = xb + gi * d->cg * plane;
            a.ho = g->ho; a.wo = g->wo; a.xrow = g->sh * d->wp * FC_LANES;
            a.xcol = g->sw * FC_LANES; a.first = b == b0; a.ldo = d->ldp;
            a.brows = (int)rows;
            float *out = pc + (gi * d->mpad + m0) * d->ldp * FC_LANES;
            for (ptrdiff_t t0 = 0; t0 < d->ldp; t0 += nt) {
                a.toff = d->toff + t0;
                a.out = out + t0 * FC_LANES;
                /* the bias beside the first run of taps */
                a.bias = d->want_bias && t0 == 0 ? pbias + (gi * d->mg + m0) * FC_LANES : NULL;
                tile(&a);
            }
        }
    }
}

/* n <= 16 outputs from their partial vectors (chunk c's at src + i * FC_LANES + c * part):
 * the chunks added in order, then each output's 16 lanes by one fixed tree,
 * 16 outputs at a time (a transpose puts output i in lane i). */
FC_TGT_AVX512 static void gwl_reduce16(const float *src, ptrdiff_t part, ptrdiff_t nch, int n,
                                       float *dst)
{
    __m512 v[16];
    for (int i = 0; i < 16; ++i) {
        if (i >= n) {
            v[i] = _mm512_setzero_ps();
            continue;
        }
        v[i] = _mm512_load_ps(src + i * FC_LANES);
        for (ptrdiff_t ch = 1; ch < nch; ++ch)
            v[i] = _mm512_add_ps(v[i], _mm512_load_ps(src + ch * part + i * FC_LANES));
    }
    fc_transpose16_avx512(v);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) v[i] = _mm512_add_ps(v[i], v[i + w]);
    _mm512_mask_storeu_ps(dst, fc_lanes_mask(n), v[0]);
}

/* The chunks' partials added in chunk order, then each weight's 16 lanes:
 * row m of gw (m < K), or the bias (m = K). */
FC_TGT_AVX512 static void gwl_merge_row(const gwl_plan *d, ptrdiff_t m, float *gw, float *gb)
{
    const fc_conv_geom *g = d->g;
    if (m == g->k) {
        const float *pbias = d->parts + g->groups * d->mpad * d->ldp * FC_LANES;
        for (ptrdiff_t m0 = 0; m0 < g->k; m0 += 16)
            gwl_reduce16(pbias + m0 * FC_LANES, d->part, d->nch,
                         (int)FC_MIN((ptrdiff_t)16, g->k - m0), gb + m0);
        return;
    }
    const ptrdiff_t gi = m / d->mg;
    const float *row = d->parts + (gi * d->mpad + m % d->mg) * d->ldp * FC_LANES;
    for (ptrdiff_t k0 = 0; k0 < d->ckk; k0 += 16)
        gwl_reduce16(row + k0 * FC_LANES, d->part, d->nch, (int)FC_MIN((ptrdiff_t)16, d->ckk - k0),
                     gw + m * d->ckk + k0);
}

static void gwl_task_run(const void *d, ptrdiff_t t, float *xb)
{
    gwl_task((const gwl_plan *)d, t, xb);
}

static void gwl_merge(const gwl_plan *d, int nt, float *gw, float *gb)
{
    const ptrdiff_t rows = d->g->k + (gb != NULL);
    /* a team only where each thread has a few thousand weights to reduce */
    if (rows * d->ckk < 2048 * (ptrdiff_t)nt) nt = 1;
    ptrdiff_t m;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (m = 0; m < rows; ++m) gwl_merge_row(d, m, gw, gb);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

static int gwl_run(const float *gy, const float *x, const fc_conv_geom *g, int nt, float *gw,
                   float *gb)
{
    gwl_plan d;
    d.gy = gy; d.x = x; d.g = g; d.want_bias = gb != NULL;
    d.cg = g->c / g->groups; d.mg = g->k / g->groups; d.ckk = d.cg * g->kh * g->kw;
    d.hp = g->h + g->ph + g->ph_end; d.wp = g->w + g->pw + g->pw_end; d.hw = g->ho * g->wo;
    /* the tile that pads the fewest rows (6 channels: 3, not 4), then taps (25: 5) */
    d.mt = FC_ROUNDUP(d.mg, (ptrdiff_t)3) < FC_ROUNDUP(d.mg, (ptrdiff_t)4) ? 3 : 4;
    d.nt = FC_ROUNDUP(d.ckk, (ptrdiff_t)5) < FC_ROUNDUP(d.ckk, (ptrdiff_t)6) ? 5 : 6;
    d.mpad = FC_ROUNDUP(d.mg, (ptrdiff_t)d.mt);
    d.ldp = FC_ROUNDUP(d.ckk, (ptrdiff_t)d.nt);
    d.tiles_g = d.mpad / d.mt;
    d.ntile = g->groups * d.tiles_g;
    d.nblk = FC_CEILDIV(g->n, (ptrdiff_t)FC_LANES);
    d.nch = FC_MIN(d.nblk, (ptrdiff_t)GWL_CHUNKS);
    /* more tasks than chunks only to feed every thread: a tile's sums do not
     * depend on which task ran it */
    d.nsplit = FC_MIN(d.ntile, FC_CEILDIV((ptrdiff_t)nt, d.nch));
    d.ntask = d.nch * d.nsplit;
    d.part = (g->groups * d.mpad * d.ldp + g->k) * FC_LANES;
    if (nt > d.ntask) nt = (int)d.ntask;

    int rc = FC_OK;
    ptrdiff_t *toff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)d.ldp);
    d.parts = (float *)fc_malloc(sizeof(float) * (size_t)(d.nch * d.part));
    if (!toff || !d.parts) { rc = FC_ENOMEM; goto done; }
    for (ptrdiff_t c = 0, k = 0; c < d.cg; ++c)
        for (ptrdiff_t i = 0; i < g->kh; ++i)
            for (ptrdiff_t j = 0; j < g->kw; ++j, ++k)
                toff[k] = ((c * d.hp + i * g->dh) * d.wp + j * g->dw) * FC_LANES;
    /* taps past the patch read the last tap again; their sums are never read */
    for (ptrdiff_t k = d.ckk; k < d.ldp; ++k) toff[k] = toff[d.ckk - 1];
    d.toff = toff;

    fc_simd_ran(FC_SIMD_AVX512);
    const size_t scratch = sizeof(float) * (size_t)gwl_scratch_floats(g, d.hp, d.wp);
    if (fc_scratch_run(0, d.ntask, nt, scratch, gwl_task_run, &d) != FC_OK) {
        rc = FC_ENOMEM;
        goto done;
    }
    gwl_merge(&d, nt, gw, gb);
done:
    free(toff);
    fc_free(d.parts);
    return rc;
}

/* Whether the lanes route takes this float32 call. */
static int gwl_fits(const fc_conv_geom *g)
{
    const long force = fc_route_override(FC_OVERRIDE_DW_LANES, -1);
    if (force == 0 || fc_simd_dispatch() != FC_SIMD_AVX512) return 0;
    if (g->n < 1 || g->ho < 1 || g->wo < 1 || g->k < 1 || g->c < 1) return 0;
    if ((g->k / g->groups) * (g->c / g->groups) * g->kh * g->kw > GWL_MAX_WEIGHTS) return 0;
    const ptrdiff_t hp = g->h + g->ph + g->ph_end, wp = g->w + g->pw + g->pw_end;
    if ((double)gwl_scratch_floats(g, hp, wp) * sizeof(float) > GWL_MAX_SCRATCH)
        return 0;
    /* partials: 16 lanes per weight (rows and taps padded to the tile) per
     * chunk; past 64 MiB (many groups) the dot or packed route instead */
    const double rows = (double)g->groups * FC_ROUNDUP(g->k / g->groups, (ptrdiff_t)3);
    const double taps = (double)FC_ROUNDUP((g->c / g->groups) * g->kh * g->kw, (ptrdiff_t)5);
    if ((rows * taps + g->k) * FC_LANES * sizeof(float) * GWL_CHUNKS > 64.0 * 1048576.0) return 0;
    return 1;
}

/*
 * How many of n images the lanes route takes (the rest go to the dot route,
 * and the two sums are added): whole blocks of 16, and a last partial block
 * only from 12 images on. A block costs the same whatever its images; below
 * 12 the dot route costs less for them (LeNet conv1 at 8 images: 30 us by dot,
 * 34 us by lanes; conv2 at 4: 46 and 45 us). A function of n alone, so every
 * thread count splits alike; forced on, the route takes every image.
 */
static ptrdiff_t gwl_images(ptrdiff_t n)
{
    if (fc_route_override(FC_OVERRIDE_DW_LANES, -1) > 0) return n;
    const ptrdiff_t rem = n % FC_LANES;
    return rem >= GWL_MIN_REM ? n : n - rem;
}
#endif

typedef int (*fc_gwl_f32)(const float *, const float *, const fc_conv_geom *, int, float *,
                          float *);
typedef int (*fc_gwl_f64)(const double *, const double *, const fc_conv_geom *, int, double *,
                          double *);
/* The lanes route if it takes this call (*nl of its images), else NULL. */
static fc_gwl_f32 gwl_f32(const fc_conv_geom *g, ptrdiff_t *nl)
{
#if FC_X86_SIMD
    if (gwl_fits(g) && (*nl = gwl_images(g->n)) > 0) return gwl_run;
#endif
    (void)g;
    *nl = 0;
    return NULL;
}
static fc_gwl_f64 gwl_f64(const fc_conv_geom *g, ptrdiff_t *nl)
{
    (void)g;
    *nl = 0;
    return NULL;
}

#define FC_TEMPLATE "fc_conv_grad_weight_impl.h"
#include "fc_instantiate.h"
