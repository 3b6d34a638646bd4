/*
 * fc_rowwino.c - the row-Winograd F(5, 5) forward and grad_input (float32,
 * AVX-512) for 5x5 stride-1 layers with few channels; fc_rowwino.h has the
 * matrices and why one dimension.
 *
 * One convolution core, rw_conv, serves both passes: grad_input is the
 * forward of gy padded (4 - pt, 4 - pb, 4 - pl, 4 - pr) with the weights
 * swapped (k <-> c) and turned 180 degrees. For output row y, tile t (columns
 * 5t .. 5t + 4) and point p:
 *
 *     V[c][row][t][p] = (B^T d)[p],  d = padded input row `row`, columns 5t .. 5t + 8
 *     U[k][c][i][p]   = (G w[k][c][i][0..4])[p]
 *     M[k][y][t][p]   = sum over c, then i of U[k][c][i][p] * V[c][y + i][t][p]
 *     y[k][y][5t + q] = (A^T M[k][y][t][.])[q] + bias[k], then ReLU if asked
 *
 * Batch independence. Every element of every image gets the same sequence of
 * operations whatever the batch, its block or the thread count: M is one FMA
 * chain from +0 over (c, i) in that order, all 5 rows always (padding rows
 * hold V = +0, what the transform of a zero row gives), and the transforms
 * are fc_rowwino.h's, lane by lane. Two paths share that sequence:
 *   - whole blocks of 16 images, one image per vector lane (rw_block): the
 *     products are a register-blocked GEMM per point, MR output channels
 *     x NR tiles of an output row of accumulators over the (c, i) reduction;
 *   - the remaining n % 16 images (and batch 1) one at a time with the output
 *     channels in the lanes (rw_image): an FMA is commutative in its two
 *     factors and both paths round it once, so the bits are rw_block's
 *     (tests/test_winograd_rows.py checks batch 1 .. 64 against batch 64).
 */
#include "fc_internal.h"
#include "fc_rowwino.h"

#if FC_X86_SIMD
#include <string.h>

#include "fc_lanes.h"

#define RW_L 16     /* lanes */
#define RW_MR_MAX 8 /* output channels per register block, at most */
#define RW_NR_MAX 6 /* tiles of one output row per register block, at most */
#if defined(__GNUC__) && !defined(__clang__)
#define RW_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define RW_UNROLL _Pragma("unroll")
#else
#define RW_UNROLL
#endif

typedef struct {
    const float *x;      /* (n, c, h, w) input */
    const float *up;     /* U as up[(p * c * 5 + c * 5 + i) * kp + k], zero for k >= k */
    const float *bias;   /* (k,) or NULL */
    float *y;            /* (n, k, ho, wo) output */
    ptrdiff_t n, c, h, w, k, kp, pt, pl, ho, wo;
    ptrdiff_t T;         /* tiles per row, ceil(wo / 5) */
    ptrdiff_t hp;        /* padded input rows read: ho + 4 */
    ptrdiff_t wt;        /* padded input columns read: 5T + 4 */
    int mr;              /* output channels per register block (rw_pick_mr) */
    int relu;
    int pool;            /* y is the 2x2/2 max-pool (floor) of the output, (n, k, ho/2, wo/2) */
} rw_plan;


/* Kernel rows [*lo, *hi] of output row y that fall on input rows: the others
 * multiply padding, and both paths skip exactly these, so the FMA chain of
 * an element is the same in both (and padded layers do no work on zeros). */
static inline void rw_rows(const rw_plan *d, ptrdiff_t y, ptrdiff_t *lo, ptrdiff_t *hi)
{
    *lo = FC_MAX(0, d->pt - y);
    *hi = FC_MIN((ptrdiff_t)FC_RW_R - 1, d->pt + d->h - 1 - y);
}

/* Floats of a block task's scratch: lane copy of x, V, the M block, the lane
 * outputs. */
static size_t rw_block_floats(const rw_plan *d)
{
    const size_t xt = (size_t)(d->c * d->h * d->wt) * RW_L;
    const size_t v = (size_t)(FC_RW_N * d->c * d->hp * d->T) * RW_L;
    const size_t m = (size_t)(RW_MR_MAX * RW_NR_MAX * FC_RW_N) * RW_L;
    const size_t yt = (size_t)(d->k * d->ho * 5 * d->T) * RW_L;
    return xt + v + m + yt;
}

/*
 * acc[MR][NR] over the (c, i) reduction of one point p, for NR tiles of one
 * output row and MR output channels, written to mb[(kk * NR + j) * 9 + p]
 * (a lane vector each). vp: V of point p, channel 0, at the row's first tile
 * and kernel row i_lo; u: U of point p, channel 0, row i_lo, the block's
 * first output channel. NR vector loads and MR broadcasts per MR * NR FMAs.
 */
#define RW_DEF_GEMM(MR, NR)                                                                   \
    FC_TGT_AVX512 static void rw_gemm_##MR##x##NR(const rw_plan *d, const float *vp,           \
                                                  const float *u, ptrdiff_t ni, int p,         \
                                                  float *mb)                                   \
    {                                                                                          \
        __m512 acc[MR][NR];                                                                    \
        RW_UNROLL for (int kk = 0; kk < MR; ++kk)                                              \
            RW_UNROLL for (int j = 0; j < NR; ++j) acc[kk][j] = _mm512_setzero_ps();           \
        const ptrdiff_t plane = d->hp * d->T * RW_L, vrow = d->T * RW_L, kp = d->kp;           \
        for (ptrdiff_t c = 0; c < d->c; ++c) {                                                 \
            const float *vc = vp + c * plane, *uc = u + c * FC_RW_R * kp;                      \
            for (ptrdiff_t i = 0; i < ni; ++i) {                                               \
                const float *v = vc + i * vrow, *uk = uc + i * kp;                             \
                __m512 vv[NR];                                                                 \
                RW_UNROLL for (int j = 0; j < NR; ++j) vv[j] = _mm512_load_ps(v + j * RW_L);   \
                RW_UNROLL for (int kk = 0; kk < MR; ++kk) {                                    \
                    const __m512 ub = _mm512_set1_ps(uk[kk]);                                  \
                    RW_UNROLL for (int j = 0; j < NR; ++j)                                     \
                        acc[kk][j] = _mm512_fmadd_ps(ub, vv[j], acc[kk][j]);                   \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        RW_UNROLL for (int kk = 0; kk < MR; ++kk)                                              \
            RW_UNROLL for (int j = 0; j < NR; ++j)                                             \
                _mm512_store_ps(mb + ((kk * NR + j) * FC_RW_N + p) * RW_L, acc[kk][j]);        \
    }
RW_DEF_GEMM(4, 1) RW_DEF_GEMM(4, 2) RW_DEF_GEMM(4, 3) RW_DEF_GEMM(4, 4) RW_DEF_GEMM(4, 5)
RW_DEF_GEMM(4, 6)
RW_DEF_GEMM(6, 1) RW_DEF_GEMM(6, 2) RW_DEF_GEMM(6, 3) RW_DEF_GEMM(6, 4)
RW_DEF_GEMM(8, 1) RW_DEF_GEMM(8, 2) RW_DEF_GEMM(8, 3)

typedef void (*rw_gemm_fn)(const rw_plan *, const float *, const float *, ptrdiff_t, int, float *);
/* [mr / 2 - 2][nr]: NULL where MR * NR accumulators would not fit in 32 registers */
static const rw_gemm_fn rw_gemm[3][RW_NR_MAX + 1] = {
    {NULL, rw_gemm_4x1, rw_gemm_4x2, rw_gemm_4x3, rw_gemm_4x4, rw_gemm_4x5, rw_gemm_4x6},
    {NULL, rw_gemm_6x1, rw_gemm_6x2, rw_gemm_6x3, rw_gemm_6x4, NULL, NULL},
    {NULL, rw_gemm_8x1, rw_gemm_8x2, rw_gemm_8x3, NULL, NULL, NULL},
};

/* Tiles per register block: the row's T in near-equal chunks of <= RW_NR_MAX. */
static inline ptrdiff_t rw_chunk(ptrdiff_t T)
{
    return FC_CEILDIV(T, FC_CEILDIV(T, (ptrdiff_t)RW_NR_MAX));
}

/* Output channels per register block: of 4, 6 and 8, those whose accumulators
 * fit with the chunk's tiles, the one that wastes fewest channels on padding
 * (16: 4 or 8; 6: 6), then the largest. Only speed depends on it. */
static int rw_pick_mr(ptrdiff_t k, ptrdiff_t T)
{
    const ptrdiff_t nr = rw_chunk(T);
    int best = 4;
    for (int mr = 6; mr <= RW_MR_MAX; mr += 2) {
        if (!rw_gemm[mr / 2 - 2][nr]) continue;
        if (FC_ROUNDUP(k, (ptrdiff_t)mr) <= FC_ROUNDUP(k, (ptrdiff_t)best)) best = mr;
    }
    return best;
}

/* + bias, then the ReLU select (s <= 0 ? 0 : s, so NaN stays NaN): the lanes
 * forward's write-out. b is the bias in every lane (block) or per lane (image). */
FC_TGT_AVX512 static inline __m512 rw_finish(__m512 s, __m512 b, int relu)
{
    s = _mm512_add_ps(s, b);
    if (relu)
        s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_LE_OQ), s,
                                 _mm512_setzero_ps());
    return s;
}

/* fc_lanes_run's task: output channels of part `part` of `parts` (in register
 * blocks of d->mr) of images [n0, n0 + 16). */
FC_TGT_AVX512 static void rw_block(const void *plan, ptrdiff_t n0, int nb, ptrdiff_t part,
                                   ptrdiff_t parts, float *buf)
{
    const rw_plan *d = (const rw_plan *)plan;
    const ptrdiff_t T = d->T, we = 5 * T, chw = d->c * d->h * d->w, mr = d->mr;
    const ptrdiff_t nkb = FC_CEILDIV(d->k, mr);
    const ptrdiff_t k0 = part * nkb / parts * mr;
    const ptrdiff_t k1 = FC_MIN(d->k, (part + 1) * nkb / parts * mr);
    float *xt = buf;
    float *vb = xt + d->c * d->h * d->wt * RW_L;
    float *mb = vb + FC_RW_N * d->c * d->hp * T * RW_L;
    float *yt = mb + RW_MR_MAX * RW_NR_MAX * FC_RW_N * RW_L;

    /* x into lanes, the left padding as zero columns; columns past the input
     * (right padding, the last tile's extra columns) are zero too */
    fc_lanes_pack(d->x + n0 * chw, chw, nb, d->c * d->h, d->w, d->pl, d->wt, xt);
    /* V of the input rows, point-major: vb[((p * c + c) * hp + row) * T + t];
     * the padding rows are never read (rw_rows) */
    for (ptrdiff_t c = 0; c < d->c; ++c)
        for (ptrdiff_t r = 0; r < d->h; ++r) {
            const ptrdiff_t row = r + d->pt;
            for (ptrdiff_t t = 0; t < T; ++t) {
                __m512 in[FC_RW_N], v[FC_RW_N];
                const float *src = xt + ((c * d->h + r) * d->wt + 5 * t) * RW_L;
                for (int j = 0; j < FC_RW_N; ++j) in[j] = _mm512_load_ps(src + j * RW_L);
                fc_rw_input_avx512(in, v);
                for (int p = 0; p < FC_RW_N; ++p)
                    _mm512_store_ps(vb + (((p * d->c + c) * d->hp + row) * T + t) * RW_L, v[p]);
            }
        }

    const ptrdiff_t pstep_u = FC_RW_R * d->c * d->kp, pstep_v = d->c * d->hp * T * RW_L;
    const ptrdiff_t chunk = rw_chunk(T);
    for (ptrdiff_t kb = k0; kb < k1; kb += mr) {
        for (ptrdiff_t y = 0; y < d->ho; ++y) {
            ptrdiff_t lo, hi;
            rw_rows(d, y, &lo, &hi);
            for (ptrdiff_t t0 = 0; t0 < T; t0 += chunk) {
                const ptrdiff_t nr = FC_MIN(chunk, T - t0);
                const rw_gemm_fn gemm = rw_gemm[mr / 2 - 2][nr];
                for (int p = 0; p < FC_RW_N; ++p)
                    gemm(d, vb + p * pstep_v + ((y + lo) * T + t0) * RW_L,
                         d->up + p * pstep_u + lo * d->kp + kb, FC_MAX(0, hi - lo + 1), p, mb);
                for (ptrdiff_t kk = 0; kk < mr && kb + kk < k1; ++kk) {
                    const ptrdiff_t k = kb + kk;
                    const __m512 bv = _mm512_set1_ps(d->bias ? d->bias[k] : 0.0f);
                    for (ptrdiff_t j = 0; j < nr; ++j) {
                        __m512 m[FC_RW_N], o[FC_RW_M];
                        for (int p = 0; p < FC_RW_N; ++p)
                            m[p] = _mm512_load_ps(mb + ((kk * nr + j) * FC_RW_N + p) * RW_L);
                        fc_rw_output_avx512(m, o);
                        float *dst = yt + ((k * d->ho + y) * we + 5 * (t0 + j)) * RW_L;
                        for (int q = 0; q < FC_RW_M; ++q)
                            _mm512_store_ps(dst + q * RW_L, rw_finish(o[q], bv, d->relu));
                    }
                }
            }
        }
    }
    if (d->pool) {
        /* the pool in the lanes and in place (each pooled value is written after
         * its window's four reads, before any later window's), then out */
        const ptrdiff_t ho2 = d->ho / 2, wo2 = d->wo / 2, plane = ho2 * wo2;
        float *out = yt + k0 * plane * RW_L;
        for (ptrdiff_t k = k0; k < k1; ++k)
            for (ptrdiff_t r = 0; r < ho2; ++r) {
                const float *r0 = yt + (k * d->ho + 2 * r) * we * RW_L, *r1 = r0 + we * RW_L;
                for (ptrdiff_t j = 0; j < wo2; ++j, out += RW_L) {
                    const __m512 v[4] = {_mm512_load_ps(r0 + 2 * j * RW_L),
                                         _mm512_load_ps(r0 + (2 * j + 1) * RW_L),
                                         _mm512_load_ps(r1 + 2 * j * RW_L),
                                         _mm512_load_ps(r1 + (2 * j + 1) * RW_L)};
                    const __m512 best = fc_lanes_max4(v);
                    _mm512_store_ps(out, best);
                }
            }
        fc_lanes_unpack(yt + k0 * plane * RW_L, k1 - k0, plane, plane, d->k * plane, nb,
                        d->y + (n0 * d->k + k0) * plane);
        return;
    }
    fc_lanes_unpack(yt + k0 * d->ho * we * RW_L, (k1 - k0) * d->ho, d->wo, we,
                    d->k * d->ho * d->wo, nb, d->y + (n0 * d->k + k0) * d->ho * d->wo);
}

/* Floats of an image task's scratch: V of one image, (c, hp, T, 9); one
 * padded input plane (h, wt); 16 lanes of staging. */
static size_t rw_image_floats(const rw_plan *d)
{
    return (size_t)(d->c * d->hp * d->T * FC_RW_N) + (size_t)(d->h * d->wt) + 2 * RW_L +
           (d->pool ? (size_t)(RW_L * d->ho * d->wo) : 0);
}

/*
 * One image, the output channels in the lanes: the same V (lanes are tiles of
 * a row here), the same FMA chains (U a vector of channels, V broadcast), the
 * same output transform and write-out per channel. The lanes past k (and past
 * the tiles of a row) compute on zeros and are not stored.
 */
FC_TGT_AVX512 static void rw_image(const rw_plan *d, ptrdiff_t img, float *buf)
{
    const ptrdiff_t T = d->T, hw = d->h * d->w;
    const float *x = d->x + img * d->c * hw;
    float *vs = buf; /* vs[((c * hp + row) * T + t) * 9 + p], input rows only */
    float *pplane = vs + d->c * d->hp * T * FC_RW_N;
    const ptrdiff_t plen = d->h * d->wt;
    float *stage = (float *)(((uintptr_t)(pplane + plen) + 63) & ~(uintptr_t)63);
    float *y = d->y + img * d->k * d->ho * d->wo;
    /* when pooling: 16 channels' outputs before their pool, yk[(y * wo + x) * 16 + l] */
    float *yk = stage + RW_L;
    const __m512i nine = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(9));

    /* a padded input plane: zero columns around [pl, pl + w), which every
     * channel overwrites the same. Lanes are 16 of the plane's h * T row
     * segments (r, t) at a time, whose V rows follow one another in vs. */
    for (ptrdiff_t s = 0; s < plen; ++s) pplane[s] = 0.0f;
    const ptrdiff_t nseg = d->h * T;
    for (ptrdiff_t c = 0; c < d->c; ++c) {
        for (ptrdiff_t r = 0; r < d->h; ++r)
            memcpy(pplane + r * d->wt + d->pl, x + c * hw + r * d->w, sizeof(float) * (size_t)d->w);
        float *vseg = vs + (c * d->hp + d->pt) * T * FC_RW_N;
        for (ptrdiff_t s0 = 0; s0 < nseg; s0 += RW_L) {
            const __mmask16 sm = fc_lanes_mask(nseg - s0);
            int idx[RW_L];
            for (int l = 0; l < RW_L; ++l) {
                const ptrdiff_t sg = s0 + l < nseg ? s0 + l : 0;
                idx[l] = (int)((sg / T) * d->wt + 5 * (sg % T));
            }
            const __m512i base = _mm512_loadu_si512(idx);
            __m512 in[FC_RW_N], v[FC_RW_N];
            for (int j = 0; j < FC_RW_N; ++j)
                in[j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), sm, base, pplane + j, 4);
            fc_rw_input_avx512(in, v);
            for (int p = 0; p < FC_RW_N; ++p)
                _mm512_mask_i32scatter_ps(vseg + s0 * FC_RW_N + p, sm, nine, v[p], 4);
        }
    }

    const ptrdiff_t pstep = FC_RW_R * d->c * d->kp;
    for (ptrdiff_t kb = 0; kb < d->k; kb += RW_L) {
        const ptrdiff_t nk = FC_MIN((ptrdiff_t)RW_L, d->k - kb);
        const __m512 bv = d->bias ? _mm512_maskz_loadu_ps(fc_lanes_mask(nk), d->bias + kb)
                                  : _mm512_setzero_ps();
        for (ptrdiff_t yy = 0; yy < d->ho; ++yy) {
            ptrdiff_t lo, hi;
            rw_rows(d, yy, &lo, &hi);
            for (ptrdiff_t t0 = 0; t0 < T; t0 += 2) {
                /* two tiles at once where there are two: each U vector serves both */
                const int nt = T - t0 >= 2 ? 2 : 1;
                __m512 m[2][FC_RW_N];
                RW_UNROLL for (int p = 0; p < FC_RW_N; ++p) m[0][p] = m[1][p] = _mm512_setzero_ps();
                if (nt == 2) {
                    for (ptrdiff_t c = 0; c < d->c; ++c)
                        for (ptrdiff_t i = lo; i <= hi; ++i) {
                            const float *v = vs + ((c * d->hp + yy + i) * T + t0) * FC_RW_N;
                            const float *u = d->up + (c * FC_RW_R + i) * d->kp + kb;
                            RW_UNROLL for (int p = 0; p < FC_RW_N; ++p) {
                                const __m512 up = _mm512_load_ps(u + p * pstep);
                                m[0][p] = _mm512_fmadd_ps(_mm512_set1_ps(v[p]), up, m[0][p]);
                                m[1][p] = _mm512_fmadd_ps(_mm512_set1_ps(v[FC_RW_N + p]), up,
                                                          m[1][p]);
                            }
                        }
                } else {
                    for (ptrdiff_t c = 0; c < d->c; ++c)
                        for (ptrdiff_t i = lo; i <= hi; ++i) {
                            const float *v = vs + ((c * d->hp + yy + i) * T + t0) * FC_RW_N;
                            const float *u = d->up + (c * FC_RW_R + i) * d->kp + kb;
                            RW_UNROLL for (int p = 0; p < FC_RW_N; ++p)
                                m[0][p] = _mm512_fmadd_ps(_mm512_set1_ps(v[p]),
                                                          _mm512_load_ps(u + p * pstep), m[0][p]);
                        }
                }
                for (int s = 0; s < nt; ++s) {
                    const ptrdiff_t t = t0 + s;
                    __m512 o[FC_RW_M];
                    fc_rw_output_avx512(m[s], o);
                    for (int q = 0; q < FC_RW_M; ++q) {
                        const ptrdiff_t col = 5 * t + q;
                        if (col >= d->wo) break;
                        const __m512 r = rw_finish(o[q], bv, d->relu);
                        if (d->pool) { /* channels stay in the lanes until the pool */
                            _mm512_store_ps(yk + (yy * d->wo + col) * RW_L, r);
                            continue;
                        }
                        _mm512_store_ps(stage, r);
                        for (ptrdiff_t l = 0; l < nk; ++l)
                            y[((kb + l) * d->ho + yy) * d->wo + col] = stage[l];
                    }
                }
            }
        }
        if (d->pool) {
            /* the block path's pool, on vectors of channels: the same compares */
            const ptrdiff_t ho2 = d->ho / 2, wo2 = d->wo / 2;
            float *yp = d->y + (img * d->k + kb) * ho2 * wo2;
            for (ptrdiff_t r = 0; r < ho2; ++r)
                for (ptrdiff_t j = 0; j < wo2; ++j) {
                    const float *r0 = yk + ((2 * r) * d->wo + 2 * j) * RW_L;
                    const float *r1 = r0 + d->wo * RW_L;
                    const __m512 v[4] = {_mm512_load_ps(r0), _mm512_load_ps(r0 + RW_L),
                                         _mm512_load_ps(r1), _mm512_load_ps(r1 + RW_L)};
                    const __m512 best = fc_lanes_max4(v);
                    _mm512_store_ps(stage, best);
                    for (ptrdiff_t l = 0; l < nk; ++l) yp[(l * ho2 + r) * wo2 + j] = stage[l];
                }
        }
    }
}

/* The images past the last whole block, one task each. */
static void rw_image_task(const void *d, ptrdiff_t img, float *buf)
{
    rw_image((const rw_plan *)d, img, buf);
}

static int rw_images(const rw_plan *d, ptrdiff_t i0, int nt)
{
    const ptrdiff_t ni = d->n - i0;
    if (ni <= 0) return FC_OK;
    nt = (int)FC_MIN((ptrdiff_t)nt, ni);
    fc_simd_ran(FC_SIMD_AVX512);
    return fc_scratch_run(i0, d->n, nt, sizeof(float) * rw_image_floats(d), rw_image_task, d);
}

/* The convolution of the plan's x with U: whole blocks of 16 in image lanes,
 * then the rest one image at a time. */
static int rw_conv(const rw_plan *d, int nt)
{
    const ptrdiff_t nfull = d->n / RW_L * RW_L;
    int rc = FC_OK;
    if (nfull > 0)
        rc = fc_lanes_run(nfull, nt, FC_CEILDIV(d->k, (ptrdiff_t)d->mr),
                          sizeof(float) * rw_block_floats(d), rw_block, d);
    const double rest = (double)(d->n - nfull) * (double)(d->k * d->ho * d->wo * d->c * 25);
    if (rc == FC_OK) rc = rw_images(d, nfull, fc_team_for(nt, rest));
    return rc;
}

/*
 * The plan of a convolution of x (n, c, h, w), padded pt on top and pl on the
 * left, into y (n, k, ho, wo), and U: up[((p * c + c) * 5 + i) * kp + k] =
 * (G g)[p] for the taps g of output channel k, input channel c, kernel row i:
 * w[k][c][i][0..4] (forward), or for grad_input (flip) w[c][k][4 - i][4 .. 0],
 * w being (c, k, 5, 5) there. Zero for k >= k (the register blocks and the
 * image lanes past k). G is applied in double, rounded once, as fc_rw_filter
 * does; vectorised over the weight rows (at batch 1 the transform is a good
 * part of the call).
 */
FC_TGT_AVX512 static int rw_setup(rw_plan *d, const float *w, int flip)
{
    const ptrdiff_t k = d->k, c = d->c, nrow = k * c * FC_RW_R;
    d->T = FC_CEILDIV(d->wo, (ptrdiff_t)FC_RW_M);
    d->hp = d->ho + FC_RW_R - 1;
    d->wt = 5 * d->T + FC_RW_R - 1;
    d->mr = rw_pick_mr(k, d->T);
    d->kp = FC_ROUNDUP(FC_ROUNDUP(k, (ptrdiff_t)d->mr), (ptrdiff_t)RW_L);
    const size_t ulen = (size_t)(FC_RW_N * c * FC_RW_R * d->kp);
    float *up = (float *)fc_malloc(sizeof(float) * ulen);
    /* rows padded to whole vectors of 8 */
    const ptrdiff_t nrowp = FC_ROUNDUP(nrow, (ptrdiff_t)8);
    float *acc = (float *)fc_malloc(sizeof(float) * (size_t)(FC_RW_N * nrowp)); /* U by point */
    float *tap = (float *)fc_malloc(sizeof(float) * (size_t)(FC_RW_R * nrowp));
    if (!up || !acc || !tap) {
        fc_free(up); fc_free(acc); fc_free(tap);
        return FC_ENOMEM;
    }
    memset(up, 0, sizeof(float) * ulen);
    memset(tap, 0, sizeof(float) * (size_t)(FC_RW_R * nrowp));
    /* tap[j][row], row = (cc * 5 + i) * k + kk: a U row's channels follow one another */
    for (ptrdiff_t kk = 0; kk < k; ++kk)
        for (ptrdiff_t cc = 0; cc < c; ++cc)
            for (ptrdiff_t i = 0; i < FC_RW_R; ++i) {
                const ptrdiff_t row = (cc * FC_RW_R + i) * k + kk;
                const float *g = flip ? w + (cc * k + kk) * 25 + (4 - i) * 5 + 4
                                      : w + (kk * c + cc) * 25 + i * 5;
                const ptrdiff_t step = flip ? -1 : 1;
                for (ptrdiff_t j = 0; j < FC_RW_R; ++j) tap[j * nrowp + row] = g[j * step];
            }
    /* 8 rows a vector, the sum of each point in a register: per row and
     * point the scalar s = 0, s += G[p][j] * g[j] of fc_rw_filter */
    for (ptrdiff_t r0 = 0; r0 < nrow; r0 += 8) {
        __m512d t[FC_RW_R];
        for (int j = 0; j < FC_RW_R; ++j) t[j] = _mm512_cvtps_pd(_mm256_loadu_ps(tap + j * nrowp + r0));
        for (int p = 0; p < FC_RW_N; ++p) {
            __m512d sum = _mm512_setzero_pd();
            for (int j = 0; j < FC_RW_R; ++j)
                sum = _mm512_add_pd(sum, _mm512_mul_pd(_mm512_set1_pd((double)fc_rw_g[p][j]), t[j]));
            _mm256_storeu_ps(acc + p * nrowp + r0, _mm512_cvtpd_ps(sum));
        }
    }
    for (int p = 0; p < FC_RW_N; ++p)
        for (ptrdiff_t ci = 0; ci < c * FC_RW_R; ++ci) {
            float *dst = up + (p * c * FC_RW_R + ci) * d->kp;
            const float *src = acc + p * nrowp + ci * k;
            for (ptrdiff_t kk = 0; kk < k; ++kk) dst[kk] = src[kk];
        }
    fc_free(acc);
    fc_free(tap);
    d->up = up;
    return FC_OK;
}
#endif /* FC_X86_SIMD */

/*
 * Whether the layer's weights are all finite. The route skips the kernel rows
 * that fall on padding rows, where the direct kernels' implicit route
 * multiplies them (0 * inf = NaN): a layer with a non-finite weight runs the
 * direct kernels instead, which keep it on their implicit route, so its
 * outputs are what every other route gives (tests/test_conv_lanes.py).
 */
static int rw_weights_finite(const float *w, const fc_conv_geom *g)
{
#if FC_X86_SIMD
    return fc_lanes_weights_finite(w, g->k * g->c * g->kh * g->kw);
#else
    (void)w; (void)g;
    return 1;
#endif
}

static int rw_forward(const float *x, const float *w, const float *bias, const fc_conv_geom *g,
                      int relu, int pool, int nthreads, float *y)
{
#if FC_X86_SIMD
    if (g->n <= 0 || g->k <= 0 || g->ho <= 0 || g->wo <= 0) return FC_OK;
    nthreads = fc_threads_for(nthreads, fc_conv_work(g) / FC_CONV_FWD_MACS_PER_WORK);
    rw_plan d;
    d.x = x; d.bias = bias; d.y = y; d.relu = relu; d.pool = pool;
    d.n = g->n; d.c = g->c; d.h = g->h; d.w = g->w; d.k = g->k;
    d.pt = g->ph; d.pl = g->pw; d.ho = g->ho; d.wo = g->wo;
    if (rw_setup(&d, w, 0) != FC_OK) return FC_ENOMEM;
    const int rc = rw_conv(&d, nthreads);
    fc_free((void *)d.up);
    return rc;
#else
    (void)x; (void)w; (void)bias; (void)g; (void)relu; (void)pool; (void)nthreads; (void)y;
    return FC_OK; /* not reached: the callers check the level */
#endif
}

int fc_conv2d_fwd_rowwino_f32(const float *x, const float *w, const float *bias,
                              const fc_conv_geom *g, int relu, int nthreads, float *y)
{
    /* below AVX-512 (a plan made at that level, run after a switch): what the
     * route rule chooses at this level */
    if (fc_simd_dispatch() < FC_SIMD_AVX512 || !rw_weights_finite(w, g))
        return fc_conv2d_fwd_f32(x, w, bias, g, relu, nthreads, y);
    return rw_forward(x, w, bias, g, relu, 0, nthreads, y);
}

int fc_conv2d_fwd_rowwino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                       const fc_conv_geom *g, int relu, int nthreads, float *yp)
{
    if (fc_simd_dispatch() < FC_SIMD_AVX512 || !rw_weights_finite(w, g))
        return fc_conv2d_fwd_maxpool2_f32(x, w, bias, g, relu, nthreads, yp);
    return rw_forward(x, w, bias, g, relu, 1, nthreads, yp);
}

int fc_conv2d_grad_input_rowwino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                     int nthreads, float *gx)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() < FC_SIMD_AVX512 || !rw_weights_finite(w, g))
        return fc_conv2d_grad_input_f32(gy, w, g, nthreads, gx);
    if (g->n <= 0 || g->c <= 0 || g->h <= 0 || g->w <= 0) return FC_OK;
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
    /* gx = the forward of gy padded (4 - pt, ., 4 - pl, .), k and c swapped */
    rw_plan d;
    d.x = gy; d.bias = NULL; d.y = gx; d.relu = 0; d.pool = 0;
    d.n = g->n; d.c = g->k; d.h = g->ho; d.w = g->wo; d.k = g->c;
    d.pt = FC_RW_R - 1 - g->ph; d.pl = FC_RW_R - 1 - g->pw; d.ho = g->h; d.wo = g->w;
    if (rw_setup(&d, w, 1) != FC_OK) return FC_ENOMEM;
    const int rc = rw_conv(&d, nthreads);
    fc_free((void *)d.up);
    return rc;
#else
    return fc_conv2d_grad_input_f32(gy, w, g, nthreads, gx);
#endif
}
