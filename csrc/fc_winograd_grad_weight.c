/*
 * fc_winograd_grad_weight.c - Winograd F(2x2, 5x5) and F(4x4, 3x3) grad_weight,
 * float32 (the kernel size g->kh, 5 or 3, picks the output tile size mt).
 *
 * dU[p] (C x K) = sum over tiles of V[p] (x) Z[p]: GEMM rows are input
 * channels, read straight from V in the forward's layout (V point p of channel
 * c at vb[(c * NP + p) * vp_pitch + col], tile columns as wino_tile_col lays
 * them out) by the row-A micro-kernels, so V is never repacked; columns are
 * grad_y channels (B: Z[p][tile][k], made WL channels at a time from a
 * channels-last copy of grad_y); the reduction runs over a block's tile
 * columns, a spare column reading a zero row of B. dW = G^T dU G.
 *
 * Plan (wino_gw_plan) -> per-chunk task (wino_gw_chunk: its blocks, in order,
 * into its own partial dU) -> fixed-order merge (wino_merge_chunks), then the
 * weight untransform and the bias sums. Chunks depend on the shape only.
 */
#include "fc_winograd_common.h"
#if FC_X86_SIMD
#include "fc_transpose16.h"
#endif

#define WINO_DW_CHUNKS 8                 /* partial sums (fixed; not the thread count) */
#define WINO_DW_PARTIAL_BYTES (64 << 20) /* cap on all partials together */

typedef struct {
    const fc_kernels_f32 *kk;
    const fc_ukr_rows_f32 *rk;
    const float *xp;            /* padded x, as the forward pads it */
    const float *gyt;           /* grad_y channels-last, channels padded to k16 */
    ptrdiff_t C, K, ho, wo;
    int kr, mt;                 /* kernel size, output tile size (wino_mt) */
    ptrdiff_t th, tw, trows, wp, plane;
    int slot;
    ptrdiff_t mr, nr;
    ptrdiff_t rpad, cpad;       /* C rounded to mr, K rounded to nr */
    ptrdiff_t k16, ldb;         /* K rounded to WL; B row pitch */
    ptrdiff_t rpb, nblk;        /* tile rows per block, blocks */
    ptrdiff_t blk_tiles, bcols; /* tiles per block, their V columns */
    ptrdiff_t vp_pitch;
    ptrdiff_t part, nchunk;     /* elements of one partial dU, chunks */
} wino_gw;

static void wino_gw_plan(const fc_conv_geom *g, wino_gw *p)
{
    p->kk = fc_get_kernels_f32();
    p->rk = fc_get_row_kernels_f32();
    p->C = g->c; p->K = g->k; p->ho = g->ho; p->wo = g->wo;
    p->kr = (int)g->kh; p->mt = wino_mt(g->kh);
    p->th = FC_CEILDIV(g->ho, p->mt); p->tw = FC_CEILDIV(g->wo, p->mt);
    p->trows = g->n * p->th;
    p->wp = p->mt * p->tw + 6 - p->mt;
    p->plane = (p->mt * p->th + 6 - p->mt) * p->wp;
    p->slot = wino_slot(p->kk, p->C, p->K);
    p->mr = p->kk->mr[p->slot]; p->nr = p->kk->nr[p->slot];
    p->rpad = FC_ROUNDUP(p->C, p->mr); p->cpad = FC_ROUNDUP(p->K, p->nr);
    p->k16 = FC_ROUNDUP(p->K, WL); p->ldb = FC_MAX(p->cpad, p->k16);
    ptrdiff_t rpb = WINO_BLOCK_BYTES / (NP * (p->rpad + p->ldb) * (ptrdiff_t)sizeof(float) * p->tw);
    p->rpb = FC_MAX((ptrdiff_t)1, FC_MIN(rpb, p->trows));
    p->blk_tiles = p->rpb * p->tw;
    p->bcols = wino_block_cols(p->rpb, p->tw, p->mt);
    p->vp_pitch = FC_ROUNDUP(p->bcols, (ptrdiff_t)WL) + 2 * WL;
    p->nblk = FC_CEILDIV(p->trows, p->rpb);
    p->part = NP * p->rpad * p->cpad;
    ptrdiff_t nchunk = FC_MIN((ptrdiff_t)WINO_DW_CHUNKS, p->nblk);
    p->nchunk = FC_MAX((ptrdiff_t)1, FC_MIN(nchunk, (ptrdiff_t)(WINO_DW_PARTIAL_BYTES /
                                                               (p->part * sizeof(float)))));
}

#if FC_X86_SIMD
/* Channels [0, K16) x pixels [p0, p0 + 16) of one image, K16 a multiple of 16, by
 * 16x16 register transposes (the scalar loop was as long as the GEMMs of a
 * 3x3 layer's grad-weight: bench e 32x64x56x56). Returns the channels done. */
FC_TGT_AVX512 static ptrdiff_t wino_gy_t16(const float *src, ptrdiff_t K, ptrdiff_t hw,
                                           ptrdiff_t p0, ptrdiff_t k16, float *dst)
{
    ptrdiff_t k0 = 0;
    for (; k0 + 16 <= K; k0 += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (k0 + i) * hw + p0);
        fc_transpose16_avx512(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (p0 + i) * k16 + k0, r[i]);
    }
    return k0;
}
#endif

/* grad_y channels-last, channels padded with zeros to a multiple of WL */
static void wino_gy_channels_last(const float *gy, ptrdiff_t n, ptrdiff_t K, ptrdiff_t hw,
                                  ptrdiff_t k16, int nt, float *gyt /* OUT */)
{
    ptrdiff_t in;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (in = 0; in < n; ++in) {
        const float *src = gy + in * K * hw;
        float *dst = gyt + in * hw * k16;
        for (ptrdiff_t p0 = 0; p0 < hw; p0 += 16) {
            const ptrdiff_t p1 = FC_MIN(hw, p0 + 16);
            ptrdiff_t k = 0;
#if FC_X86_SIMD
            if (p1 - p0 == 16 && fc_simd_dispatch() >= FC_SIMD_AVX512)
                k = wino_gy_t16(src, K, hw, p0, k16, dst);
#endif
            for (; k < K; ++k)
                for (ptrdiff_t q = p0; q < p1; ++q) dst[q * k16 + k] = src[k * hw + q];
            for (ptrdiff_t q = p0; q < p1; ++q)
                for (ptrdiff_t k = K; k < k16; ++k) dst[q * k16 + k] = 0;
        }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* B of tile rows [s0, s1): element (p, tile t, k) at (t*NP + p)*ldb + k, one tile's
 * points together. */
static void wino_gw_b(const wino_gw *p, ptrdiff_t s0, ptrdiff_t s1, float *bb)
{
    const ptrdiff_t th = p->th, tw = p->tw, ho = p->ho, wo = p->wo, k16 = p->k16, mt = p->mt;
    for (ptrdiff_t s = s0; s < s1; ++s) {
        const ptrdiff_t in = s / th, r = s % th;
        const int nrow = (int)FC_MIN(mt, ho - mt * r);
        for (ptrdiff_t q = 0; q < tw; ++q) {
            const int ncol = (int)FC_MIN(mt, wo - mt * q);
            const float *src = p->gyt + ((in * ho + mt * r) * wo + mt * q) * k16;
            float *dst = bb + ((s - s0) * tw + q) * NP * p->ldb;
            for (ptrdiff_t k0 = 0; k0 < k16; k0 += WL)
                if (mt == 4)
                    wino_gy_tile4(src + k0, wo * k16, k16, nrow, ncol, dst + k0, p->ldb);
                else
                    wino_gy_tile(src + k0, wo * k16, k16, nrow, ncol, dst + k0, p->ldb);
        }
    }
}

/* The B tile behind each of the ncols V columns of a block of nrows tile rows
 * (the zero tile blk_tiles for a spare column), as offsets into B. */
static void wino_gw_koff(const wino_gw *p, ptrdiff_t nrows, ptrdiff_t ncols, ptrdiff_t *koff)
{
    const ptrdiff_t tw = p->tw;
    for (ptrdiff_t col = 0; col < ncols; ++col) {
        ptrdiff_t j, q;
        if (p->mt == 2 && tw <= WINO_PAIR_MAX) { /* wino_tile_col's pairs */
            const ptrdiff_t off = col % 16;
            j = 2 * (col / 16) + (off >= tw);
            q = off >= tw ? off - tw : off;
            if (q >= tw) j = -1; /* past the pair's second row */
        } else {
            j = col / tw;
            q = col % tw;
        }
        const ptrdiff_t t = (j >= 0 && j < nrows) ? j * tw + q : p->blk_tiles;
        koff[col] = t * NP * p->ldb;
    }
}

/* One task: chunk ch's blocks in order, summed into its partial dU pc. */
static void wino_gw_chunk(const wino_gw *p, ptrdiff_t ch, float *vb, float *bb,
                          ptrdiff_t *koff, float *pc)
{
    memset(pc, 0, sizeof(float) * (size_t)p->part);
    for (ptrdiff_t b = ch * p->nblk / p->nchunk; b < (ch + 1) * p->nblk / p->nchunk; ++b) {
        const ptrdiff_t s0 = b * p->rpb, s1 = FC_MIN(p->trows, s0 + p->rpb);
        const ptrdiff_t ncols = wino_block_cols(s1 - s0, p->tw, p->mt);
        wino_in_block(p->xp, p->C, p->th, p->tw, p->mt, p->wp, p->plane, s0, s1, vb,
                      p->vp_pitch);
        wino_gw_b(p, s0, s1, bb);
        wino_gw_koff(p, s1 - s0, ncols, koff);
        for (ptrdiff_t pt = 0; pt < NP; ++pt)
            for (ptrdiff_t r0 = 0; r0 < p->rpad; r0 += p->mr) {
                const float *a = vb + (r0 * NP + pt) * p->vp_pitch;
                float *cp = pc + (pt * p->rpad + r0) * p->cpad;
                for (ptrdiff_t j = 0; j < p->cpad; j += p->nr)
                    p->rk[p->slot](ncols, a, NP * p->vp_pitch, bb + pt * p->ldb + j, koff,
                                   cp + j, p->cpad, 1);
            }
    }
}

/* All chunks, each into parts + ch * part; FC_ENOMEM if a thread's buffers failed. */
static int wino_gw_chunks(const wino_gw *p, int nt, float *parts)
{
    int failed = 0;
    const size_t v_elems = (size_t)(NP * p->rpad * p->vp_pitch);
    const size_t b_elems = (size_t)(NP * (p->blk_tiles + 1) * p->ldb);
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && p->nchunk > 1)
    {
        fc_team_arrive(&tm);
        float *vb = (float *)fc_malloc(sizeof(float) * v_elems);
        /* Z of the block's tiles, then one zero tile that spare columns read */
        float *bb = (float *)fc_malloc(sizeof(float) * b_elems);
        ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(p->bcols + 1));
        if (!vb || !bb || !koff) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* padding rows (channels past C), columns past K and the zero tile stay zero */
            memset(vb, 0, sizeof(float) * v_elems);
            memset(bb, 0, sizeof(float) * b_elems);
        }
        ptrdiff_t ch;
#pragma omp for schedule(static) nowait
        for (ch = 0; ch < p->nchunk; ++ch)
            if (vb && bb && koff) wino_gw_chunk(p, ch, vb, bb, koff, parts + ch * p->part);
        fc_free(vb);
        fc_free(bb);
        free(koff);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The partials added in chunk order into the first, element by element. */
static void wino_merge_chunks(float *parts, ptrdiff_t part, ptrdiff_t nchunk, int nthreads)
{
    const int nt = fc_threads_for(nthreads, (double)part * nchunk);
    ptrdiff_t e;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
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

/* dW = G^T dU G per (k, c), in double, from the merged dU (G: WG or WG3) */
static void wino_weight_untransform(const wino_gw *p, const float *du_all, int nthreads,
                                    float *gw)
{
    const ptrdiff_t total = p->K * p->C, C = p->C;
    const int kr = p->kr;
    const double(*G)[5] = kr == 3 ? WG3 : WG;
    const int nt = fc_threads_for(nthreads, (double)total * 1000);
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        const ptrdiff_t k = t / C, c = t % C;
        double du[6][6], tmp[5][6];
        for (int pt = 0; pt < NP; ++pt) du[pt / 6][pt % 6] = du_all[(pt * p->rpad + c) * p->cpad + k];
        for (int i = 0; i < kr; ++i)
            for (int b = 0; b < 6; ++b) {
                double s = 0;
                for (int a = 0; a < 6; ++a) s += G[a][i] * du[a][b];
                tmp[i][b] = s;
            }
        for (int i = 0; i < kr; ++i)
            for (int j = 0; j < kr; ++j) {
                double s = 0;
                for (int b = 0; b < 6; ++b) s += tmp[i][b] * G[b][j];
                gw[t * kr * kr + i * kr + j] = (float)s;
            }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* per channel: a fixed-order float sum per image plane (16 lanes), added in double */
static void wino_bias_grad(const float *gy, ptrdiff_t n, ptrdiff_t K, ptrdiff_t hw, int nt,
                           float *gb)
{
    ptrdiff_t k;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (k = 0; k < K; ++k) {
        double s = 0;
        for (ptrdiff_t in = 0; in < n; ++in) {
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

int fc_conv2d_grad_weight_wino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                   int nthreads, float *gw, float *gb)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    wino_gw p;
    wino_gw_plan(g, &p);
    const ptrdiff_t slack = wino_in_slack(p.mt); /* the input transform reads past the last patch */
    int rc = FC_OK;
    float *xp = (float *)fc_malloc(sizeof(float) * (size_t)(g->n * p.C * p.plane + slack));
    float *gyt = (float *)fc_malloc(sizeof(float) * (size_t)(g->n * p.ho * p.wo * p.k16));
    float *parts = (float *)fc_malloc(sizeof(float) * (size_t)(p.nchunk * p.part));
    if (!xp || !gyt || !parts) { rc = FC_ENOMEM; goto done; }
    memset(xp + g->n * p.C * p.plane, 0, sizeof(float) * (size_t)slack);
    wino_pad(x, g->n, p.C, g->h, g->w, g->ph, g->pw, p.plane / p.wp, p.wp, nthreads, xp);
    wino_gy_channels_last(gy, g->n, p.K, p.ho * p.wo, p.k16, nthreads, gyt);
    p.xp = xp;
    p.gyt = gyt;
    if ((rc = wino_gw_chunks(&p, nthreads, parts)) != FC_OK) goto done;
    wino_merge_chunks(parts, p.part, p.nchunk, nthreads);
    wino_weight_untransform(&p, parts, nthreads, gw);
    if (gb) wino_bias_grad(gy, g->n, p.K, p.ho * p.wo, nthreads, gb);
done:
    fc_free(xp);
    fc_free(gyt);
    fc_free(parts);
    return rc;
}
