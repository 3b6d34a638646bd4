/*
 * fc_conv_grad_weight_impl.h - convolution grad_weight: the dot-product route (small
 * layers) and the packed route (NHWC patch rows, per-chunk partial sums).
 * A template (see fc_instantiate.h), instantiated by fc_conv_grad_weight.c.
 * At the AVX-512 level, float32 layers of small images from 12 images on
 * take the image-lanes route of fc_conv_grad_weight.c instead (SFX(gwl)).
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
typedef struct {
    const KERN *kk;
    const fc_conv_geom *g;
    const REAL *gy, *xq;       /* grad_y; x padded and phase-split (the forward's grid) */
    const ptrdiff_t *koff;     /* grid offset of each weight (c, i, j) */
    int want_bias, use5, dmr, dnr;
    /* the dot kernel of every tile (the table's, or a 3-row one where the
     * 5 offsets of every call are consecutive) */
    void (*dot)(ptrdiff_t, int, const REAL *const *, ptrdiff_t, const REAL *, ptrdiff_t,
                const ptrdiff_t *, REAL *, ptrdiff_t);
    ptrdiff_t G, cg, mg, K, ckk;
    ptrdiff_t wq, plane, img;  /* grid row, plane and image */
    ptrdiff_t lq;              /* grid columns of one output plane, rounded to the vector */
    ptrdiff_t nch, chunk_max;  /* image chunks, images in the largest */
    ptrdiff_t ntile, ntask;    /* tiles of dmr output channels; tasks */
    ptrdiff_t part;            /* partial sums of one chunk: weights, then bias */
} SFX(dot_plan);

/* Task t = (group, image chunk, tile of dmr output channels), into its chunk's partials. */
static void SFX(dot_task)(const SFX(dot_plan) *d, ptrdiff_t t, REAL *gl, REAL *parts)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t N = g->n, nch = d->nch, ntile = d->ntile, lq = d->lq, wq = d->wq;
    const ptrdiff_t chunk_max = d->chunk_max, mg = d->mg, ckk = d->ckk, K = d->K;
    const int dmr = d->dmr, dnr = d->dnr;
    const ptrdiff_t gi = t / (nch * ntile), ch = (t / ntile) % nch, mt = t % ntile;
    const ptrdiff_t i0 = ch * N / nch, i1 = (ch + 1) * N / nch, ni = i1 - i0;
    const ptrdiff_t m0 = mt * dmr, mrows = FC_MIN((ptrdiff_t)dmr, mg - m0);
    const ptrdiff_t hwo = g->ho * g->wo;
    REAL *pc = parts + ch * d->part;
    const REAL *grow[8];
    ptrdiff_t off[8];
    REAL tile[64];
    /* gy rows on the column grid, junk columns and the tail zero; an
     * edge tile repeats its last row (the extra sums are dropped) */
    for (int r = 0; r < dmr; ++r) {
        const ptrdiff_t m = gi * mg + m0 + FC_MIN((ptrdiff_t)r, mrows - 1);
        for (ptrdiff_t im = 0; im < ni; ++im) {
            REAL *dr = gl + (r * chunk_max + im) * lq;
            const REAL *sr = d->gy + ((i0 + im) * K + m) * hwo;
            for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
                memcpy(dr + oh * wq, sr + oh * g->wo, sizeof(REAL) * (size_t)g->wo);
                for (ptrdiff_t q = g->wo; q < wq; ++q) dr[oh * wq + q] = 0;
            }
            for (ptrdiff_t q = g->ho * wq; q < lq; ++q) dr[q] = 0;
        }
        grow[r] = gl + r * chunk_max * lq;
    }
    for (ptrdiff_t c0 = 0; c0 < ckk; c0 += dnr) {
        for (int c = 0; c < dnr; ++c) off[c] = d->koff[FC_MIN(c0 + c, ckk - 1)];
        memset(tile, 0, sizeof(tile));
        d->dot(lq, (int)ni, grow, lq, d->xq + i0 * d->img + gi * d->cg * d->plane, d->img, off,
               tile, dnr);
        for (ptrdiff_t r = 0; r < mrows; ++r)
            for (int c = 0; c < dnr && c0 + c < ckk; ++c)
                pc[(gi * mg + m0 + r) * ckk + c0 + c] = tile[r * dnr + c];
    }
    if (d->want_bias)
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

/* The chunks' partials added in chunk order into gw (and gb). */
static void SFX(dot_merge)(const REAL *parts, ptrdiff_t part, ptrdiff_t nch, ptrdiff_t nw,
                           ptrdiff_t nb, int nt, REAL *gw, REAL *gb)
{
    ptrdiff_t t, total = nw + nb;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && total > 4096)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        REAL s = parts[t];
        for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + t];
        if (t < nw) gw[t] = s;
        else gb[t - nw] = s;
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

static int SFX(grad_weight_dot)(const KERN *kk, const REAL *gy, const REAL *x,
                                const fc_conv_geom *g, int nt, REAL *gw, REAL *gb)
{
    /* plan */
    SFX(dot_plan) d;
    d.kk = kk; d.g = g; d.gy = gy; d.want_bias = gb != NULL;
    d.G = g->groups; d.cg = g->c / d.G; d.mg = g->k / d.G; d.K = g->k;
    d.ckk = d.cg * g->kh * g->kw;
    const ptrdiff_t hp = g->h + g->ph + g->ph_end, wp = g->w + g->pw + g->pw_end;
    const ptrdiff_t hq = FC_CEILDIV(hp, g->sh);
    d.wq = FC_CEILDIV(wp, g->sw);
    d.plane = hq * d.wq;
    if (!SFX(phase_img)(g, hq, d.wq, &d.img)) return FC_ENOMEM;
    d.lq = FC_ROUNDUP(g->ho * d.wq, (ptrdiff_t)kk->dvl);
    d.nch = FC_MIN(g->n, (ptrdiff_t)FC_DW_CHUNKS);
    d.part = d.K * d.ckk + d.K;
    /* the kernel with 5 offsets where it pads the patch less (25 taps: 25 not 30) */
    d.use5 = FC_ROUNDUP(d.ckk, (ptrdiff_t)5) < FC_ROUNDUP(d.ckk, (ptrdiff_t)kk->dnr);
    d.dmr = kk->dmr;
    d.dnr = d.use5 ? 5 : kk->dnr;
    d.dot = d.use5 ? kk->dot5 : kk->dot;
    /* 3-row tiles where they pad fewer rows than 4 (6 output channels: 6, not
     * 8) and every call's 5 offsets are one kernel row (kw = 5, stride and
     * dilation 1 along w: koff below steps by 1 within a row) */
    if (d.use5 && kk->dmr == 4 && SFX(dot5x3)() && g->kw == 5 && g->sw == 1 && g->dw == 1 &&
        FC_ROUNDUP(d.mg, (ptrdiff_t)3) < FC_ROUNDUP(d.mg, (ptrdiff_t)4) &&
        fc_route_override(FC_OVERRIDE_DW_DOT_ROWS, 3) == 3) {
        d.dmr = 3;
        d.dot = SFX(dot5x3)();
    }
    d.ntile = FC_CEILDIV(d.mg, (ptrdiff_t)d.dmr);
    d.ntask = d.G * d.nch * d.ntile;
    d.chunk_max = FC_CEILDIV(g->n, d.nch);
    int rc = FC_OK, failed = 0;

    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)d.ckk);
    REAL *parts = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(d.nch * d.part));
    REAL *xq = NULL;
    if (!koff || !parts) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t kmax = 0;
    for (ptrdiff_t c = 0, k = 0; c < d.cg; ++c)
        for (ptrdiff_t i = 0; i < g->kh; ++i)
            for (ptrdiff_t j = 0; j < g->kw; ++j, ++k) {
                const ptrdiff_t ei = i * g->dh, ej = j * g->dw;
                const ptrdiff_t phase = (ei % g->sh) * g->sw + (ej % g->sw);
                koff[k] = (phase * g->c + c) * d.plane + (ei / g->sh) * d.wq + ej / g->sw;
                kmax = FC_MAX(kmax, koff[k]);
            }
    const ptrdiff_t slack = FC_MAX((ptrdiff_t)0, d.lq + kmax - d.img) + 64;
    xq = SFX(alloc_grid)(g->n, d.img, slack);
    if (!xq) { rc = FC_ENOMEM; goto done; }
    SFX(pad_phase_copy)(x, g->n, g->c, g->h, g->w, g->sh, g->sw, g->ph, g->pw, hq, d.wq, d.img,
                        nt, xq);
    d.xq = xq;
    d.koff = koff;

    /* per-task work into per-chunk partials */
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && d.ntask > 1)
    {
        fc_team_arrive(&tm);
        /* rows r of the tile, images of the chunk: gl[(r * chunk_max + im) * lq + q] */
        REAL *gl = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(d.dmr * d.chunk_max * d.lq));
        if (!gl) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
#pragma omp for schedule(static) nowait
        for (t = 0; t < d.ntask; ++t)
            if (gl) SFX(dot_task)(&d, t, gl, parts);
        fc_free(gl);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) { rc = FC_ENOMEM; goto done; }
    /* fixed-order merge */
    SFX(dot_merge)(parts, d.part, d.nch, d.K * d.ckk, gb ? d.K : 0, nt, gw, gb);
done:
    free(koff);
    fc_free(parts);
    fc_free(xq);
    return rc;
}


/* The packed route's plan: what every chunk task reads. */
typedef struct {
    const KERN *kk;
    const fc_conv_geom *g;
    const REAL *gy;
    const REAL *xh;            /* NHWC padded copy of x (SFX(nhwc_pad)) */
    const ptrdiff_t *koff;     /* patch row p at p * ldb */
    int want_bias;
    PLAN pl;                   /* output channels of a group in kernel panels */
    ptrdiff_t G, cg, mg, C, ckk;
    ptrdiff_t hp, wp, hw;      /* padded input rows / columns, output pixels */
    ptrdiff_t nbi, nblk;       /* pixel blocks per image, in all */
    ptrdiff_t nr_max, ldb;     /* widest kernel tile; patch row length */
    ptrdiff_t part_g, part;    /* partial sums of one group; of one chunk (+ bias) */
    ptrdiff_t nch;             /* chunks */
    const REAL *x;             /* NCHW input (the direct-rows variant reads it per block) */
    int direct;                /* direct-rows variant (SFX(dw_direct_ok)) */
    ptrdiff_t ny_max;          /* padded input rows the widest pixel block spans */
} SFX(dw_plan);

static void SFX(dw_plan_make)(const KERN *kk, const fc_conv_geom *g, SFX(dw_plan) *d)
{
    d->kk = kk;
    d->g = g;
    d->G = g->groups; d->cg = g->c / d->G; d->mg = g->k / d->G; d->C = g->c;
    d->ckk = d->cg * g->kh * g->kw;
    d->hp = g->h + g->ph + g->ph_end; d->wp = g->w + g->pw + g->pw_end;
    d->hw = g->ho * g->wo;
    d->nbi = FC_CEILDIV(d->hw, FC_DW_PB);
    d->nblk = g->n * d->nbi;
    d->pl = SFX(plan_rows)(kk, d->mg);
    d->nr_max = SFX(widest)(kk);
    /* patch row length: each kernel's last column tile may overhang ckk, and a
     * narrower kernel can overhang further (ckk 10: 8-wide tiles reach 16,
     * 12-wide ones 12), so take the larger of both roundings */
    d->ldb = FC_MAX(FC_ROUNDUP(d->ckk, (ptrdiff_t)kk->nr[d->pl.slot_full]),
                    FC_ROUNDUP(d->ckk, (ptrdiff_t)kk->nr[d->pl.slot_tail]));
    d->part_g = d->pl.mpad * d->ldb;
    d->part = d->G * d->part_g + g->k;
    /* chunk count: a function of the shape only, capped so partials stay < 256 MiB */
    ptrdiff_t nch = FC_MIN(d->nblk, (ptrdiff_t)FC_DW_CHUNKS);
    while (nch > 1 && (double)nch * (double)d->part * sizeof(REAL) > 256.0 * 1048576.0) nch /= 2;
    d->nch = nch < 1 ? 1 : nch;
}

/* One padded NHWC row: d[xp][c] = xn[c][ys][xp - pw] (0 outside), for the
 * input row ys of image xn (any ys: rows outside the input are zero). */
static void SFX(nhwc_row)(const REAL *xn, const fc_conv_geom *g, ptrdiff_t wp, ptrdiff_t ys,
                          REAL *d /* OUT */)
{
    const ptrdiff_t C = g->c;
    if (ys < 0 || ys >= g->h) {
        memset(d, 0, sizeof(REAL) * (size_t)(wp * C));
        return;
    }
    memset(d, 0, sizeof(REAL) * (size_t)(g->pw * C));
    memset(d + (g->pw + g->w) * C, 0, sizeof(REAL) * (size_t)(g->pw_end * C));
    const REAL *s = xn + ys * g->w;
    const ptrdiff_t hw = g->h * g->w;
    REAL *dp = d + g->pw * C;
    ptrdiff_t c0 = 0;
    const SFX(fc_nhwc_tile) tile = SFX(nhwc_tile)();
    if (tile) /* 16 channels x up to 16 columns at a time */
        for (; c0 + 16 <= C; c0 += 16)
            for (ptrdiff_t x0 = 0; x0 < g->w; x0 += 16)
                tile(s + c0 * hw + x0, hw, (int)FC_MIN((ptrdiff_t)16, g->w - x0),
                     dp + x0 * C + c0, C);
    for (ptrdiff_t c = c0; c < C; ++c)
        for (ptrdiff_t xx = 0; xx < g->w; ++xx) dp[xx * C + c] = s[c * hw + xx];
}

/* xh[n][yp][xp][c] = x[n][c][yp - ph][xp - pw] (0 outside): kernel rows of
 * patches become contiguous runs of kw * C values. */
static void SFX(nhwc_pad)(const REAL *x, const fc_conv_geom *g, ptrdiff_t hp, ptrdiff_t wp,
                          int nt, REAL *xh /* OUT */)
{
    const ptrdiff_t C = g->c;
    ptrdiff_t t, total = g->n * hp;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        const ptrdiff_t in = t / hp, yp = t % hp;
        SFX(nhwc_row)(x + in * C * g->h * g->w, g, wp, yp - g->ph, xh + (in * hp + yp) * wp * C);
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* patch[p, (i, j, c)] for pixels p0 .. p0 + pb of image xn, group gi */
static void SFX(dw_patch_rows)(const SFX(dw_plan) *d, const REAL *xn, ptrdiff_t p0,
                               ptrdiff_t pb, ptrdiff_t gi, REAL *patch)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t kh = g->kh, kw = g->kw, C = d->C, cg = d->cg;
    for (ptrdiff_t p = 0; p < pb; ++p) {
        const ptrdiff_t oh = (p0 + p) / g->wo, ow = (p0 + p) % g->wo;
        REAL *row = patch + p * d->ldb;
        for (ptrdiff_t i = 0; i < kh; ++i) {
            const REAL *srow = xn + ((oh * g->sh + i * g->dh) * d->wp + ow * g->sw) * C + gi * cg;
            REAL *drow = row + i * kw * cg;
            if (g->dw == 1 && d->G == 1) {
                /* one contiguous run of kw*C values; short runs inline */
                const ptrdiff_t len = kw * C;
                if (len < 32)
                    for (ptrdiff_t e = 0; e < len; ++e) drow[e] = srow[e];
                else
                    memcpy(drow, srow, sizeof(REAL) * (size_t)len);
            } else {
                for (ptrdiff_t j = 0; j < kw; ++j)
                    for (ptrdiff_t e = 0; e < cg; ++e) drow[j * cg + e] = srow[j * g->dw * C + e];
            }
        }
    }
}

/* A = gy^T of group gi for pixels p0 .. p0 + pb, packed in panels of mr rows per pixel */
static void SFX(dw_pack_gy)(const SFX(dw_plan) *d, const REAL *gyn, ptrdiff_t p0, ptrdiff_t pb,
                            ptrdiff_t gi, REAL *a)
{
    const PLAN *pl = &d->pl;
    const ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    ptrdiff_t pi = 0;
    const SFX(fc_pack16) pack16 = SFX(pack16)();
    if (pack16 && pl->mr_full == 8) /* pairs of full panels, 16 pixels at a time */
        for (; pi + 1 < pl->nfull; pi += 2) {
            const REAL *s = gyn + (gi * d->mg + pi * 8) * d->hw + p0;
            for (ptrdiff_t x0 = 0; x0 < pb; x0 += 16)
                pack16(s + x0, d->hw, (int)FC_MIN((ptrdiff_t)16, pb - x0), a + x0 * 8,
                       a + (pb + x0) * 8);
            a += 2 * pb * 8;
        }
    for (; pi < npan; ++pi) {
        ptrdiff_t mr = pi < pl->nfull ? pl->mr_full : pl->mr_tail;
        ptrdiff_t r0 = pi * pl->mr_full;
        for (ptrdiff_t p = 0; p < pb; ++p)
            for (ptrdiff_t r = 0; r < mr; ++r)
                a[p * mr + r] = r0 + r < d->mg ? gyn[(gi * d->mg + r0 + r) * d->hw + p0 + p]
                                               : (REAL)0;
        a += pb * mr;
    }
}

/* Pixel block bi added into the chunk's partial sums pc (bias partial first). */
static void SFX(dw_block)(const SFX(dw_plan) *d, ptrdiff_t bi, REAL *patch, REAL *at, REAL *pc)
{
    const KERN *kk = d->kk;
    const PLAN *pl = &d->pl;
    const ptrdiff_t in = bi / d->nbi, p0 = (bi % d->nbi) * FC_DW_PB;
    const ptrdiff_t pb = FC_MIN((ptrdiff_t)FC_DW_PB, d->hw - p0);
    const REAL *gyn = d->gy + in * d->g->k * d->hw;
    const REAL *xn = d->xh + in * d->hp * d->wp * d->C;
    /* bias partial (only when asked for): one fixed-order sum per block and channel */
    if (d->want_bias) {
        REAL *pbias = pc + d->G * d->part_g;
        for (ptrdiff_t m = 0; m < d->g->k; ++m) {
            REAL part;
            SFX(sum_lanes)(gyn + m * d->hw + p0, pb, &part);
            pbias[m] += part;
        }
    }
    const ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    for (ptrdiff_t gi = 0; gi < d->G; ++gi) {
        SFX(dw_patch_rows)(d, xn, p0, pb, gi, patch);
        SFX(dw_pack_gy)(d, gyn, p0, pb, gi, at);
        /* partial[m, k] += sum_p A[p, m] * patch[p, k] */
        const REAL *a = at;
        REAL *cpart = pc + gi * d->part_g;
        for (ptrdiff_t pi = 0; pi < npan; ++pi) {
            const int slot = pi < pl->nfull ? pl->slot_full : pl->slot_tail;
            const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
            for (ptrdiff_t jr = 0; jr < d->ckk; jr += nr)
                kk->ukr[slot](pb, a, patch + jr, d->koff, cpart + pi * pl->mr_full * d->ldb + jr,
                              d->ldb, 1);
            a += pb * mr;
        }
    }
}

/*
 * The direct-rows variant of a pixel block (groups 1, dilation 1 along w, kw*C
 * a multiple of every kernel tile width in use: bench shape h, 3 x 64 = 4 x 48).
 * A column tile of the patch then lies inside one kernel row i, where patch row
 * p is a contiguous run of the NHWC input, so the kernel reads it in place
 * (koff per pixel) instead of from an im2col copy; and the NHWC rows are made
 * per block in a per-thread buffer that stays in L2, not as a copy of all of x
 * (that copy and the patch copies were a third of the pass: x out to memory in
 * NHWC, back in, then 9 patch copies per pixel: 25.8 -> 20 ms at one thread).
 * Same A, the same values of B in the same order, the same calls: the same
 * bits (tests/test_grad_weight_direct_rows.py).
 */
static int SFX(dw_direct_ok)(const KERN *kk, const fc_conv_geom *g, const SFX(dw_plan) *d)
{
    const ptrdiff_t run = g->kw * g->c;
    if (d->G != 1 || g->dw != 1) return 0;
    if (run % kk->nr[d->pl.slot_full] || (d->pl.mr_tail > 0 && run % kk->nr[d->pl.slot_tail]))
        return 0;
    return fc_route_override(FC_OVERRIDE_DW_DIRECT_ROWS, 1) != 0;
}

/* Padded input rows spanned by the pixel block starting at p0. */
static ptrdiff_t SFX(dw_block_rows)(const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t pb)
{
    const ptrdiff_t oh0 = p0 / g->wo, oh1 = (p0 + pb - 1) / g->wo;
    return (oh1 - oh0) * g->sh + (g->kh - 1) * g->dh + 1;
}

/* Lines of a set of equal spans (n spans of len bytes, stride apart) touched
 * a few at a time: the next block's input and grad_y, fetched into L2 while
 * this block's products run (the block's own loads of them from memory were
 * a sixth of the pass, with the kernels idle). */
typedef struct {
    const char *base;
    ptrdiff_t stride, len, n, i, off;
} SFX(dw_pf_spans);

static void SFX(dw_pf_init)(SFX(dw_pf_spans) *f, const void *base, ptrdiff_t stride,
                            ptrdiff_t len, ptrdiff_t n)
{
    f->base = (const char *)base; f->stride = stride; f->len = len; f->n = len > 0 ? n : 0;
    f->i = 0; f->off = 0;
}

static void SFX(dw_pf_step)(SFX(dw_pf_spans) *f, int lines)
{
    for (; lines > 0 && f->i < f->n; --lines) {
#if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch(f->base + f->i * f->stride + f->off, 0, 2);
#endif
        f->off += 64;
        if (f->off >= f->len) { f->off = 0; ++f->i; }
    }
}

static void SFX(dw_block_direct)(const SFX(dw_plan) *d, ptrdiff_t bi, REAL *rows,
                                 ptrdiff_t *koffs, REAL *at, REAL *pc)
{
    const KERN *kk = d->kk;
    const PLAN *pl = &d->pl;
    const fc_conv_geom *g = d->g;
    const ptrdiff_t in = bi / d->nbi, p0 = (bi % d->nbi) * FC_DW_PB;
    const ptrdiff_t pb = FC_MIN((ptrdiff_t)FC_DW_PB, d->hw - p0);
    const ptrdiff_t C = d->C, run = g->kw * C, oh0 = p0 / g->wo;
    const REAL *gyn = d->gy + in * g->k * d->hw;
    if (d->want_bias) {
        REAL *pbias = pc + d->part_g;
        for (ptrdiff_t m = 0; m < g->k; ++m) {
            REAL part;
            SFX(sum_lanes)(gyn + m * d->hw + p0, pb, &part);
            pbias[m] += part;
        }
    }
    /* padded rows oh0 * sh .. of the block, NHWC */
    const ptrdiff_t ny = SFX(dw_block_rows)(g, p0, pb);
    const REAL *xn = d->x + in * C * g->h * g->w;
    for (ptrdiff_t r = 0; r < ny; ++r)
        SFX(nhwc_row)(xn, g, d->wp, oh0 * g->sh + r - g->ph, rows + r * d->wp * C);
    /* kernel row i of pixel p's patch: koffs[i * PB + p] into rows */
    for (ptrdiff_t i = 0; i < g->kh; ++i)
        for (ptrdiff_t p = 0; p < pb; ++p) {
            const ptrdiff_t oh = (p0 + p) / g->wo, ow = (p0 + p) % g->wo;
            koffs[i * FC_DW_PB + p] = (((oh - oh0) * g->sh + i * g->dh) * d->wp + ow * g->sw) * C;
        }
    SFX(dw_pack_gy)(d, gyn, p0, pb, 0, at);
    /* the next block's input rows (per channel) and grad_y (per output channel) */
    SFX(dw_pf_spans) pfx, pfy;
    SFX(dw_pf_init)(&pfx, NULL, 0, 0, 0);
    SFX(dw_pf_init)(&pfy, NULL, 0, 0, 0);
    if (bi + 1 < d->nblk) {
        const ptrdiff_t in1 = (bi + 1) / d->nbi, p1 = ((bi + 1) % d->nbi) * FC_DW_PB;
        const ptrdiff_t pb1 = FC_MIN((ptrdiff_t)FC_DW_PB, d->hw - p1);
        const ptrdiff_t y0 = FC_MAX((ptrdiff_t)0, p1 / g->wo * g->sh - g->ph);
        const ptrdiff_t y1 = FC_MIN(g->h, p1 / g->wo * g->sh - g->ph
                                              + SFX(dw_block_rows)(g, p1, pb1));
        const ptrdiff_t hwx = g->h * g->w;
        SFX(dw_pf_init)(&pfx, d->x + in1 * C * hwx + y0 * g->w, (ptrdiff_t)sizeof(REAL) * hwx,
                        (ptrdiff_t)sizeof(REAL) * (y1 - y0) * g->w, C);
        SFX(dw_pf_init)(&pfy, d->gy + in1 * g->k * d->hw + p1, (ptrdiff_t)sizeof(REAL) * d->hw,
                        (ptrdiff_t)sizeof(REAL) * pb1, g->k);
    }
    const ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    const REAL *a = at;
    for (ptrdiff_t pi = 0; pi < npan; ++pi) {
        const int slot = pi < pl->nfull ? pl->slot_full : pl->slot_tail;
        const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
        for (ptrdiff_t jr = 0; jr < d->ckk; jr += nr) {
            const ptrdiff_t i = jr / run;
            kk->ukr[slot](pb, a, rows + (jr - i * run), koffs + i * FC_DW_PB,
                          pc + pi * pl->mr_full * d->ldb + jr, d->ldb, 1);
            /* 48 lines a call: bench shape h's next block within ~150 of its 192 */
            SFX(dw_pf_step)(&pfx, 32);
            SFX(dw_pf_step)(&pfy, 16);
        }
        a += pb * mr;
    }
}

/* All chunks, each its fixed run of pixel blocks into its own partial sums. */
static int SFX(dw_chunks)(const SFX(dw_plan) *d, int nt, REAL *parts)
{
    int failed = 0;
    const size_t patch_elems = (size_t)(FC_DW_PB * d->ldb + d->nr_max);
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && d->nch > 1)
    {
        fc_team_arrive(&tm);
        REAL *patch = (REAL *)fc_malloc(sizeof(REAL) * patch_elems);
        /* direct rows: NHWC rows of a block (at most one image's), then kh * PB
         * pixel offsets into them (aligned) */
        const size_t rows_elems = (size_t)FC_ROUNDUP(d->ny_max * d->wp * d->C, (ptrdiff_t)16);
        REAL *rows = NULL;
        if (d->direct)
            rows = (REAL *)fc_malloc(sizeof(REAL) * rows_elems
                                     + sizeof(ptrdiff_t) * (size_t)(d->g->kh * FC_DW_PB));
        REAL *at = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(FC_DW_PB * d->pl.mpad));
        if (!patch || !at || (d->direct && !rows)) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* columns ckk..ldb of every patch row stay zero: the copies never touch them */
            memset(patch, 0, sizeof(REAL) * patch_elems);
        }
        ptrdiff_t ch;
#pragma omp for schedule(static) nowait
        for (ch = 0; ch < d->nch; ++ch) {
            if (!patch || !at || (d->direct && !rows)) continue;
            REAL *pc = parts + ch * d->part;
            memset(pc, 0, sizeof(REAL) * (size_t)d->part);
            for (ptrdiff_t bi = ch * d->nblk / d->nch; bi < (ch + 1) * d->nblk / d->nch; ++bi)
                if (d->direct)
                    SFX(dw_block_direct)(d, bi, rows, (ptrdiff_t *)(rows + rows_elems), at, pc);
                else
                    SFX(dw_block)(d, bi, patch, at, pc);
        }
        fc_free(patch);
        fc_free(at);
        fc_free(rows);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/* Partials added in chunk order; (i, j, c) permuted to (c, i, j). */
static void SFX(dw_merge)(const SFX(dw_plan) *d, const REAL *parts, int nt, REAL *gw, REAL *gb)
{
    const ptrdiff_t kh = d->g->kh, kw = d->g->kw, cg = d->cg, mg = d->mg, nch = d->nch;
    const ptrdiff_t part = d->part, bias0 = d->G * d->part_g;
    ptrdiff_t t, total = d->g->k;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        const ptrdiff_t gi = t / mg, m = t % mg;
        REAL *dst = gw + t * d->ckk;
        for (ptrdiff_t c = 0; c < cg; ++c)
            for (ptrdiff_t i = 0; i < kh; ++i)
                for (ptrdiff_t j = 0; j < kw; ++j) {
                    const ptrdiff_t src = gi * d->part_g + m * d->ldb + (i * kw + j) * cg + c;
                    REAL s = parts[src];
                    for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + src];
                    dst[(c * kh + i) * kw + j] = s;
                }
        if (gb) {
            REAL s = parts[bias0 + t];
            for (ptrdiff_t ch = 1; ch < nch; ++ch) s += parts[ch * part + bias0 + t];
            gb[t] = s;
        }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/*
 * The packed route: gw[m, (i, j, c)] = sum_p gy[m, p] * patch[p, (i, j, c)]
 * (see the top of this file). Plan -> per-chunk tasks -> merge in chunk order.
 */
static int SFX(grad_weight_packed)(const KERN *kk, const REAL *gy, const REAL *x,
                                   const fc_conv_geom *g, int nthreads, REAL *gw, REAL *gb)
{
    SFX(dw_plan) d;
    SFX(dw_plan_make)(kk, g, &d);
    d.x = x;
    d.direct = SFX(dw_direct_ok)(kk, g, &d);
    d.ny_max = 0;
    for (ptrdiff_t p0 = 0; p0 < d.hw; p0 += FC_DW_PB)
        d.ny_max = FC_MAX(d.ny_max,
                          SFX(dw_block_rows)(g, p0, FC_MIN((ptrdiff_t)FC_DW_PB, d.hw - p0)));
    int rc = FC_OK;
    REAL *xh = d.direct ? NULL
                        : (REAL *)fc_malloc(sizeof(REAL) * (size_t)(g->n * d.hp * d.wp * d.C));
    REAL *parts = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(d.nch * d.part));
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * FC_DW_PB);
    if ((!d.direct && !xh) || !parts || !koff) { rc = FC_ENOMEM; goto done; }
    for (ptrdiff_t p = 0; p < FC_DW_PB; ++p) koff[p] = p * d.ldb;
    if (!d.direct) SFX(nhwc_pad)(x, g, d.hp, d.wp, nthreads, xh);
    d.gy = gy;
    d.xh = xh;
    d.koff = koff;
    d.want_bias = gb != NULL;
    if ((rc = SFX(dw_chunks)(&d, nthreads, parts)) != FC_OK) goto done;
    SFX(dw_merge)(&d, parts, nthreads, gw, gb);
done:
    fc_free(xh);
    fc_free(parts);
    free(koff);
    return rc;
}

/* The lanes route for the first nl images, the dot (or packed) route for the
 * rest, the two sums added (an order fixed by the batch size alone). */
static int SFX(grad_weight_split)(SFX(fc_gwl) lanes, ptrdiff_t nl, int dot, const KERN *kk,
                                  const REAL *gy, const REAL *x, const fc_conv_geom *g,
                                  int nthreads, REAL *gw, REAL *gb)
{
    const ptrdiff_t nw = g->k * (g->c / g->groups) * g->kh * g->kw, nb = gb ? g->k : 0;
    fc_conv_geom gl = *g, gd = *g;
    gl.n = nl;
    gd.n = g->n - nl;
    REAL *rest = (REAL *)malloc(sizeof(REAL) * (size_t)(nw + nb));
    if (!rest) return FC_ENOMEM;
    int rc = lanes(gy, x, &gl, nthreads, gw, gb);
    const REAL *gyd = gy + nl * g->k * g->ho * g->wo, *xd = x + nl * g->c * g->h * g->w;
    if (rc == FC_OK)
        rc = dot ? SFX(grad_weight_dot)(kk, gyd, xd, &gd, nthreads, rest, gb ? rest + nw : NULL)
                 : SFX(grad_weight_packed)(kk, gyd, xd, &gd, nthreads, rest,
                                           gb ? rest + nw : NULL);
    if (rc == FC_OK) {
        for (ptrdiff_t i = 0; i < nw; ++i) gw[i] += rest[i];
        for (ptrdiff_t i = 0; i < nb; ++i) gb[i] += rest[nw + i];
    }
    free(rest);
    return rc;
}

int SFX(fc_conv2d_grad_weight)(const REAL *gy, const REAL *x, const fc_conv_geom *g,
                               int nthreads, REAL *gw, REAL *gb)
{
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
    const KERN *kk = GETK();
    const ptrdiff_t dot_max = fc_route_override(FC_OVERRIDE_DW_DOT_MAX, FC_DW_DOT_MAX);
    const int dot = (g->k / g->groups) * (g->c / g->groups) * g->kh * g->kw <= dot_max;
    ptrdiff_t nl;
    const SFX(fc_gwl) lanes = SFX(gwl)(g, &nl);
    if (lanes && nl == g->n) return lanes(gy, x, g, nthreads, gw, gb);
    if (lanes) return SFX(grad_weight_split)(lanes, nl, dot, kk, gy, x, g, nthreads, gw, gb);
    if (dot) return SFX(grad_weight_dot)(kk, gy, x, g, nthreads, gw, gb);
    return SFX(grad_weight_packed)(kk, gy, x, g, nthreads, gw, gb);
}

#undef JOB
#undef PLAN
