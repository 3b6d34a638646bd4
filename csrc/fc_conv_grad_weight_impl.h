/*
 * fc_conv_grad_weight_impl.h - convolution grad_weight: the dot-product route (small
 * layers) and the packed route (NHWC patch rows, per-chunk partial sums).
 * A template (see fc_instantiate.h), instantiated by fc_conv_grad_weight.c.
 */
#include "fc_conv_common_impl.h"

/* ------------------------------------------------------------ grad weight -- */
/*
 * gw[m, (i, j, c)] = sum_p gy[m, p] * patch[p, (i, j, c)], reduced over pixel
 * blocks of PB pixels. The patch rows are read from an NHWC padded copy of x,
 * where the kw*C values of one kernel row are contiguous. Blocks are grouped
 * into at most FC_DW_CHUNKS chunks (a function of the shape only); each chunk
 * sums into its own partial buffer and the partials are added in chunk order.
 */
/* Sum of n values in a fixed order: 16 interleaved lanes (vectorisable without
 * reassociation by the compiler), then the lanes in a fixed tree. */
FC_SIMD_PROC(SFX(sum_lanes), (const REAL *v, ptrdiff_t n, REAL *sum), (v, n, sum))
{
    REAL l[16] = {0};
    ptrdiff_t p = 0;
    for (; p + 16 <= n; p += 16)
        for (int q = 0; q < 16; ++q) l[q] += v[p + q];
    for (int q = 0; p < n; ++p, ++q) l[q] += v[p];
    for (int w = 8; w >= 1; w /= 2)
        for (int q = 0; q < w; ++q) l[q] += l[q + w];
    *sum = l[0];
}

#define FC_DW_PB 256
/* Image chunks of the dot route: partial sums per chunk, merged in chunk order.
 * Fewer, longer chunks amortise the dot kernel's horizontal sums (b: 0.55 ->
 * 0.43 ms at one thread going from 32 to 8); row tiles supply the parallelism. */
#ifndef FC_DW_CHUNKS
#define FC_DW_CHUNKS 8
#endif

/*
 * Small layers (first layers: few output channels times a small patch) take a
 * dot-product route instead: gw[m, k] = sum_q gyq[m, q] * xq[q + koff[k]], with
 * gyq = gy laid on the forward pass's column grid (zeros in the junk columns)
 * and xq the forward pass's padded, phase-split input. Nothing is packed per
 * pixel, and the vector accumulators stay in registers across all the images
 * of a chunk. A task is (group, image chunk, tile of dmr output channels); it
 * lays its own gy rows on the grid in a small per-thread buffer that stays in
 * cache, and writes its own slice of its chunk's partial sums. Chunks are fixed
 * runs of images, merged in order, so the thread count never changes a result.
 */
static int SFX(grad_weight_dot)(const KERN *kk, const REAL *gy, const REAL *x,
                               const fc_conv_geom *g, int nt, REAL *gw, REAL *gb)
{
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G, K = g->k;
    const ptrdiff_t ckk = cg * g->kh * g->kw;
    const ptrdiff_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw;
    const ptrdiff_t hq = FC_CEILDIV(hp, g->sh), wq = FC_CEILDIV(wp, g->sw);
    const ptrdiff_t plane = hq * wq;
    ptrdiff_t img;
    if (!SFX(phase_img)(g, hq, wq, &img)) return FC_ENOMEM;
    const ptrdiff_t lq = FC_ROUNDUP(g->ho * wq, (ptrdiff_t)kk->dvl);
    const ptrdiff_t hwo = g->ho * g->wo;
    const ptrdiff_t N = g->n, nch = FC_MIN(N, (ptrdiff_t)FC_DW_CHUNKS);
    const ptrdiff_t part = K * ckk + K;
    /* the kernel with 5 offsets where it pads the patch less (25 taps: 25 not 30) */
    const int use5 = FC_ROUNDUP(ckk, (ptrdiff_t)5) < FC_ROUNDUP(ckk, (ptrdiff_t)kk->dnr);
    const int dmr = kk->dmr, dnr = use5 ? 5 : kk->dnr;
    const ptrdiff_t ntile = FC_CEILDIV(mg, (ptrdiff_t)dmr);
    const ptrdiff_t ntask = G * nch * ntile;
    const ptrdiff_t chunk_max = FC_CEILDIV(N, nch);
    int rc = FC_OK, failed = 0;

    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)ckk);
    REAL *parts = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(nch * part));
    REAL *xq = NULL;
    if (!koff || !parts) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t kmax = 0;
    for (ptrdiff_t c = 0, k = 0; c < cg; ++c)
        for (ptrdiff_t i = 0; i < g->kh; ++i)
            for (ptrdiff_t j = 0; j < g->kw; ++j, ++k) {
                const ptrdiff_t ei = i * g->dh, ej = j * g->dw;
                const ptrdiff_t phase = (ei % g->sh) * g->sw + (ej % g->sw);
                koff[k] = (phase * g->c + c) * plane + (ei / g->sh) * wq + ej / g->sw;
                kmax = FC_MAX(kmax, koff[k]);
            }
    const ptrdiff_t slack = FC_MAX((ptrdiff_t)0, lq + kmax - img) + 64;
    xq = SFX(alloc_grid)(N, img, slack);
    if (!xq) { rc = FC_ENOMEM; goto done; }
    SFX(pad_phase_copy)(x, N, g->c, g->h, g->w, g->sh, g->sw, g->ph, g->pw, hq, wq, img, nt, xq);
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && ntask > 1)
    {
        fc_team_arrive(&tm);
        /* rows r of the tile, images of the chunk: gl[(r * chunk_max + im) * lq + q] */
        REAL *gl = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(dmr * chunk_max * lq));
        if (!gl) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t) {
            if (!gl) continue;
            const ptrdiff_t gi = t / (nch * ntile), ch = (t / ntile) % nch, mt = t % ntile;
            const ptrdiff_t i0 = ch * N / nch, i1 = (ch + 1) * N / nch, ni = i1 - i0;
            const ptrdiff_t m0 = mt * dmr, mrows = FC_MIN((ptrdiff_t)dmr, mg - m0);
            REAL *pc = parts + ch * part;
            const REAL *grow[8];
            ptrdiff_t off[8];
            REAL tile[64];
            /* gy rows on the column grid, junk columns and the tail zero; an
             * edge tile repeats its last row (the extra sums are dropped) */
            for (int r = 0; r < dmr; ++r) {
                const ptrdiff_t m = gi * mg + m0 + FC_MIN((ptrdiff_t)r, mrows - 1);
                for (ptrdiff_t im = 0; im < ni; ++im) {
                    REAL *d = gl + (r * chunk_max + im) * lq;
                    const REAL *sr = gy + ((i0 + im) * K + m) * hwo;
                    for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
                        memcpy(d + oh * wq, sr + oh * g->wo, sizeof(REAL) * (size_t)g->wo);
                        for (ptrdiff_t q = g->wo; q < wq; ++q) d[oh * wq + q] = 0;
                    }
                    for (ptrdiff_t q = g->ho * wq; q < lq; ++q) d[q] = 0;
                }
                grow[r] = gl + r * chunk_max * lq;
            }
            for (ptrdiff_t c0 = 0; c0 < ckk; c0 += dnr) {
                for (int c = 0; c < dnr; ++c) off[c] = koff[FC_MIN(c0 + c, ckk - 1)];
                memset(tile, 0, sizeof(tile));
                (use5 ? kk->dot5 : kk->dot)(lq, (int)ni, grow, lq,
                                            xq + i0 * img + gi * cg * plane, img, off, tile, dnr);
                for (ptrdiff_t r = 0; r < mrows; ++r)
                    for (int c = 0; c < dnr && c0 + c < ckk; ++c)
                        pc[(gi * mg + m0 + r) * ckk + c0 + c] = tile[r * dnr + c];
            }
            if (gb)
                for (ptrdiff_t r = 0; r < mrows; ++r) {
                    REAL sb = 0;
                    for (ptrdiff_t im = 0; im < ni; ++im) {
                        REAL part;
                        SFX(sum_lanes)(gl + (r * chunk_max + im) * lq, lq, &part);
                        sb += part;
                    }
                    pc[K * ckk + gi * mg + m0 + r] = sb;
                }
        }
        fc_free(gl);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) { rc = FC_ENOMEM; goto done; }
    {
        ptrdiff_t t, total = K * ckk + (gb ? K : 0);
        fc_team tm;
        fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && total > 4096)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (t = 0; t < total; ++t) {
            REAL s = parts[t];
            for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + t];
            if (t < K * ckk) gw[t] = s;
            else gb[t - K * ckk] = s;
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }
done:
    free(koff);
    fc_free(parts);
    fc_free(xq);
    return rc;
}

/* Below this many weights per group the dot route wins (measured on a, b, c). */
#ifndef FC_DW_DOT_MAX
#define FC_DW_DOT_MAX 4096
#endif

int SFX(fc_conv2d_grad_weight)(const REAL *gy, const REAL *x, const fc_conv_geom *g,
                              int nthreads, REAL *gw, REAL *gb)
{
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
    const KERN *kk = GETK();
    {
        const ptrdiff_t dot_max = fc_route_override(FC_OVERRIDE_DW_DOT_MAX, FC_DW_DOT_MAX);
        if ((g->k / g->groups) * (g->c / g->groups) * g->kh * g->kw <= dot_max)
            return SFX(grad_weight_dot)(kk, gy, x, g, nthreads, gw, gb);
    }
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G, C = g->c;
    const ptrdiff_t kh = g->kh, kw = g->kw, ckk = cg * kh * kw;
    const ptrdiff_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw;
    const ptrdiff_t hw = g->ho * g->wo;
    const ptrdiff_t nbi = FC_CEILDIV(hw, FC_DW_PB); /* pixel blocks per image */
    const ptrdiff_t nblk = g->n * nbi;
    int rc = FC_OK;

    PLAN pl = SFX(plan_rows)(kk, mg);
    const ptrdiff_t nr_max = SFX(widest)(kk);
    /* patch row length: each kernel's last column tile may overhang ckk, and a
     * narrower kernel can overhang further (ckk 10: 8-wide tiles reach 16,
     * 12-wide ones 12), so take the larger of both roundings */
    const ptrdiff_t ldb = FC_MAX(FC_ROUNDUP(ckk, (ptrdiff_t)kk->nr[pl.slot_full]),
                                 FC_ROUNDUP(ckk, (ptrdiff_t)kk->nr[pl.slot_tail]));
    const ptrdiff_t part_g = pl.mpad * ldb;            /* partial for one group */
    const ptrdiff_t part = G * part_g + g->k;          /* + bias partial */
    /* chunk count: a function of the shape only, capped so partials stay < 256 MiB */
    ptrdiff_t nch = FC_MIN(nblk, (ptrdiff_t)FC_DW_CHUNKS);
    while (nch > 1 && (double)nch * (double)part * sizeof(REAL) > 256.0 * 1048576.0) nch /= 2;
    if (nch < 1) nch = 1;

    REAL *xh = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(g->n * hp * wp * C));
    REAL *parts = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(nch * part));
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * FC_DW_PB);
    if (!xh || !parts || !koff) { rc = FC_ENOMEM; goto done; }
    for (ptrdiff_t p = 0; p < FC_DW_PB; ++p) koff[p] = p * ldb;

    /* NHWC padded copy of x */
    {
        ptrdiff_t t, total = g->n * hp;
        fc_team tm;
        fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (t = 0; t < total; ++t) {
            const ptrdiff_t in = t / hp, yp = t % hp, ys = yp - g->ph;
            REAL *d = xh + (in * hp + yp) * wp * C;
            if (ys < 0 || ys >= g->h) {
                memset(d, 0, sizeof(REAL) * (size_t)(wp * C));
                continue;
            }
            memset(d, 0, sizeof(REAL) * (size_t)(g->pw * C));
            memset(d + (g->pw + g->w) * C, 0, sizeof(REAL) * (size_t)(g->pw * C));
            const REAL *s = x + in * C * g->h * g->w + ys * g->w;
            for (ptrdiff_t c = 0; c < C; ++c)
                for (ptrdiff_t xx = 0; xx < g->w; ++xx)
                    d[(g->pw + xx) * C + c] = s[c * g->h * g->w + xx];
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }

    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && nch > 1)
    {
        fc_team_arrive(&tm);
        REAL *patch = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(FC_DW_PB * ldb + nr_max));
        REAL *at = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(FC_DW_PB * pl.mpad));
        if (!patch || !at) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* columns ckk..ldb of every patch row stay zero: the copies below never touch them */
            memset(patch, 0, sizeof(REAL) * (size_t)(FC_DW_PB * ldb + nr_max));
        }
        ptrdiff_t ch;
#pragma omp for schedule(static) nowait
        for (ch = 0; ch < nch; ++ch) {
            if (!patch || !at) continue;
            REAL *pc = parts + ch * part;
            memset(pc, 0, sizeof(REAL) * (size_t)part);
            const ptrdiff_t b0 = ch * nblk / nch, b1 = (ch + 1) * nblk / nch;
            for (ptrdiff_t bi = b0; bi < b1; ++bi) {
                const ptrdiff_t in = bi / nbi, p0 = (bi % nbi) * FC_DW_PB;
                const ptrdiff_t pb = FC_MIN((ptrdiff_t)FC_DW_PB, hw - p0);
                const REAL *gyn = gy + in * g->k * hw;
                const REAL *xn = xh + in * hp * wp * C;
                /* bias partial (only when asked for): one fixed-order sum per block and channel */
                if (gb) {
                    REAL *pbias = pc + G * part_g;
                    for (ptrdiff_t m = 0; m < g->k; ++m) {
                        REAL part;
                        SFX(sum_lanes)(gyn + m * hw + p0, pb, &part);
                        pbias[m] += part;
                    }
                }
                for (ptrdiff_t gi = 0; gi < G; ++gi) {
                    /* patch rows: patch[p, (i, j, c)] */
                    for (ptrdiff_t p = 0; p < pb; ++p) {
                        const ptrdiff_t oh = (p0 + p) / g->wo, ow = (p0 + p) % g->wo;
                        REAL *row = patch + p * ldb;
                        for (ptrdiff_t i = 0; i < kh; ++i) {
                            const REAL *srow = xn + ((oh * g->sh + i * g->dh) * wp
                                                     + ow * g->sw) * C + gi * cg;
                            REAL *drow = row + i * kw * cg;
                            if (g->dw == 1 && G == 1) {
                                /* one contiguous run of kw*C values; short runs inline */
                                const ptrdiff_t len = kw * C;
                                if (len < 32)
                                    for (ptrdiff_t e = 0; e < len; ++e) drow[e] = srow[e];
                                else
                                    memcpy(drow, srow, sizeof(REAL) * (size_t)len);
                            } else {
                                for (ptrdiff_t j = 0; j < kw; ++j)
                                    for (ptrdiff_t e = 0; e < cg; ++e)
                                        drow[j * cg + e] = srow[j * g->dw * C + e];
                            }
                        }
                    }
                    /* A = gy^T of this group, packed in panels of mr rows per pixel */
                    {
                        const ptrdiff_t npan = pl.nfull + (pl.mr_tail > 0);
                        REAL *a = at;
                        for (ptrdiff_t pi = 0; pi < npan; ++pi) {
                            ptrdiff_t mr = pi < pl.nfull ? pl.mr_full : pl.mr_tail;
                            ptrdiff_t r0 = pi * pl.mr_full;
                            for (ptrdiff_t p = 0; p < pb; ++p)
                                for (ptrdiff_t r = 0; r < mr; ++r)
                                    a[p * mr + r] = r0 + r < mg
                                        ? gyn[(gi * mg + r0 + r) * hw + p0 + p] : (REAL)0;
                            a += pb * mr;
                        }
                    }
                    /* partial[m, k] += sum_p A[p, m] * patch[p, k] */
                    {
                        const ptrdiff_t npan = pl.nfull + (pl.mr_tail > 0);
                        const REAL *a = at;
                        REAL *cpart = pc + gi * part_g;
                        for (ptrdiff_t pi = 0; pi < npan; ++pi) {
                            const int slot = pi < pl.nfull ? pl.slot_full : pl.slot_tail;
                            const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
                            for (ptrdiff_t jr = 0; jr < ckk; jr += nr)
                                kk->ukr[slot](pb, a, patch + jr, koff,
                                              cpart + pi * pl.mr_full * ldb + jr, ldb, 1);
                            a += pb * mr;
                        }
                    }
                }
            }
        }
        fc_free(patch);
        fc_free(at);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) { rc = FC_ENOMEM; goto done; }

    /* merge partials in chunk order; permute (i, j, c) -> (c, i, j) */
    {
        ptrdiff_t t, total = g->k;
        fc_team tm;
        fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (t = 0; t < total; ++t) {
            const ptrdiff_t gi = t / mg, m = t % mg;
            REAL *dst = gw + t * ckk;
            for (ptrdiff_t c = 0; c < cg; ++c)
                for (ptrdiff_t i = 0; i < kh; ++i)
                    for (ptrdiff_t j = 0; j < kw; ++j) {
                        const ptrdiff_t src = gi * part_g + m * ldb + (i * kw + j) * cg + c;
                        REAL s = parts[src];
                        for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + src];
                        dst[(c * kh + i) * kw + j] = s;
                    }
            if (gb) {
                REAL s = parts[G * part_g + t];
                for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + G * part_g + t];
                gb[t] = s;
            }
        }
        fc_team_done(&tm);
        }
        fc_team_end(&tm);
    }
done:
    fc_free(xh);
    fc_free(parts);
    free(koff);
    return rc;
}

#undef JOB
#undef PLAN
