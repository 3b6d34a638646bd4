/*
 * fc_winograd_common.h - Winograd F(2x2, 5x5) and F(4x4, 3x3) convolution,
 * float32: what the passes share (plans, weight and data transforms, padding).
 * Included by fc_winograd.c (forward, grad_input) and fc_winograd_grad_weight.c.
 *
 * F(4x4, 3x3) uses the same points, so the same B^T, 6x6 tiles and 36 GEMMs;
 * what differs is parameterised by the output tile size mt (wino_mt: 2 for 5x5,
 * 4 for 3x3): G (WG3), A^T (fc_winograd_rows4.h), the tiles' stride in the
 * input (wino_in_row4), grad-weight's dY transform (wino_gy_tile4) and the
 * padded plane (mt * tiles + 6 - mt). Its 4x4 tiles cut the multiplies 4x
 * (36 for 144).
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
 *   grad-input   the same code: for a stride-1 5x5 (3x3) layer with padding
 *                p, grad_x is the convolution of grad_y with the weights flipped
 *                and channel-transposed, padding 4 - p (2 - p), so p <= 4 (2).
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
#ifndef FC_WINOGRAD_COMMON_H
#define FC_WINOGRAD_COMMON_H
#include "fc_internal.h"
#if FC_X86_SIMD
#include <immintrin.h> /* the fused pool's pick (fc_winograd_rows.h) */
#endif

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
/* G of F(4x4, 3x3) for the same points and B^T (its first 3 columns used) */
static const double WG3[6][5] = {
    {1.0 / 4, 0, 0},
    {1.0 / 6, 1.0 / 6, 1.0 / 6},
    {1.0 / 6, -1.0 / 6, 1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};

/* Output tile size (rows and columns of outputs per tile) of a kernel size r:
 * 6 = mt + r - 1 transform points either way, so both share B^T, the 36 GEMMs
 * and their blocking; only G, A^T and the tiles' stride differ. */
static inline int wino_mt(ptrdiff_t r)
{
    return r == 3 ? 4 : 2;
}

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
 * forward's V and M buffers, for tiles of mt x mt outputs. F(2x2, 5x5)'s
 * narrow rows (tw <= WINO_PAIR_MAX, transformed in pairs) take 16 columns per
 * pair, the second row right after the first: every input-transform store is
 * then one whole aligned vector, and pairs never share a cache line. Wider
 * rows, and all F(4x4, 3x3) rows, are packed back to back: a 3x3 layer's rows
 * are 4x shorter in tiles (28 wide: 7 tiles, 14 wide: 4), and 16 columns per
 * pair of 4-tile rows computed every GEMM twice over (measured 1.25x slower in
 * all on 64x32x14x14 -> 64 than back to back). The input transform still does
 * two narrow rows per call; its whole-vector stores run past a row's tiles,
 * which the next row, stored after it, overwrites.
 */
static ptrdiff_t wino_tile_col(ptrdiff_t j, ptrdiff_t tw, int mt)
{
    return mt == 2 && tw <= WINO_PAIR_MAX ? (j / 2) * 16 + (j % 2) * tw : j * tw;
}

/* GEMM columns used by `rows` tile rows of tw tiles */
static ptrdiff_t wino_block_cols(ptrdiff_t rows, ptrdiff_t tw, int mt)
{
    return mt == 2 && tw <= WINO_PAIR_MAX ? FC_CEILDIV(rows, 2) * 16 : rows * tw;
}

/*
 * Forward blocking: a block is `rows` whole tile rows (tw tiles each, across
 * images), its tiles are GEMM columns rounded up to the kernel width. Picks the
 * kernel slot and rows per block that waste least (padded output channels and
 * columns) within the per-thread buffer budget, counted over all the blocks:
 * the last, partial block pads its columns to the kernel width too. (Judged by
 * one whole block alone, the MNIST CNN's conv2 at batch 1, 7 tile rows of 7,
 * took blocks of 6 rows + 1 with 48-column kernels: 96 columns computed for 49
 * tiles; one block of 64 columns does 1.5x less work.) Every kernel slot sums
 * each element the same way, so the choice changes no bit.
 */
static void wino_fwd_plan(const fc_kernels_f32 *kk, ptrdiff_t m, ptrdiff_t cin, ptrdiff_t tw,
                          int mt, ptrdiff_t trows, int *slot, ptrdiff_t *rows)
{
    double best = -1;
    *slot = 0;
    *rows = 1;
    for (int s = 0; s < FC_NUM_MR; ++s) {
        if (kk->mr[s] <= 0) continue;
        const ptrdiff_t mpad = FC_ROUNDUP(m, kk->mr[s]), nr = kk->nr[s];
        const ptrdiff_t per_col = NP * (cin + mpad) * (ptrdiff_t)sizeof(float);
        for (ptrdiff_t r = 1; r <= trows; ++r) {
            const ptrdiff_t cols = FC_ROUNDUP(wino_block_cols(r, tw, mt), nr);
            /* over budget, but a block always gets one kernel width of columns:
             * with 128 -> 128 channels even 48 columns are 1.8 MB, and one 7-tile
             * row per 48-column block ran 0.6x the direct kernel */
            if (r > 1 && cols * per_col > WINO_BLOCK_BYTES && cols > nr) break;
            const ptrdiff_t rem = trows % r;
            const ptrdiff_t all = trows / r * cols
                                  + (rem ? FC_ROUNDUP(wino_block_cols(rem, tw, mt), nr) : 0);
            const double eff = (double)m / mpad * (double)(trows * tw) / all;
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
 * g = w[c][r] rotated by 180 degrees (flip = 1). w is (rows, cols, kr, kr) for
 * flip = 0 and (cols, rows, kr, kr) for flip = 1, kr = 5 (G = WG) or 3 (WG3).
 * u is (36, rows, cols).
 */
#define WT_LANES 16 /* transforms computed side by side: contiguous stores into u */

/*
 * WT_LANES transforms at once, lane l = transform t0 + l (n of them real): every
 * lane does the same double-precision sums in the same order as one transform
 * alone would, so u is bitwise what a one-at-a-time loop gives; but each of u's
 * 36 planes is written in runs of WT_LANES floats instead of one float 36
 * planes apart (that scatter was 70% of a batch-1 Winograd forward). Inlined
 * with a constant kr and G: with them read at run time the 3x3 transform ran
 * 4x slower (1.1 ms for 128 x 128 weights, most of a batch-1 forward).
 */
FC_ALWAYS_INLINE void wino_weight_lanes(const float *w, ptrdiff_t rows, ptrdiff_t cols,
                                        const int kr, const double G[6][5], int flip,
                                        ptrdiff_t t0, ptrdiff_t n, ptrdiff_t total,
                                        float *u /* OUT */)
{
    const int kk = kr * kr;
    double g[5][5][WT_LANES], tmp[6][5][WT_LANES];
    float out[36][WT_LANES], raw[WT_LANES * 25];
    /* raw[l * kk + e]: element e of transform t0 + l, in the order g takes them
     * (reversed when flipped); then one transposing pass with constant strides,
     * which vectorises (a per-lane gather straight into g was 3/4 of the time) */
    if (!flip && n == WT_LANES) {
        memcpy(raw, w + t0 * kk, sizeof(float) * (size_t)(WT_LANES * kk));
    } else {
        /* transform t is w[r][c] (flipped: w[c][r]) for t = r * cols + c */
        ptrdiff_t r = t0 / cols, c = t0 % cols;
        for (ptrdiff_t l = 0; l < WT_LANES; ++l) {
            /* lanes past the end repeat the last transform (never stored) */
            const float *src = flip ? w + (c * rows + r) * kk : w + (r * cols + c) * kk;
            for (int e = 0; e < kk; ++e) raw[l * kk + e] = flip ? src[kk - 1 - e] : src[e];
            if (l + 1 < n && ++c == cols) {
                c = 0;
                ++r;
            }
        }
    }
    for (int i = 0; i < kr; ++i)
        for (int j = 0; j < kr; ++j)
            for (int l = 0; l < WT_LANES; ++l) g[i][j][l] = raw[l * kk + i * kr + j];
    for (int a = 0; a < 6; ++a)
        for (int j = 0; j < kr; ++j)
            for (int l = 0; l < WT_LANES; ++l) {
                double s = 0;
                for (int i = 0; i < kr; ++i) s += G[a][i] * g[i][j][l];
                tmp[a][j][l] = s;
            }
    for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b)
            for (int l = 0; l < WT_LANES; ++l) {
                double s = 0;
                for (int j = 0; j < kr; ++j) s += tmp[a][j][l] * G[b][j];
                out[a * 6 + b][l] = (float)s;
            }
    /* a constant size for whole blocks: inlined, not 36 libc calls per block */
    if (n == WT_LANES)
        for (int p = 0; p < 36; ++p) memcpy(u + p * total + t0, out[p], sizeof out[p]);
    else
        for (int p = 0; p < 36; ++p) memcpy(u + p * total + t0, out[p], sizeof(float) * n);
}

/* One block of lanes, compiled per SIMD level (whole AVX-512 vectors of 8 doubles
 * instead of SSE2's 2: 128 x 128 3x3 weights took 0.5 ms at the baseline level).
 * No contraction into FMAs (ISO C mode), so every level gives the same bits. */
FC_SIMD_PROC(wino_weight_block,
             (const float *w, ptrdiff_t rows, ptrdiff_t cols, int kr, int flip, ptrdiff_t t0,
              ptrdiff_t n, ptrdiff_t total, float *u),
             (w, rows, cols, kr, flip, t0, n, total, u))
{
    if (kr == 3)
        wino_weight_lanes(w, rows, cols, 3, WG3, flip, t0, n, total, u);
    else
        wino_weight_lanes(w, rows, cols, 5, WG, flip, t0, n, total, u);
}

static void wino_weight_transform(const float *w, ptrdiff_t rows, ptrdiff_t cols, int kr,
                                  int flip, int nt, float *u /* OUT */)
{
    const ptrdiff_t total = rows * cols, nblk = FC_CEILDIV(total, WT_LANES);
    ptrdiff_t blk;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && total >= 256)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (blk = 0; blk < nblk; ++blk) {
        const ptrdiff_t t0 = blk * WT_LANES;
        wino_weight_block(w, rows, cols, kr, flip, t0, FC_MIN(WT_LANES, total - t0), total, u);
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* ap[p] = u[p] (rows x red) packed in panels of mr rows, k-major, padded rows zero */
#if FC_X86_SIMD
/*
 * A full 8-row panel's columns [k0, k0 + 8k) by 8x8 transposes: rows r0..r0+7 of
 * up (row stride red) to dst[k * 8 + r]. The scalar gather it replaces was a
 * twentieth of a batch-1 MNIST CNN forward (36 x 64 x 32 values per call).
 */
__attribute__((target("avx2"))) static ptrdiff_t wino_pack8_avx2(const float *up, ptrdiff_t red,
                                                                   float *dst)
{
    ptrdiff_t k = 0;
    for (; k + 8 <= red; k += 8) {
        __m256 r[8], t[8], q[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(up + i * red + k);
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            q[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            q[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            q[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            q[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int j = 0; j < 4; ++j) {
            _mm256_storeu_ps(dst + (k + j) * 8, _mm256_permute2f128_ps(q[j], q[j + 4], 0x20));
            _mm256_storeu_ps(dst + (k + j + 4) * 8, _mm256_permute2f128_ps(q[j], q[j + 4], 0x31));
        }
    }
    return k;
}
#endif

static void wino_pack(const float *u, ptrdiff_t rows, ptrdiff_t red, ptrdiff_t mr,
                      ptrdiff_t rows_pad, float *ap /* OUT */)
{
#if FC_X86_SIMD
    const int vec8 = mr == 8 && fc_simd_dispatch() >= FC_SIMD_AVX2;
#else
    const int vec8 = 0;
#endif
    for (ptrdiff_t p = 0; p < NP; ++p) {
        const float *up = u + p * rows * red;
        float *dst = ap + p * rows_pad * red;
        for (ptrdiff_t r0 = 0; r0 < rows_pad; r0 += mr) {
            ptrdiff_t k = 0;
#if FC_X86_SIMD
            if (vec8 && r0 + 8 <= rows) k = wino_pack8_avx2(up + r0 * red, red, dst);
#endif
            for (; k < red; ++k)
                for (ptrdiff_t r = 0; r < mr; ++r)
                    dst[k * mr + r] = r0 + r < rows ? up[(r0 + r) * red + k] : 0.0f;
            dst += mr * red;
        }
    }
}

/* ---- data transforms ------------------------------------------------------ */
/*
 * 1-D B^T d on one column d0..d5 into o[0..5] L: L is a lane subscript ([q])
 * for the plain-C lane arrays, or empty for whole GCC vectors. The one copy of
 * the B^T rows, for both forms of the input transform.
 */
#define WINO_BT(o, L, d0, d1, d2, d3, d4, d5)                                       \
    do {                                                                            \
        o[0] L = 4 * d0 - 5 * d2 + d4;                                              \
        o[1] L = 4 * (d1 + d2) - (d3 + d4);                                         \
        o[2] L = 4 * (d2 - d1) + (d3 - d4);                                         \
        o[3] L = 2 * (d3 - d1) + (d4 - d2);                                         \
        o[4] L = 2 * (d1 - d3) + (d4 - d2);                                         \
        o[5] L = 4 * d1 - 5 * d3 + d5;                                              \
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
#include "fc_winograd_rows4.h"


/*
 * Grad-output transform for grad-weight on WL channels of one tile: Z = A dY A^T
 * with dY[a][b] = g[a * sa + b * sb + lane] for a < nrow, b < ncol (else 0).
 * Z point p goes to dst[p * sp + lane].
 */
FC_SIMD_PROC(wino_gy_tile, (const float *FC_RESTRICT g, ptrdiff_t sa, ptrdiff_t sb, int nrow,
                            int ncol, float *FC_RESTRICT dst, ptrdiff_t sp),
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

/* 1-D A on one 4-value column y0..y3 into z[0..5] L (A = (A^T)^T of F(4x4, 3x3)) */
#define WINO_A4(z, L, y0, y1, y2, y3)                                               \
    do {                                                                            \
        const float e_ = (y0) + (y2), o_ = (y1) + (y3);                             \
        const float e4_ = (y0) + 4 * (y2), o4_ = 2 * (y1) + 8 * (y3);               \
        z[0] L = (y0);                                                              \
        z[1] L = e_ + o_;                                                           \
        z[2] L = e_ - o_;                                                           \
        z[3] L = e4_ + o4_;                                                         \
        z[4] L = e4_ - o4_;                                                         \
        z[5] L = (y3);                                                              \
    } while (0)

/* wino_gy_tile for F(4x4, 3x3): dY is 4x4 (a < nrow, b < ncol, else 0) */
FC_SIMD_PROC(wino_gy_tile4, (const float *FC_RESTRICT g, ptrdiff_t sa, ptrdiff_t sb, int nrow,
                             int ncol, float *FC_RESTRICT dst, ptrdiff_t sp),
             (g, sa, sb, nrow, ncol, dst, sp))
{
    float y[4][4][WL], r[6][4][WL];
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b)
            for (int l = 0; l < WL; ++l)
                y[a][b][l] = (a < nrow && b < ncol) ? g[a * sa + b * sb + l] : 0.0f;
    for (int b = 0; b < 4; ++b)
        for (int l = 0; l < WL; ++l) {
            float z[6];
            WINO_A4(z, , y[0][b][l], y[1][b][l], y[2][b][l], y[3][b][l]);
            for (int a = 0; a < 6; ++a) r[a][b][l] = z[a];
        }
    for (int a = 0; a < 6; ++a) {
        float z[6][WL];
        for (int l = 0; l < WL; ++l)
            WINO_A4(z, [l], r[a][0][l], r[a][1][l], r[a][2][l], r[a][3][l]);
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

/* floats an input transform may read past the last patch of the padded input */
static ptrdiff_t wino_in_slack(int mt)
{
    return (mt == 4 ? 4 * (RL + 1) : 2 * WL) + 64;
}

/* wino_in_row (tiles 2 columns apart) or wino_in_row4 (4 apart) */
static void wino_in_row_mt(int mt, const float *src, const float *src2, ptrdiff_t ld, int nq,
                           float *dst, ptrdiff_t sp)
{
    if (mt == 4)
        wino_in_row4(src, src2, ld, nq, dst, sp);
    else
        wino_in_row(src, src2, ld, nq, dst, sp);
}

/*
 * Input transform of the tile rows [s0, s1) of a block (tile rows counted
 * across images: row s is tile row s % th of image s / th; tiles mt apart)
 * into V: point p of channel c, column wino_tile_col(s - s0, tw) + q at
 * vb[(c * NP + p) * vp_pitch + col]. One channel's transform stays in L1;
 * narrow tile rows go in pairs. The forward and grad_weight share it.
 */
static void wino_in_block(const float *xp, ptrdiff_t cin, ptrdiff_t th, ptrdiff_t tw, int mt,
                          ptrdiff_t wp, ptrdiff_t plane, ptrdiff_t s0, ptrdiff_t s1, float *vb,
                          ptrdiff_t vp_pitch)
{
    for (ptrdiff_t c = 0; c < cin; ++c)
        for (ptrdiff_t s = s0; s < s1;) {
            const float *src = xp + ((s / th) * cin + c) * plane + mt * (s % th) * wp;
            float *dst = vb + c * NP * vp_pitch + wino_tile_col(s - s0, tw, mt);
            if (tw <= WINO_PAIR_MAX) {
                const float *src2 = NULL;
                if (s + 1 < s1)
                    src2 = xp + (((s + 1) / th) * cin + c) * plane + mt * ((s + 1) % th) * wp;
                wino_in_row_mt(mt, src, src2, wp, (int)tw, dst, vp_pitch);
                s += src2 ? 2 : 1;
                continue;
            }
            for (ptrdiff_t q0 = 0; q0 < tw; q0 += RL)
                wino_in_row_mt(mt, src + mt * q0, NULL, wp, (int)FC_MIN((ptrdiff_t)RL, tw - q0),
                               dst + q0, vp_pitch);
            ++s;
        }
}

/* multiply-adds of a Winograd pass, for fc_threads_for */
static double wino_work(const fc_conv_geom *g)
{
    const int mt = wino_mt(g->kh);
    return (double)g->n * g->k * g->c * FC_CEILDIV(g->ho, mt) * FC_CEILDIV(g->wo, mt) * NP;
}

#endif /* FC_WINOGRAD_COMMON_H */
