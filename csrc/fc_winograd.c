/*
 * fc_winograd.c - Winograd F(2x2, 5x5) convolution, float32, all three passes.
 *
 * For a 5x5, stride-1, dilation-1, ungrouped convolution each 2x2 output tile
 * is computed from the 6x6 input patch d under it as
 *
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A           (.) = element-wise
 *
 * so the 25 multiply-adds per output and input channel of the direct method
 * become 36 / 4 = 9 (2.78x fewer). The matrices come from Toom-Cook with the
 * points 0, 1, -1, 2, -2, infinity (B^T is the one F(4x4, 3x3) uses):
 *
 *   B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0     0    0 ]   A^T = [1 1  1 1  1 0]
 *         [0  4  4 -1 -1  0]       [ 1/6   1/6   1/6   1/6  1/6 ]         [0 1 -1 2 -2 1]
 *         [0 -4  4  1 -1  0]       [ 1/6  -1/6   1/6  -1/6  1/6 ]
 *         [0 -2 -1  2  1  0]       [1/24  1/12   1/6   1/3  2/3 ]
 *         [0  2 -1 -2  1  0]       [1/24 -1/12   1/6  -1/3  2/3 ]
 *         [0  4  0 -5  0  1]       [   0     0     0     0    1 ]
 *
 * Summed over input channels, the 36 transform points p give 36 independent
 * GEMMs  M[p] (K x tiles) = U[p] (K x C) . V[p] (C x tiles),  run with the
 * register-blocked micro-kernels of fc_ukernels.c.
 *
 *   forward      U from the weights (once per call). Tiles (across images) are
 *                cut into fixed blocks; a thread transforms the input tiles of
 *                a block into V, runs the 36 GEMMs into M and transforms M
 *                straight into y (bias, optional ReLU). V and M stay in L2.
 *   grad-input   the same code: for a stride-1 5x5 layer with padding p,
 *                grad_x is the convolution of grad_y with the weights flipped
 *                and channel-transposed, padding 4 - p (so p <= 4).
 *   grad-weight  dU[p] = sum over tiles of (A dY A^T)[p] (x) V[p]^T, a GEMM per
 *                point whose reduction runs over the tiles; dW = G^T dU G.
 *                Blocks are grouped into a number of chunks that depends only
 *                on the shape; each chunk owns a partial dU, and the partials
 *                are added in chunk order, so results do not depend on the
 *                thread count.
 *
 * The data transforms are plain C on lane arrays, which the compiler vectorises
 * (compiled per SIMD level, see FC_SIMD_PROC; the generic level runs plain C
 * loops for the input transform): the input and output
 * transforms run across the 16 tiles of a tile row (two rows of <= 7 tiles per
 * call, as a 14-wide output has), the grad_y transform of grad-weight across
 * 16 channels of a channels-last copy. Weight transforms are done in double
 * (they are cheap) and rounded once.
 */
#include "fc_internal.h"

#define WL 16        /* lanes of the data transforms */
#define NP 36        /* transform points per tile */
/* Two tile rows of at most WINO_PAIR_MAX tiles share one input-transform call,
 * the second in lanes WINO_PAIR_OFF.. (its patch columns start 2*OFF apart). */
#define WINO_PAIR_OFF 9
#define WINO_PAIR_MAX 7
#define WINO_BLOCK_BYTES (1 << 20) /* per-thread V + M budget: stays in the 2 MB L2 */

/* Keep short copy loops inline: GCC would turn them into memcpy calls, whose
 * overhead dominates for rows of a few floats. */
#if defined(__GNUC__) && !defined(__clang__)
#define FC_NO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FC_NO_MEMCPY
#endif

static const double WG[6][5] = {
    {1.0 / 4, 0, 0, 0, 0},
    {1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6},
    {1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 3, 2.0 / 3},
    {1.0 / 24, -1.0 / 12, 1.0 / 6, -1.0 / 3, 2.0 / 3},
    {0, 0, 0, 0, 1},
};

/* ---- micro-kernel and block choice --------------------------------------- */
/*
 * One kernel slot for all panels of a GEMM with `rows` rows and `cols`
 * columns: the one that pads least (rows to MR, cols to NR), ties to the larger
 * MR (fewer B loads per FMA). Padding rows are zeros in the packed A.
 */
static int wino_slot(const fc_kernels_f32 *kk, ptrdiff_t rows, ptrdiff_t cols)
{
    int best = -1;
    double best_cost = 0;
    for (int s = 0; s < FC_NUM_MR; ++s) {
        if (kk->mr[s] <= 0) continue;
        double cost = (double)FC_ROUNDUP(rows, kk->mr[s]) * (double)FC_ROUNDUP(cols, kk->nr[s]);
        if (best < 0 || cost < best_cost || (cost == best_cost && kk->mr[s] > kk->mr[best])) {
            best = s;
            best_cost = cost;
        }
    }
    return best;
}

/*
 * Column of the first tile of tile row j (0-based within a block) in the
 * forward's V and M buffers. Narrow rows (tw <= WINO_PAIR_MAX, transformed in
 * pairs) take 16 columns per pair, the second row right after the first:
 * every input-transform store is then one whole aligned vector, and pairs
 * never share a cache line. Wider rows are packed back to back.
 */
static ptrdiff_t wino_tile_col(ptrdiff_t j, ptrdiff_t tw)
{
    return tw <= WINO_PAIR_MAX ? (j / 2) * 16 + (j % 2) * tw : j * tw;
}

/* GEMM columns used by `rows` tile rows of tw tiles */
static ptrdiff_t wino_block_cols(ptrdiff_t rows, ptrdiff_t tw)
{
    return tw <= WINO_PAIR_MAX ? FC_CEILDIV(rows, 2) * 16 : rows * tw;
}

/*
 * Forward blocking: a block is `rows` whole tile rows (tw tiles each, across
 * images), its tiles are GEMM columns rounded up to the kernel width. Picks the
 * kernel slot and rows per block that waste least (padded output channels and
 * columns) within the per-thread buffer budget.
 */
static void wino_fwd_plan(const fc_kernels_f32 *kk, ptrdiff_t m, ptrdiff_t cin, ptrdiff_t tw,
                          ptrdiff_t trows, int *slot, ptrdiff_t *rows)
{
    double best = -1;
    *slot = 0;
    *rows = 1;
    for (int s = 0; s < FC_NUM_MR; ++s) {
        if (kk->mr[s] <= 0) continue;
        const ptrdiff_t mpad = FC_ROUNDUP(m, kk->mr[s]), nr = kk->nr[s];
        const ptrdiff_t per_col = NP * (cin + mpad) * (ptrdiff_t)sizeof(float);
        for (ptrdiff_t r = 1; r <= trows; ++r) {
            const ptrdiff_t cols = FC_ROUNDUP(wino_block_cols(r, tw), nr);
            if (r > 1 && cols * per_col > WINO_BLOCK_BYTES) break;
            const double eff = (double)m / mpad * (double)(r * tw) / cols;
            if (eff > best + 1e-9 || (eff > best - 1e-9 && kk->mr[s] > kk->mr[*slot])) {
                best = eff;
                *slot = s;
                *rows = r;
            }
        }
    }
}

/* ---- weight transforms (double) ----------------------------------------- */
/*
 * u[p][r][c] = (G g G^T)[p] for g = w[r][c] (flip = 0) or, for grad-input,
 * g = w[c][r] rotated by 180 degrees (flip = 1). w is (rows, cols, 5, 5) for
 * flip = 0 and (cols, rows, 5, 5) for flip = 1. u is (36, rows, cols).
 */
#define WT_LANES 16 /* transforms computed side by side: contiguous stores into u */

static void wino_weight_transform(const float *w, ptrdiff_t rows, ptrdiff_t cols, int flip,
                                  int nt, float *u /* OUT */)
{
    const ptrdiff_t total = rows * cols, nblk = FC_CEILDIV(total, WT_LANES);
    ptrdiff_t blk;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && total >= 256)
    {
    fc_team_arrive(&tm);
    /* WT_LANES transforms at once, lane l = transform t0 + l: every lane does the
     * same double-precision sums in the same order as one transform alone would,
     * so u is bitwise what a one-at-a-time loop gives; but each of u's 36 planes
     * is written in runs of WT_LANES floats instead of one float 36 planes apart
     * (that scatter was 70% of a batch-1 Winograd forward). */
#pragma omp for schedule(static) nowait
    for (blk = 0; blk < nblk; ++blk) {
        const ptrdiff_t t0 = blk * WT_LANES, n = FC_MIN(WT_LANES, total - t0);
        double g[5][5][WT_LANES], tmp[6][5][WT_LANES];
        float out[36][WT_LANES];
        for (ptrdiff_t l = 0; l < WT_LANES; ++l) {
            /* lanes past the end repeat the last transform (never stored) */
            const ptrdiff_t t = t0 + FC_MIN(l, n - 1), r = t / cols, c = t % cols;
            const float *src = flip ? w + (c * rows + r) * 25 : w + t * 25;
            for (int i = 0; i < 5; ++i)
                for (int j = 0; j < 5; ++j)
                    g[i][j][l] = flip ? src[(4 - i) * 5 + (4 - j)] : src[i * 5 + j];
        }
        for (int a = 0; a < 6; ++a)
            for (int j = 0; j < 5; ++j)
                for (int l = 0; l < WT_LANES; ++l) {
                    double s = 0;
                    for (int i = 0; i < 5; ++i) s += WG[a][i] * g[i][j][l];
                    tmp[a][j][l] = s;
                }
        for (int a = 0; a < 6; ++a)
            for (int b = 0; b < 6; ++b)
                for (int l = 0; l < WT_LANES; ++l) {
                    double s = 0;
                    for (int j = 0; j < 5; ++j) s += tmp[a][j][l] * WG[b][j];
                    out[a * 6 + b][l] = (float)s;
                }
        for (int p = 0; p < 36; ++p) memcpy(u + p * total + t0, out[p], sizeof(float) * n);
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* ap[p] = u[p] (rows x red) packed in panels of mr rows, k-major, padded rows zero */
static void wino_pack(const float *u, ptrdiff_t rows, ptrdiff_t red, ptrdiff_t mr,
                      ptrdiff_t rows_pad, float *ap /* OUT */)
{
    for (ptrdiff_t p = 0; p < NP; ++p) {
        const float *up = u + p * rows * red;
        float *dst = ap + p * rows_pad * red;
        for (ptrdiff_t r0 = 0; r0 < rows_pad; r0 += mr)
            for (ptrdiff_t k = 0; k < red; ++k)
                for (ptrdiff_t r = 0; r < mr; ++r)
                    *dst++ = r0 + r < rows ? up[(r0 + r) * red + k] : 0.0f;
    }
}

/* ---- data transforms ------------------------------------------------------ */
/* 1-D B^T d on six lane arrays d0..d5 (lane l) into o[0..5][l] */
#define WINO_BT(o, d0, d1, d2, d3, d4, d5, l)                                       \
    do {                                                                            \
        o[0][l] = 4 * d0 - 5 * d2 + d4;                                             \
        o[1][l] = 4 * (d1 + d2) - (d3 + d4);                                        \
        o[2][l] = 4 * (d2 - d1) + (d3 - d4);                                        \
        o[3][l] = 2 * (d3 - d1) + (d4 - d2);                                        \
        o[4][l] = 2 * (d1 - d3) + (d4 - d2);                                        \
        o[5][l] = 4 * d1 - 5 * d3 + d5;                                             \
    } while (0)


#if defined(__GNUC__) && !defined(__clang__)
#define WINO_VEC16 1
typedef float wino_v16 __attribute__((vector_size(64)));
typedef int wino_i16 __attribute__((vector_size(64)));
#define WINO_EVEN ((wino_i16){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})
#define WINO_ODD ((wino_i16){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31})
/* lanes 0..8 of the first row, then lanes 0..6 of the second (WINO_PAIR_OFF = 9) */
#define WINO_JOIN ((wino_i16){0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 18, 19, 20, 21, 22})
/* the same two rows seen from lane 2: lanes 2..8 of the first, 0..8 of the second */
#define WINO_JOIN_HI ((wino_i16){2, 3, 4, 5, 6, 7, 8, 16, 17, 18, 19, 20, 21, 22, 23, 24})
/* lanes 1..16 from a low (0..15) and a high (2..17) vector */
#define WINO_SHIFT1 ((wino_i16){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30})
#else
#define WINO_VEC16 0
#endif

/* The row transforms, RL tiles at a time. (An 8-lane instantiation for 7-tile
 * rows measured 1.7x slower in total on AVX-512 with GCC: it is not used.) */
#define RL 16
#include "fc_winograd_rows.h"
#undef RL

typedef void (*wino_in_row_fn)(const float *, const float *, ptrdiff_t, int, float *, ptrdiff_t);
typedef void (*wino_out_row_fn)(const float *, ptrdiff_t, float, int, int, int, int, ptrdiff_t,
                                float *, int, float *);

/*
 * Grad-output transform for grad-weight on WL channels of one tile: Z = A dY A^T
 * with dY[a][b] = g[a * sa + b * sb + lane] for a < nrow, b < ncol (else 0).
 * Z point p goes to dst[p * sp + lane].
 */
FC_SIMD_PROC(wino_gy_tile, (const float *FC_RESTRICT g, ptrdiff_t sa, ptrdiff_t sb, int nrow, int ncol, float *FC_RESTRICT dst, ptrdiff_t sp),
             (g, sa, sb, nrow, ncol, dst, sp))
{
    float y[2][2][WL], r[6][2][WL];
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
            for (int l = 0; l < WL; ++l)
                y[a][b][l] = (a < nrow && b < ncol) ? g[a * sa + b * sb + l] : 0.0f;
    /* A = (A^T)^T: z = [y0, y0 + y1, y0 - y1, y0 + 2 y1, y0 - 2 y1, y1] */
    for (int b = 0; b < 2; ++b)
        for (int l = 0; l < WL; ++l) {
            const float y0 = y[0][b][l], y1 = y[1][b][l];
            r[0][b][l] = y0;
            r[1][b][l] = y0 + y1;
            r[2][b][l] = y0 - y1;
            r[3][b][l] = y0 + 2 * y1;
            r[4][b][l] = y0 - 2 * y1;
            r[5][b][l] = y1;
        }
    for (int a = 0; a < 6; ++a) {
        float z[6][WL];
        for (int l = 0; l < WL; ++l) {
            const float y0 = r[a][0][l], y1 = r[a][1][l];
            z[0][l] = y0;
            z[1][l] = y0 + y1;
            z[2][l] = y0 - y1;
            z[3][l] = y0 + 2 * y1;
            z[4][l] = y0 - 2 * y1;
            z[5][l] = y1;
        }
        /* one store loop per point: the compiler cannot prove six strided rows apart */
        for (int b = 0; b < 6; ++b) {
            float *dp = dst + (a * 6 + b) * sp;
            for (int l = 0; l < WL; ++l) dp[l] = z[b][l];
        }
    }
}

/*
 * Zero-padded copy: xp[n][c][hp][wp] = x[n][c][yq - top][xq - left] (0 outside).
 * Rows/columns of x beyond hp/wp are not needed by any tile and are dropped.
 */
FC_NO_MEMCPY static void wino_pad(const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                     ptrdiff_t top, ptrdiff_t left, ptrdiff_t hp, ptrdiff_t wp, int nt,
                     float *xp /* OUT */)
{
    const ptrdiff_t total = n * c;
    const ptrdiff_t lo = FC_MIN(left, wp), hi = FC_MAX(lo, FC_MIN(left + w, wp));
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        const float *s = x + t * h * w;
        float *d = xp + t * hp * wp;
        for (ptrdiff_t yq = 0; yq < hp; ++yq) {
            float *drow = d + yq * wp;
            const ptrdiff_t ys = yq - top;
            if (ys < 0 || ys >= h) {
                memset(drow, 0, sizeof(float) * (size_t)wp);
                continue;
            }
            for (ptrdiff_t q = 0; q < lo; ++q) drow[q] = 0;
            const float *srow = s + ys * w - left;
            for (ptrdiff_t q = lo; q < hi; ++q) drow[q] = srow[q];
            for (ptrdiff_t q = hi; q < wp; ++q) drow[q] = 0;
        }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* ---- forward core (also grad-input) -------------------------------------- */
/*
 * y (n, m, ho, wo) = conv5x5(x (n, cin, h, w), padding top/left) from the
 * transformed weights u (36, m, cin) (see wino_weight_transform).
 */
static int wino_conv(const float *x, ptrdiff_t n, ptrdiff_t cin, ptrdiff_t h, ptrdiff_t w,
                     ptrdiff_t top, ptrdiff_t left, ptrdiff_t m, ptrdiff_t ho, ptrdiff_t wo,
                     const float *u, const float *bias, int relu, int nt, float *y /* OUT */)
{
    const fc_kernels_f32 *kk = fc_get_kernels_f32();
    const ptrdiff_t th = FC_CEILDIV(ho, 2), tw = FC_CEILDIV(wo, 2);
    const ptrdiff_t trows = n * th;           /* tile rows over all images */
    const ptrdiff_t hp = 2 * th + 4, wp = 2 * tw + 4, plane = hp * wp;
    const ptrdiff_t slack = 2 * WL + 64;      /* wino_in_row reads past the last patch */
    const ptrdiff_t rl = 16;                  /* lanes of the row transforms */
    const wino_in_row_fn in_row = wino_in_row;
    const wino_out_row_fn out_row = wino_out_row;
    int slot;
    ptrdiff_t rpb;
    wino_fwd_plan(kk, m, cin, tw, trows, &slot, &rpb);
    const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
    const ptrdiff_t mpad = FC_ROUNDUP(m, mr);
    const ptrdiff_t blk_cols = FC_ROUNDUP(wino_block_cols(rpb, tw), nr); /* GEMM columns per block */
    const ptrdiff_t vp_pitch = blk_cols + 2 * WL;          /* room for wino_in_row's full stores */
    const ptrdiff_t nblk = FC_CEILDIV(trows, rpb);
    int rc = FC_OK, failed = 0;

    float *ap = (float *)fc_malloc(sizeof(float) * (size_t)(NP * mpad * cin));
    float *xp = (float *)fc_malloc(sizeof(float) * (size_t)(n * cin * plane + slack));
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)cin);
    if (!ap || !xp || !koff) { rc = FC_ENOMEM; goto done; }
    wino_pack(u, m, cin, mr, mpad, ap);
    for (ptrdiff_t c = 0; c < cin; ++c) koff[c] = c * NP * vp_pitch;
    memset(xp + n * cin * plane, 0, sizeof(float) * (size_t)slack);
    wino_pad(x, n, cin, h, w, top, left, hp, wp, nt, xp);

    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && nblk > 1)
    {
        fc_team_arrive(&tm);
        float *vb = (float *)fc_malloc(sizeof(float) * (size_t)(NP * cin * vp_pitch));
        /* + WL: wino_out_row reads whole lane arrays past the last tile */
        float *mb = (float *)fc_malloc(sizeof(float) * (size_t)(NP * mpad * blk_cols + WL));
        if (!vb || !mb) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* columns past the block's tiles are computed, never stored: keep them finite */
            memset(vb, 0, sizeof(float) * (size_t)(NP * cin * vp_pitch));
        }
        ptrdiff_t b;
#pragma omp for schedule(static) nowait
        for (b = 0; b < nblk; ++b) {
            if (!vb || !mb) continue;
            const ptrdiff_t s0 = b * rpb, s1 = FC_MIN(trows, s0 + rpb);
            /* input transform: V point p of channel c, column col = (s - s0) * tw + q at
             * vb[(c * NP + p) * vp_pitch + col]: one channel's transform stays in L1 */
            for (ptrdiff_t c = 0; c < cin; ++c)
                for (ptrdiff_t s = s0; s < s1;) {
                    const float *src = xp + ((s / th) * cin + c) * plane + 2 * (s % th) * wp;
                    float *dst = vb + c * NP * vp_pitch + wino_tile_col(s - s0, tw);
                    if (tw <= WINO_PAIR_MAX) {
                        /* narrow rows go in pairs */
                        const float *src2 = NULL;
                        if (s + 1 < s1)
                            src2 = xp + (((s + 1) / th) * cin + c) * plane + 2 * ((s + 1) % th) * wp;
                        in_row(src, src2, wp, (int)tw, dst, vp_pitch);
                        s += src2 ? 2 : 1;
                        continue;
                    }
                    for (ptrdiff_t q0 = 0; q0 < tw; q0 += rl)
                        in_row(src + 2 * q0, NULL, wp, (int)FC_MIN(rl, tw - q0), dst + q0,
                               vp_pitch);
                    ++s;
                }
            /* 36 GEMMs: M[p] (mpad x blk_cols) = U[p] . V[p]; M point p of output channel k
             * at mb[(k * NP + p) * blk_cols + col] */
            for (ptrdiff_t p = 0; p < NP; ++p) {
                const float *vp = vb + p * vp_pitch;
                for (ptrdiff_t r0 = 0; r0 < mpad; r0 += mr) {
                    const float *a = ap + (p * mpad + r0) * cin;
                    float *cp = mb + (r0 * NP + p) * blk_cols;
                    for (ptrdiff_t j = 0; j < blk_cols; j += nr)
                        kk->ukr[slot](cin, a, vp + j, koff, cp + j, NP * blk_cols, 0);
                }
            }
            /* output transform straight into y (narrow tile rows in pairs) */
            for (ptrdiff_t k = 0; k < m; ++k) {
                const float bv = bias ? bias[k] : 0.0f;
                for (ptrdiff_t s = s0; s < s1;) {
                    const ptrdiff_t r = s % th;
                    float *yrow = y + ((s / th) * m + k) * ho * wo + 2 * r * wo;
                    const int nrow = (int)FC_MIN((ptrdiff_t)2, ho - 2 * r);
                    const float *mk = mb + k * NP * blk_cols + wino_tile_col(s - s0, tw);
                    if (2 * tw <= rl && s + 1 < s1) {
                        const ptrdiff_t r2 = (s + 1) % th;
                        float *yrow2 = y + (((s + 1) / th) * m + k) * ho * wo + 2 * r2 * wo;
                        out_row(mk, blk_cols, bv, relu, (int)tw, nrow, (int)wo, wo, yrow,
                                (int)FC_MIN((ptrdiff_t)2, ho - 2 * r2), yrow2);
                        s += 2;
                        continue;
                    }
                    for (ptrdiff_t q0 = 0; q0 < tw; q0 += rl) {
                        const int ncol = (int)FC_MIN(2 * rl, wo - 2 * q0);
                        out_row(mk + q0, blk_cols, bv, relu, (int)FC_MIN(rl, tw - q0), nrow, ncol, wo,
                                yrow + 2 * q0, 0, NULL);
                    }
                    ++s;
                }
            }
        }
        fc_free(vb);
        fc_free(mb);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) rc = FC_ENOMEM;
done:
    fc_free(ap);
    fc_free(xp);
    free(koff);
    return rc;
}

static double wino_work(const fc_conv_geom *g)
{
    return (double)g->n * g->k * g->c * FC_CEILDIV(g->ho, 2) * FC_CEILDIV(g->wo, 2) * NP;
}

int fc_conv2d_fwd_wino_f32(const float *x, const float *w, const float *bias,
                           const fc_conv_geom *g, int relu, int nthreads, float *y)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    float *u = (float *)fc_malloc(sizeof(float) * (size_t)(NP * g->k * g->c));
    if (!u) return FC_ENOMEM;
    wino_weight_transform(w, g->k, g->c, 0, nthreads, u);
    int rc = wino_conv(x, g->n, g->c, g->h, g->w, g->ph, g->pw, g->k, g->ho, g->wo, u, bias,
                       relu, nthreads, y);
    fc_free(u);
    return rc;
}

int fc_conv2d_grad_input_wino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                int nthreads, float *gx)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    float *u = (float *)fc_malloc(sizeof(float) * (size_t)(NP * g->k * g->c));
    if (!u) return FC_ENOMEM;
    wino_weight_transform(w, g->c, g->k, 1, nthreads, u);
    int rc = wino_conv(gy, g->n, g->k, g->ho, g->wo, 4 - g->ph, 4 - g->pw, g->c, g->h, g->w,
                       u, NULL, 0, nthreads, gx);
    fc_free(u);
    return rc;
}

/* ---- grad-weight ----------------------------------------------------------- */
#define WINO_DW_CHUNKS 8                 /* partial sums (fixed; not the thread count) */
#define WINO_DW_PARTIAL_BYTES (64 << 20) /* cap on all partials together */

int fc_conv2d_grad_weight_wino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                  int nthreads, float *gw, float *gb)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    const fc_kernels_f32 *kk = fc_get_kernels_f32();
    const fc_ukr_rows_f32 *rk = fc_get_row_kernels_f32();
    const ptrdiff_t K = g->k, C = g->c, ho = g->ho, wo = g->wo;
    const ptrdiff_t th = FC_CEILDIV(ho, 2), tw = FC_CEILDIV(wo, 2), trows = g->n * th;
    const ptrdiff_t hp = 2 * th + 4, wp = 2 * tw + 4, plane = hp * wp;
    const ptrdiff_t slack = 2 * WL + 64;
    const ptrdiff_t rl = 16;
    const wino_in_row_fn in_row = wino_in_row;
    /*
     * dU[p] (C x K) = sum over tiles of V[p] (x) Z[p]: GEMM rows are input
     * channels, read straight from V in the forward's layout (V point p of
     * channel c at vb[(c * NP + p) * vp_pitch + col], tile columns as
     * wino_tile_col lays them out) by the row-A micro-kernels, so V is never
     * repacked; columns are grad_y channels (B: Z[p][tile][k], made WL channels
     * at a time from a channels-last copy of grad_y); the reduction runs over a
     * block's tile columns, a spare column reading a zero row of B.
     */
    const int slot = wino_slot(kk, C, K);
    const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
    const ptrdiff_t rpad = FC_ROUNDUP(C, mr), cpad = FC_ROUNDUP(K, nr);
    const ptrdiff_t k16 = FC_ROUNDUP(K, WL), ldb = FC_MAX(cpad, k16);
    ptrdiff_t rpb = WINO_BLOCK_BYTES / (NP * (rpad + ldb) * (ptrdiff_t)sizeof(float) * tw);
    rpb = FC_MAX((ptrdiff_t)1, FC_MIN(rpb, trows));
    const ptrdiff_t blk_tiles = rpb * tw;                      /* tiles per block */
    const ptrdiff_t bcols = wino_block_cols(rpb, tw);   /* their V columns */
    const ptrdiff_t vp_pitch = FC_ROUNDUP(bcols, (ptrdiff_t)WL) + 2 * WL;
    const ptrdiff_t nblk = FC_CEILDIV(trows, rpb);
    const ptrdiff_t part = NP * rpad * cpad;
    ptrdiff_t nchunk = FC_MIN((ptrdiff_t)WINO_DW_CHUNKS, nblk);
    nchunk = FC_MAX((ptrdiff_t)1,
                    FC_MIN(nchunk, (ptrdiff_t)(WINO_DW_PARTIAL_BYTES / (part * sizeof(float)))));
    int rc = FC_OK, failed = 0;

    float *xp = (float *)fc_malloc(sizeof(float) * (size_t)(g->n * C * plane + slack));
    float *gyt = (float *)fc_malloc(sizeof(float) * (size_t)(g->n * ho * wo * k16));
    float *parts = (float *)fc_malloc(sizeof(float) * (size_t)(nchunk * part));
    if (!xp || !gyt || !parts) { rc = FC_ENOMEM; goto done; }
    memset(xp + g->n * C * plane, 0, sizeof(float) * (size_t)slack);
    wino_pad(x, g->n, C, g->h, g->w, g->ph, g->pw, hp, wp, nthreads, xp);
    {
        /* grad_y channels-last, channels padded with zeros to a multiple of WL */
        const ptrdiff_t hw = ho * wo;
        ptrdiff_t in;
        fc_team tm;
        fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (in = 0; in < g->n; ++in) {
            const float *src = gy + in * K * hw;
            float *dst = gyt + in * hw * k16;
            for (ptrdiff_t p0 = 0; p0 < hw; p0 += 16) {
                const ptrdiff_t p1 = FC_MIN(hw, p0 + 16);
                for (ptrdiff_t k = 0; k < K; ++k)
                    for (ptrdiff_t q = p0; q < p1; ++q) dst[q * k16 + k] = src[k * hw + q];
                for (ptrdiff_t q = p0; q < p1; ++q)
                    for (ptrdiff_t k = K; k < k16; ++k) dst[q * k16 + k] = 0;
            }
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }

    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && nchunk > 1)
    {
        fc_team_arrive(&tm);
        float *vb = (float *)fc_malloc(sizeof(float) * (size_t)(NP * rpad * vp_pitch));
        /* Z of the block's tiles, then one zero tile that spare columns read */
        float *bb = (float *)fc_malloc(sizeof(float) * (size_t)(NP * (blk_tiles + 1) * ldb));
        ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(bcols + 1));
        if (!vb || !bb || !koff) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* padding rows (channels past C), columns past K and the zero tile stay zero */
            memset(vb, 0, sizeof(float) * (size_t)(NP * rpad * vp_pitch));
            memset(bb, 0, sizeof(float) * (size_t)(NP * (blk_tiles + 1) * ldb));
        }
        ptrdiff_t ch;
#pragma omp for schedule(static) nowait
        for (ch = 0; ch < nchunk; ++ch) {
            if (!vb || !bb || !koff) continue;
            float *pc = parts + ch * part;
            memset(pc, 0, sizeof(float) * (size_t)part);
            for (ptrdiff_t b = ch * nblk / nchunk; b < (ch + 1) * nblk / nchunk; ++b) {
                const ptrdiff_t s0 = b * rpb, s1 = FC_MIN(trows, s0 + rpb);
                const ptrdiff_t ncols = wino_block_cols(s1 - s0, tw);
                /* V, as the forward transforms it */
                for (ptrdiff_t c = 0; c < C; ++c)
                    for (ptrdiff_t s = s0; s < s1;) {
                        const float *src = xp + ((s / th) * C + c) * plane + 2 * (s % th) * wp;
                        float *dst = vb + c * NP * vp_pitch + wino_tile_col(s - s0, tw);
                        if (tw <= WINO_PAIR_MAX) {
                            const float *src2 = NULL;
                            if (s + 1 < s1)
                                src2 = xp + (((s + 1) / th) * C + c) * plane
                                       + 2 * ((s + 1) % th) * wp;
                            in_row(src, src2, wp, (int)tw, dst, vp_pitch);
                            s += src2 ? 2 : 1;
                            continue;
                        }
                        for (ptrdiff_t q0 = 0; q0 < tw; q0 += rl)
                            in_row(src + 2 * q0, NULL, wp, (int)FC_MIN(rl, tw - q0), dst + q0,
                                   vp_pitch);
                        ++s;
                    }
                /* B: element (p, tile t, k) at (t*NP + p)*ldb + k: one tile's points together */
                for (ptrdiff_t s = s0; s < s1; ++s) {
                    const ptrdiff_t in = s / th, r = s % th;
                    const int nrow = (int)FC_MIN((ptrdiff_t)2, ho - 2 * r);
                    for (ptrdiff_t q = 0; q < tw; ++q) {
                        const int ncol = (int)FC_MIN((ptrdiff_t)2, wo - 2 * q);
                        const float *src = gyt + ((in * ho + 2 * r) * wo + 2 * q) * k16;
                        float *dst = bb + ((s - s0) * tw + q) * NP * ldb;
                        for (ptrdiff_t k0 = 0; k0 < k16; k0 += WL)
                            wino_gy_tile(src + k0, wo * k16, k16, nrow, ncol, dst + k0, ldb);
                    }
                }
                /* the tile behind each V column (the zero tile for a spare one) */
                for (ptrdiff_t col = 0; col < ncols; ++col) {
                    ptrdiff_t j, q;
                    if (tw <= WINO_PAIR_MAX) {
                        const ptrdiff_t off = col % 16;
                        j = 2 * (col / 16) + (off >= tw);
                        q = off >= tw ? off - tw : off;
                        if (q >= tw) j = -1; /* past the pair's second row */
                    } else {
                        j = col / tw;
                        q = col % tw;
                    }
                    const ptrdiff_t t = (j >= 0 && j < s1 - s0) ? j * tw + q : blk_tiles;
                    koff[col] = t * NP * ldb;
                }
                for (ptrdiff_t p = 0; p < NP; ++p)
                    for (ptrdiff_t r0 = 0; r0 < rpad; r0 += mr) {
                        const float *a = vb + (r0 * NP + p) * vp_pitch;
                        float *cp = pc + (p * rpad + r0) * cpad;
                        for (ptrdiff_t j = 0; j < cpad; j += nr)
                            rk[slot](ncols, a, NP * vp_pitch, bb + p * ldb + j, koff, cp + j,
                                     cpad, 1);
                    }
            }
        }
        fc_free(vb);
        fc_free(bb);
        free(koff);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) { rc = FC_ENOMEM; goto done; }

    {
        /* partials added in chunk order into the first, element by element */
        const int nt1 = fc_threads_for(nthreads, (double)part * nchunk);
        ptrdiff_t e;
        fc_team tm;
        fc_team_begin(&tm, nt1);
#pragma omp parallel num_threads(nt1) if (nt1 > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (e = 0; e < part; ++e) {
            float s = parts[e];
            for (ptrdiff_t j = 1; j < nchunk; ++j) s += parts[j * part + e];
            parts[e] = s;
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }
    {
        /* dW = G^T dU G per (k, c), in double */
        const ptrdiff_t total = K * C;
        const int nt2 = fc_threads_for(nthreads, (double)total * 1000);
        ptrdiff_t t;
        fc_team tm;
        fc_team_begin(&tm, nt2);
#pragma omp parallel num_threads(nt2) if (nt2 > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (t = 0; t < total; ++t) {
            const ptrdiff_t k = t / C, c = t % C;
            double du[6][6], tmp[5][6];
            for (int p = 0; p < NP; ++p) {
                du[p / 6][p % 6] = parts[(p * rpad + c) * cpad + k];
            }
            for (int i = 0; i < 5; ++i)
                for (int b = 0; b < 6; ++b) {
                    double s = 0;
                    for (int a = 0; a < 6; ++a) s += WG[a][i] * du[a][b];
                    tmp[i][b] = s;
                }
            for (int i = 0; i < 5; ++i)
                for (int j = 0; j < 5; ++j) {
                    double s = 0;
                    for (int b = 0; b < 6; ++b) s += tmp[i][b] * WG[b][j];
                    gw[t * 25 + i * 5 + j] = (float)s;
                }
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }
    if (gb) {
        /* per channel: a fixed-order float sum per image plane (16 lanes), added in double */
        const ptrdiff_t hw = ho * wo;
        ptrdiff_t k;
        fc_team tm;
        fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (k = 0; k < K; ++k) {
            double s = 0;
            for (ptrdiff_t in = 0; in < g->n; ++in) {
                const float *src = gy + (in * K + k) * hw;
                float lane[WL] = {0};
                ptrdiff_t q = 0;
                for (; q + WL <= hw; q += WL)
                    for (int l = 0; l < WL; ++l) lane[l] += src[q + l];
                for (int l = 0; q < hw; ++q, ++l) lane[l] += src[q];
                for (int l = 0; l < WL; ++l) s += lane[l];
            }
            gb[k] = (float)s;
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }
done:
    fc_free(xp);
    fc_free(gyt);
    fc_free(parts);
    return rc;
}
