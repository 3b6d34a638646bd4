/*
 * fc_conv_grad_input_impl.h - convolution grad_input: the col2im route (few input
 * channels per group) and the implicit-GEMM route (one job per stride phase).
 * A template (see fc_instantiate.h), instantiated by fc_conv_grad_input.c.
 */
#include "fc_conv_common_impl.h"

/* ------------------------------------------------------------- grad input -- */
/* floor division for possibly negative numerators */
static ptrdiff_t SFX(fdiv)(ptrdiff_t a, ptrdiff_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/*
 * Grad-input for layers with few input channels per group (a first layer has
 * one): the implicit route would have only that many rows per micro-kernel
 * call and be load-bound. Here dcols[(c,i,j), p] = sum_m w[m, c, i, j] * gy[m, p]
 * is a GEMM with C*kh*kw rows, then col2im adds dcols into grad_x. Tasks are
 * images; inside one, pixel blocks and rows are added in a fixed order.
 */
#define FC_COL2IM_PB 512

/*
 * col2im of one tap over a block of pixels [p0, p0 + pb): grad_x[c] at
 * (oh*sh + di, ow*sw + dj) += drow[oh*wo + ow]. One call per tap, so the row
 * loop runs in the variant of the current SIMD level (FC_SIMD_PROC).
 */
FC_SIMD_PROC(SFX(col2im_tap), (const fc_conv_geom *g, const REAL *FC_RESTRICT drow, ptrdiff_t p0,
                               ptrdiff_t pb, ptrdiff_t di, ptrdiff_t dj, REAL *FC_RESTRICT gxc),
             (g, drow, p0, pb, di, dj, gxc))
{
    /* ow range whose column lies inside [0, w) */
    const ptrdiff_t lo = dj < 0 ? FC_CEILDIV(-dj, g->sw) : 0;
    const ptrdiff_t hi = g->w - dj > 0 ? FC_CEILDIV(g->w - dj, g->sw) : 0;
    for (ptrdiff_t oh = p0 / g->wo; oh * g->wo < p0 + pb; ++oh) {
        const ptrdiff_t ih = oh * g->sh + di;
        if (ih < 0 || ih >= g->h) continue;
        ptrdiff_t a0 = FC_MAX(p0, oh * g->wo) - oh * g->wo;
        ptrdiff_t a1 = FC_MIN(p0 + pb, (oh + 1) * g->wo) - oh * g->wo;
        a0 = FC_MAX(a0, lo);
        a1 = FC_MIN(a1, hi);
        REAL *FC_RESTRICT grow = gxc + ih * g->w + dj;
        const REAL *FC_RESTRICT dr = drow + oh * g->wo;
        if (g->sw == 1)
            for (ptrdiff_t ow = a0; ow < a1; ++ow) grow[ow] += dr[ow];
        else
            for (ptrdiff_t ow = a0; ow < a1; ++ow) grow[ow * g->sw] += dr[ow];
    }
}

typedef struct {
    const KERN *kk;
    const fc_conv_geom *g;
    const REAL *gy, *gyc;      /* grad_y; a copy of its last `tail` images with slack */
    const REAL *ap;            /* per group: w^T packed in panels (rows (c, i, j)) */
    const ptrdiff_t *koff;     /* reduction index m at m * hw */
    PLAN pl;
    ptrdiff_t G, cg, mg, hw, img, tail, pb_max, ldc;
} SFX(col2im_plan);

/* Pixel block [p0, p0 + pb) of group gi of one image: dcols = w^T gy into cbuf
 * (column tile outermost: its mg rows of gy stay in L1 for every panel; a tail
 * panel with a wider kernel gets its own sweep), then col2im into gxn. */
static void SFX(col2im_block)(const SFX(col2im_plan) *d, const REAL *src, ptrdiff_t gi,
                              ptrdiff_t p0, REAL *cbuf, REAL *gxn)
{
    const KERN *kk = d->kk;
    const fc_conv_geom *g = d->g;
    const PLAN *pl = &d->pl;
    const ptrdiff_t mg = d->mg, ldc = d->ldc, kh = g->kh, kw = g->kw;
    const ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    const REAL *apg = d->ap + gi * pl->mpad * mg;
    const ptrdiff_t nr_full = kk->nr[pl->slot_full], nr_tail = kk->nr[pl->slot_tail];
    const ptrdiff_t pb = FC_MIN(d->pb_max, d->hw - p0);
    const int tail_apart = pl->mr_tail > 0 && nr_tail > nr_full;
    const ptrdiff_t npan_in = npan - tail_apart;
    for (ptrdiff_t jr = 0; jr < pb; jr += nr_full) {
        const REAL *a = apg;
        for (ptrdiff_t pi = 0; pi < npan_in; ++pi) {
            const int slot = pi < pl->nfull ? pl->slot_full : pl->slot_tail;
            const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
            for (ptrdiff_t j2 = jr; j2 < jr + nr_full; j2 += nr)
                kk->ukr[slot](mg, a, src + p0 + j2, d->koff, cbuf + pi * pl->mr_full * ldc + j2,
                              ldc, 0);
            a += mg * mr;
        }
    }
    if (tail_apart)
        for (ptrdiff_t jr = 0; jr < pb; jr += nr_tail)
            kk->ukr[pl->slot_tail](mg, apg + pl->nfull * pl->mr_full * mg, src + p0 + jr, d->koff,
                                   cbuf + pl->nfull * pl->mr_full * ldc + jr, ldc, 0);
    /* col2im: row (c, i, j) of dcols adds into grad_x[c] */
    for (ptrdiff_t c = 0; c < d->cg; ++c) {
        REAL *gxc = gxn + (gi * d->cg + c) * g->h * g->w;
        for (ptrdiff_t i = 0; i < kh; ++i)
            for (ptrdiff_t j = 0; j < kw; ++j) {
                const REAL *drow = cbuf + ((c * kh + i) * kw + j) * ldc - p0;
                SFX(col2im_tap)(g, drow, p0, pb, i * g->dh - g->ph, j * g->dw - g->pw, gxc);
            }
    }
}

/* One task: image `in`, its groups and pixel blocks in a fixed order. */
static void SFX(col2im_image)(const SFX(col2im_plan) *d, ptrdiff_t in, REAL *cbuf, REAL *gx)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t chw = g->h * g->w, first_tail = g->n - d->tail;
    REAL *gxn = gx + in * g->c * chw;
    memset(gxn, 0, sizeof(REAL) * (size_t)(g->c * chw));
    for (ptrdiff_t gi = 0; gi < d->G; ++gi) {
        const REAL *src = (in >= first_tail ? d->gyc + (in - first_tail) * d->img
                                            : d->gy + in * d->img) + gi * d->mg * d->hw;
        for (ptrdiff_t p0 = 0; p0 < d->hw; p0 += d->pb_max)
            SFX(col2im_block)(d, src, gi, p0, cbuf, gxn);
    }
}

/* Plan -> one task per image (each owns its grad_x: nothing to merge). */
static int SFX(grad_input_col2im)(const KERN *kk, const REAL *gy, const REAL *w,
                                  const fc_conv_geom *g, int nt, REAL *gx)
{
    SFX(col2im_plan) d;
    d.kk = kk; d.g = g; d.gy = gy;
    d.G = g->groups; d.cg = g->c / d.G; d.mg = g->k / d.G;
    const ptrdiff_t ckk = d.cg * g->kh * g->kw;
    d.hw = g->ho * g->wo;
    d.img = g->k * d.hw;
    d.pl = SFX(plan_rows)(kk, ckk);
    d.pb_max = FC_MIN((ptrdiff_t)FC_COL2IM_PB, FC_ROUNDUP(d.hw, 16));
    d.ldc = d.pb_max + SFX(widest)(kk);
    /* Column tiles may read up to ldc values past an image: harmless inside gy,
     * but not past its end, so the last images are read from a copy with slack.
     * One is not enough when an image is shorter than ldc (a 1x1 output, e.g. a
     * stride past the input): the over-read of the one before passes the end. */
    d.tail = FC_MIN(g->n, 1 + FC_CEILDIV(d.ldc, d.img));
    const ptrdiff_t mg = d.mg, img = d.img, ldc = d.ldc, tail = d.tail;
    int rc = FC_OK, failed = 0;

    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * mg));
    REAL *ap = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(d.G * d.pl.mpad * mg));
    REAL *gyc = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(tail * img + ldc + 64));
    if (!koff || !ap || !gyc) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t *woff = koff + mg;
    for (ptrdiff_t m = 0; m < mg; ++m) { koff[m] = m * d.hw; woff[m] = m * ckk; }
    for (ptrdiff_t gi = 0; gi < d.G; ++gi)
        SFX(pack_a)(w + gi * mg * ckk, 1, woff, ckk, mg, &d.pl, ap + gi * d.pl.mpad * mg);
    memcpy(gyc, gy + (g->n - tail) * img, sizeof(REAL) * (size_t)(tail * img));
    memset(gyc + tail * img, 0, sizeof(REAL) * (size_t)(ldc + 64));
    d.ap = ap; d.gyc = gyc; d.koff = koff;

    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && g->n > 1)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(d.pl.mpad * ldc));
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t in;
#pragma omp for schedule(static) nowait
        for (in = 0; in < g->n; ++in)
            if (cbuf) SFX(col2im_image)(&d, in, cbuf, gx);
        fc_free(cbuf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) rc = FC_ENOMEM;
done:
    free(koff);
    fc_free(ap);
    fc_free(gyc);
    return rc;
}


/*
 * grad_x[ih] collects w[i] * grad_y[oh] for ih + ph - i*dh = oh*sh. For the
 * rows ih = u*sh + rh of one phase only the taps with
 * (rh + ph - i*dh) % sh == 0 contribute, at oh = u + (rh + ph - i*dh)/sh:
 * a stride-1 correlation with a subset of the taps. The padding of grad_y that
 * keeps every such oh of every phase inside the padded copy: pad[0..3] = top,
 * bottom, left, right. shx, swx: phases with rows / columns of grad_x.
 */
static void SFX(gi_pads)(const fc_conv_geom *g, ptrdiff_t shx, ptrdiff_t swx, ptrdiff_t *pad)
{
    const ptrdiff_t sh = g->sh, sw = g->sw;
    pad[0] = pad[1] = pad[2] = pad[3] = 0;
    for (ptrdiff_t rh = 0; rh < shx; ++rh) {
        ptrdiff_t hu = FC_CEILDIV(g->h - rh, sh);
        for (ptrdiff_t i = 0; i < g->kh; ++i) {
            ptrdiff_t num = rh + g->ph - i * g->dh;
            if (((num % sh) + sh) % sh) continue;
            ptrdiff_t a = SFX(fdiv)(num, sh);
            pad[0] = FC_MAX(pad[0], -a);
            pad[1] = FC_MAX(pad[1], hu - 1 + a - (g->ho - 1));
        }
    }
    for (ptrdiff_t rw = 0; rw < swx; ++rw) {
        ptrdiff_t wu = FC_CEILDIV(g->w - rw, sw);
        for (ptrdiff_t j = 0; j < g->kw; ++j) {
            ptrdiff_t num = rw + g->pw - j * g->dw;
            if (((num % sw) + sw) % sw) continue;
            ptrdiff_t b = SFX(fdiv)(num, sw);
            pad[2] = FC_MAX(pad[2], -b);
            pad[3] = FC_MAX(pad[3], wu - 1 + b - (g->wo - 1));
        }
    }
}

/* Which row / column phases some tap lands on (hit[rh], hit[shx + rw]), so that a
 * stride far past the kernel costs a pass over its phases, not phases x taps.
 * Returns 1 if some phase gets no tap (it is zero). */
static int SFX(gi_hit_phases)(const fc_conv_geom *g, ptrdiff_t shx, ptrdiff_t swx, char *hit)
{
    ptrdiff_t nrow = 0, ncol = 0;
    for (ptrdiff_t i = 0; i < g->kh; ++i) {
        const ptrdiff_t rh = (((i * g->dh - g->ph) % g->sh) + g->sh) % g->sh;
        if (rh < shx && !hit[rh]) { hit[rh] = 1; ++nrow; }
    }
    for (ptrdiff_t j = 0; j < g->kw; ++j) {
        const ptrdiff_t rw = (((j * g->dw - g->pw) % g->sw) + g->sw) % g->sw;
        if (rw < swx && !hit[shx + rw]) { hit[shx + rw] = 1; ++ncol; }
    }
    return nrow < shx || ncol < swx;
}

/* The taps (m, i, j) landing on phase (rh, rw): koff into padded grad_y (planes
 * of wg columns, `plane` apart), woff into a group's weights. Returns their count. */
static ptrdiff_t SFX(gi_phase_taps)(const fc_conv_geom *g, ptrdiff_t rh, ptrdiff_t rw,
                                    ptrdiff_t mg, ptrdiff_t plane, ptrdiff_t wg, const ptrdiff_t *pad,
                                    ptrdiff_t *koff, ptrdiff_t *woff)
{
    const ptrdiff_t sh = g->sh, sw = g->sw, cg = g->c / g->groups, khw = g->kh * g->kw;
    ptrdiff_t kd = 0;
    for (ptrdiff_t m = 0; m < mg; ++m)
        for (ptrdiff_t i = 0; i < g->kh; ++i) {
            ptrdiff_t ni = rh + g->ph - i * g->dh;
            if (((ni % sh) + sh) % sh) continue;
            ptrdiff_t a = SFX(fdiv)(ni, sh);
            for (ptrdiff_t j = 0; j < g->kw; ++j) {
                ptrdiff_t nj = rw + g->pw - j * g->dw;
                if (((nj % sw) + sw) % sw) continue;
                ptrdiff_t b = SFX(fdiv)(nj, sw);
                koff[kd] = m * plane + (a + pad[0]) * wg + (b + pad[2]);
                woff[kd] = m * cg * khw + i * g->kw + j;
                ++kd;
            }
        }
    return kd;
}

/*
 * The phase-row runner of the implicit route (groups 1). run_jobs gives each
 * stride phase its own tasks: each then writes every sw-th element of a grad_x
 * row, one scalar store at a time, in a pass over all of grad_x that comes long
 * after the previous phase's pass left those lines (for a 3x3/2 layer a sixth
 * of the time went to those stores, and 6% more to the column tiles its even
 * blocks ran past the grid's end). Here one task is an image and a block of
 * grid columns (the same for every phase: they share qpitch): for each phase
 * row rh, the products of its phases (rh, rw) go to scratch, then the grad_x
 * rows they complete are written once, interleaved. Blocks are whole column
 * tiles dealt evenly, so no block computes a tile past the grid. Stride 1 (one
 * phase) takes it too, for the tile order of gi_rows_product (bench shape e:
 * 49 -> 42 ms at one thread).
 * Per element the products are run_jobs's (same panels, reduction blocks and
 * kernels; a column's lane never meets another's), then + 0 as job_write adds
 * the absent bias: the same bits (tests/test_grad_input_phase_rows.py).
 */
#ifndef FC_GI_ROWS_MAX_SCRATCH
#define FC_GI_ROWS_MAX_SCRATCH (8.0 * 1048576.0) /* bytes per thread (h: 0.3 MB) */
#endif
typedef struct {
    const KERN *kk;
    const JOB *jobs;           /* one per phase with taps, rh-major, rw ascending */
    const ptrdiff_t *rh, *rw;  /* each job's phase */
    ptrdiff_t njobs, sw;
    PLAN pl;                   /* every job has the same rows (the input channels) */
    ptrdiff_t ntiles, nblk;    /* column tiles of the widest job, blocks of them */
    ptrdiff_t ldc;             /* scratch row stride: the widest block + overhang */
} SFX(gi_rows_plan);

/* Grid columns [q0, q1) of the phases jobs[j0, j1) for image img into cbuf
 * (phase j at cbuf + (j - j0) * pstride, column q0 + i at i): job_product's
 * calls, over whole tiles of the full panels' width, tile by tile. A tile's
 * source rows (every tap of every phase reads a shifted window of the same
 * columns of each grad_y channel: 40 KB for bench shape h's 128 channels and
 * 48-column tiles) then stay in L1 across all the phases' panels, and the
 * packed weights stream from L2 (half a line per step) instead of the source
 * (three misaligned lines per step): 22.7 -> 19.2 ms at one thread. */
static void SFX(gi_rows_product)(const KERN *kk, const PLAN *pl, const JOB *jobs, ptrdiff_t j0,
                                 ptrdiff_t j1, ptrdiff_t img, ptrdiff_t q0, ptrdiff_t q1,
                                 ptrdiff_t ldc, ptrdiff_t pstride, REAL *cbuf)
{
    const ptrdiff_t nrf = kk->nr[pl->slot_full];
    const ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    const int tail_wide = pl->mr_tail > 0 && kk->nr[pl->slot_tail] != nrf;
    for (ptrdiff_t jt = 0; jt < q1 - q0; jt += nrf)
        for (ptrdiff_t j = j0; j < j1; ++j) {
            const JOB *jb = &jobs[j];
            const REAL *srcq = jb->src + img * jb->src_n + q0;
            /* a tail panel whose kernel has another width runs its own tiles, below */
            SFX(tile_panels)(kk, pl, jb, jb->apack, 0, npan - tail_wide, srcq + jt,
                             cbuf + (j - j0) * pstride + jt, ldc);
        }
    if (!tail_wide) return;
    const ptrdiff_t nb = FC_ROUNDUP(q1 - q0, nrf), nr = kk->nr[pl->slot_tail];
    for (ptrdiff_t j = j0; j < j1; ++j) {
        const JOB *jb = &jobs[j];
        const REAL *srcq = jb->src + img * jb->src_n + q0;
        const REAL *ap = jb->apack + pl->nfull * pl->mr_full * jb->kdim;
        REAL *crow = cbuf + (j - j0) * pstride + pl->nfull * pl->mr_full * ldc;
        for (ptrdiff_t pc = 0; pc < jb->kdim || pc == 0; pc += FC_KC) {
            const ptrdiff_t kc = FC_MIN((ptrdiff_t)FC_KC, jb->kdim - pc);
            for (ptrdiff_t jr = 0; jr < nb; jr += nr)
                kk->ukr[pl->slot_tail](kc, ap + pc * pl->mr_tail, srcq + jr, jb->koff + pc,
                                       crow + jr, ldc, pc > 0);
            if (jb->kdim == 0) break;
        }
    }
}

/* out[2i] = e[i] + 0, out[2i + 1] = o[i] + 0: one grad_x row segment from the
 * two column phases of stride 2 (+ 0 as job_write adds the absent bias) */
FC_SIMD_PROC(SFX(gi_interleave2), (const REAL *FC_RESTRICT e, const REAL *FC_RESTRICT o,
                                   ptrdiff_t n, REAL *FC_RESTRICT out),
             (e, o, n, out))
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        out[2 * i] = e[i] + (REAL)0;
        out[2 * i + 1] = o[i] + (REAL)0;
    }
}

/* Write grid columns [q0, q1) of the phases jobs[j0, j1) (one rh; scratch of
 * each `pstride` apart) to grad_x of image img. */
static void SFX(gi_rows_write)(const SFX(gi_rows_plan) *d, ptrdiff_t j0, ptrdiff_t j1,
                               const REAL *cbuf, ptrdiff_t pstride, ptrdiff_t img, ptrdiff_t q0,
                               ptrdiff_t q1)
{
    const JOB *je = &d->jobs[j0], *jo = &d->jobs[j0 + 1];
    if (!(j1 - j0 == 2 && d->sw == 2 && d->rw[j0] == 0)) {
        for (ptrdiff_t j = j0; j < j1; ++j)
            SFX(job_write)(&d->jobs[j], cbuf + (j - j0) * pstride, d->ldc, img, q0,
                           FC_MIN(q1, d->jobs[j].rows * d->jobs[j].qpitch));
        return;
    }
    /* stride 2, both column phases: whole rows, the even phase one column
     * longer when w is odd */
    const ptrdiff_t qp = je->qpitch, qe = FC_MIN(q1, je->rows * qp);
    REAL *dimg = je->dst + img * je->dst_n;
    for (ptrdiff_t mm = 0; mm < je->m; ++mm) {
        const REAL *ce = cbuf + mm * d->ldc - q0, *co = ce + pstride;
        REAL *dm = dimg + mm * je->dst_m;
        for (ptrdiff_t r = q0 / qp; r * qp < qe; ++r) {
            const ptrdiff_t a = FC_MAX(q0, r * qp), b = FC_MIN(qe, r * qp + je->cols);
            const ptrdiff_t bo = FC_MIN(qe, r * qp + jo->cols);
            REAL *drow = dm + r * je->dst_r - r * qp * 2; /* column q at drow[2q] */
            if (bo > a) SFX(gi_interleave2)(ce + a, co + a, bo - a, drow + 2 * a);
            for (ptrdiff_t q = FC_MAX(a, bo); q < b; ++q) drow[2 * q] = ce[q] + (REAL)0;
        }
    }
}

/* One task: image img, column block blk, every phase row in order. */
static void SFX(gi_rows_task)(const SFX(gi_rows_plan) *d, ptrdiff_t img, ptrdiff_t blk,
                              REAL *cbuf)
{
    const ptrdiff_t nr = d->kk->nr[d->pl.slot_full], pstride = d->pl.mpad * d->ldc;
    const ptrdiff_t q0 = blk * d->ntiles / d->nblk * nr;
    const ptrdiff_t q1 = (blk + 1) * d->ntiles / d->nblk * nr;
    for (ptrdiff_t j0 = 0, j1; j0 < d->njobs; j0 = j1) {
        for (j1 = j0 + 1; j1 < d->njobs && d->rh[j1] == d->rh[j0]; ++j1) {}
        /* a phase row shorter than the block (h not a multiple of sh) */
        if (q0 >= d->jobs[j0].rows * d->jobs[j0].qpitch) continue;
        /* the phases of one rh have the same rows */
        SFX(gi_rows_product)(d->kk, &d->pl, d->jobs, j0, j1, img, q0,
                             FC_MIN(q1, d->jobs[j0].rows * d->jobs[j0].qpitch), d->ldc, pstride,
                             cbuf);
        SFX(gi_rows_write)(d, j0, j1, cbuf, pstride, img, q0, q1);
    }
}

/* Plan (column blocks) -> tasks (image, block), each owning its grad_x
 * elements: nothing to merge. The jobs' source slack is run_jobs's (job_slack):
 * a block never reads past the tile run_jobs's last block read. */
static int SFX(gi_run_rows)(const KERN *kk, const JOB *jobs, const ptrdiff_t *rh,
                            const ptrdiff_t *rw, ptrdiff_t njobs, ptrdiff_t sw, ptrdiff_t n,
                            int nt)
{
    SFX(gi_rows_plan) d;
    d.kk = kk; d.jobs = jobs; d.rh = rh; d.rw = rw; d.njobs = njobs; d.sw = sw;
    d.pl = SFX(plan_rows)(kk, jobs[0].m);
    ptrdiff_t ncols = 0, run = 0;
    for (ptrdiff_t j = 0, r = 0; j < njobs; ++j) {
        ncols = FC_MAX(ncols, jobs[j].rows * jobs[j].qpitch);
        r = (j > 0 && rh[j] == rh[j - 1]) ? r + 1 : 1;
        run = FC_MAX(run, r);
    }
    if (ncols <= 0) return FC_OK;
    const ptrdiff_t nr = kk->nr[d.pl.slot_full];
    d.ntiles = FC_CEILDIV(ncols, nr);
    d.nblk = FC_MIN(d.ntiles, FC_CEILDIV(ncols, (ptrdiff_t)512)); /* block_cols's target */
    /* a small batch: enough blocks for every thread (blocks own their columns,
     * so their count changes no bit) */
    if (n * d.nblk < nt) d.nblk = FC_MIN(d.ntiles, FC_CEILDIV((ptrdiff_t)nt, n));
    d.ldc = FC_CEILDIV(d.ntiles, d.nblk) * nr + SFX(widest)(kk);
    const size_t cbuf_elems = (size_t)(run * d.pl.mpad * d.ldc);
    /* scratch for a whole phase row grows with the stride (and the channels):
     * past the cap, run_jobs's one phase at a time (the same bits) */
    if ((double)cbuf_elems * sizeof(REAL) > FC_GI_ROWS_MAX_SCRATCH)
        return SFX(run_jobs)(kk, jobs, (int)njobs, n, nt);
    const ptrdiff_t ntask = n * d.nblk;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && ntask > 1)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * cbuf_elems);
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
        /* every task runs every phase: equal costs, so contiguous shares */
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t)
            if (cbuf) SFX(gi_rows_task)(&d, t / d.nblk, t % d.nblk, cbuf);
        fc_free(cbuf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/*
 * The implicit route: one job per (phase with taps, group). Each tap (m, i, j)
 * lands on exactly one phase, so the tap tables and packed weights of all
 * phases together hold mg*kh*kw entries (not that times the phase count, which
 * grows with the stride); a phase no tap lands on is zero, set by one memset.
 * Plan (pads, phases, jobs) -> run_jobs (tasks own their outputs: no merge).
 */
static int SFX(grad_input_implicit)(const KERN *kk, const REAL *gy, const REAL *w,
                                    const fc_conv_geom *g, int nthreads, REAL *gx)
{
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G;
    const ptrdiff_t khw = g->kh * g->kw, sh = g->sh, sw = g->sw;
    /* phases with rows of grad_x: rh < min(sh, h) (functional.py may pass a
     * stride up to the padded extent, past h), likewise rw */
    const ptrdiff_t shx = FC_MIN(sh, g->h), swx = FC_MIN(sw, g->w);
    int rc = FC_OK;
    ptrdiff_t pad[4];
    SFX(gi_pads)(g, shx, swx, pad);
    const ptrdiff_t hg = g->ho + pad[0] + pad[1], wg = g->wo + pad[2] + pad[3];
    const ptrdiff_t plane = hg * wg;
    int bad = 0;
    const ptrdiff_t img = (ptrdiff_t)fc_size_mul(g->k, plane, &bad);
    if (bad) return FC_ENOMEM;

    PLAN pl = SFX(plan_rows)(kk, cg);
    const ptrdiff_t kmax = mg * khw;
    const ptrdiff_t njmax = FC_MIN(shx * swx, kmax) * G;
    ptrdiff_t *tabs = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * kmax + 1));
    REAL *ap = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(G * pl.mpad * kmax + 1));
    JOB *jobs = (JOB *)malloc(sizeof(JOB) * (size_t)(njmax + 1));
    ptrdiff_t *jrh = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * njmax + 1));
    char *hit = (char *)calloc((size_t)(shx + swx), 1);
    REAL *gyp = NULL;
    if (!tabs || !ap || !jobs || !jrh || !hit) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t slack = 64, njobs = 0, used = 0;
    const int empty_phase = SFX(gi_hit_phases)(g, shx, swx, hit);
    REAL *apn = ap;
    for (ptrdiff_t rh = 0; rh < shx; ++rh)
        for (ptrdiff_t rw = 0; rw < swx; ++rw) {
            if (!hit[rh] || !hit[shx + rw]) continue;
            /* koff stays for the jobs; woff is only read by pack_a below */
            ptrdiff_t *koff = tabs + used, *woff = koff + kmax;
            const ptrdiff_t kd = SFX(gi_phase_taps)(g, rh, rw, mg, plane, wg, pad, koff, woff);
            used += kd;
            for (ptrdiff_t gi = 0; gi < G; ++gi) {
                jrh[njobs] = rh; jrh[njmax + njobs] = rw;
                JOB *jb = &jobs[njobs++];
                /* A[c, (m,i,j)] = w[gi*mg + m, c, i, j] */
                SFX(pack_a)(w + gi * mg * cg * khw, khw, woff, cg, kd, &pl, apn);
                jb->apack = apn;
                apn += pl.mpad * kd;
                jb->src_n = img;
                jb->koff = koff;
                jb->kdim = kd;
                jb->m = cg;
                jb->qpitch = wg;
                jb->rows = FC_CEILDIV(g->h - rh, sh);
                jb->cols = FC_CEILDIV(g->w - rw, sw);
                jb->dst = gx + gi * cg * g->h * g->w + rh * g->w + rw;
                jb->dst_n = g->c * g->h * g->w; jb->dst_m = g->h * g->w;
                jb->dst_r = sh * g->w; jb->dst_t = sw;
                jb->bias = NULL;
                jb->relu = 0;
                slack = FC_MAX(slack, SFX(job_slack)(kk, jb, img, gi * mg * plane));
            }
        }
    gyp = SFX(alloc_grid)(g->n, img, slack);
    if (!gyp) { rc = FC_ENOMEM; goto done; }
    SFX(pad_phase_copy)(gy, g->n, g->k, g->ho, g->wo, 1, 1, pad[0], pad[2], hg, wg, img,
                        nthreads, gyp);
    for (ptrdiff_t jj = 0; jj < njobs; ++jj) /* G jobs per phase, in group order */
        jobs[jj].src = gyp + (jj % G) * mg * plane;
    if (empty_phase) memset(gx, 0, sizeof(REAL) * (size_t)(g->n * g->c * g->h * g->w));
    /* no jobs when every tap lands on padding only (e.g. h = 1, stride 3, pad 1) */
    if (njobs > 0 && G == 1 && fc_route_override(FC_OVERRIDE_DX_PHASE_ROWS, 1))
        rc = SFX(gi_run_rows)(kk, jobs, jrh, jrh + njmax, njobs, sw, g->n, nthreads);
    else if (njobs > 0)
        rc = SFX(run_jobs)(kk, jobs, (int)njobs, g->n, nthreads);
done:
    free(tabs);
    fc_free(ap);
    free(jobs);
    free(jrh);
    free(hit);
    fc_free(gyp);
    return rc;
}

int SFX(fc_conv2d_grad_input)(const REAL *gy, const REAL *w, const fc_conv_geom *g,
                              int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
    const KERN *kk = GETK();
    const ptrdiff_t lim = fc_route_override(FC_OVERRIDE_DX_COL2IM_MAX_C, FC_DX_COL2IM_MAX_C);
    /* col2im needs a reduction long enough to amortise the C tile stores (a: 6 is not) */
    if (g->c / g->groups <= lim && g->k / g->groups >= 16)
        return SFX(grad_input_col2im)(kk, gy, w, g, nthreads, gx);
#if FC_X86_SIMD
    /* the same bits as the implicit route below, with images in the lanes
     * (fc_conv_grad_input.c; float32, AVX-512) for blocks of 16 images (fc_lanes_images);
     * the rest below */
    fc_conv_geom rest;
    if (sizeof(REAL) == sizeof(float) && fc_simd_dispatch() == FC_SIMD_AVX512 && gil_fits(g)
        && fc_lanes_weights_finite((const float *)w, g->k * g->c * g->kh * g->kw)) {
        const ptrdiff_t nl = fc_lanes_images(g->n, GIL_MIN_TAIL);
        if (nl > 0) {
            rest = *g;
            rest.n = nl;
            const int r = gil_grad_input((const float *)gy, (const float *)w, &rest, nthreads,
                                         (float *)gx);
            if (r != FC_OK || nl == g->n) return r;
            rest.n = g->n - nl;
            gy += nl * g->k * g->ho * g->wo;
            gx += nl * g->c * g->h * g->w;
            g = &rest;
        }
    }
#endif
    return SFX(grad_input_implicit)(kk, gy, w, g, nthreads, gx);
}

#undef JOB
#undef PLAN
