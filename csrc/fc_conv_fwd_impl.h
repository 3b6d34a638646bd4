/*
 * fc_conv_fwd_impl.h - convolution forward: one implicit-GEMM job per group,
 * optionally with a 2x2/2 max-pool fused into the write-out.
 * A template (see fc_instantiate.h), instantiated by fc_conv_fwd.c.
 */
#include "fc_conv_common_impl.h"

/* ------------------------------------------------ fused 2x2/2 max-pool -- */
/*
 * One pooled row from two rows of the product: each value gets the bias (and
 * ReLU) exactly as job_write gives it (c + bias, then v <= 0 ? 0 : v), then the
 * four candidates of a window are compared in raster order with the max-pool
 * rule (a larger value or a NaN takes over): the bits of the separate conv and
 * max_pool2d calls, without writing and re-reading the conv output. The vector
 * code is pool2_simd (fc_conv_fwd.c); this loop finishes what it leaves.
 */
static void SFX(pool2_row)(const REAL *FC_RESTRICT c0, const REAL *FC_RESTRICT c1, REAL bias,
                           int relu, ptrdiff_t wo2, REAL *FC_RESTRICT out)
{
    for (ptrdiff_t j = SFX(pool2_simd)(c0, c1, bias, relu, wo2, out); j < wo2; ++j) {
        REAL v[4] = {c0[2 * j] + bias, c0[2 * j + 1] + bias, c1[2 * j] + bias,
                     c1[2 * j + 1] + bias};
        if (relu)
            for (int i = 0; i < 4; ++i) v[i] = v[i] <= 0 ? (REAL)0 : v[i];
        REAL best = v[0];
        for (int i = 1; i < 4; ++i)
            if (v[i] > best || v[i] != v[i]) best = v[i];
        out[j] = best;
    }
}

/* Conv rows per task of the fused pool (of `rows`, an even number): even (a
 * task pools its own row pairs), about 512 columns as block_cols aims for,
 * spread evenly over the blocks. */
static ptrdiff_t SFX(pool_block_rows)(ptrdiff_t rows, ptrdiff_t qpitch)
{
    const ptrdiff_t nb = FC_MAX((ptrdiff_t)1, FC_CEILDIV(rows * qpitch, 512));
    return FC_MAX((ptrdiff_t)2, FC_ROUNDUP(FC_CEILDIV(rows, nb), 2));
}

/* Rows [r0, r1) of the product in cbuf (row stride ldc) written out: the fused
 * pool (pooling the block's conv rows [c0, c1), c0 even) or job_write. */
static void SFX(fwd_write)(const JOB *jb, const REAL *cbuf, ptrdiff_t ldc, ptrdiff_t img,
                           ptrdiff_t q0, ptrdiff_t q1, ptrdiff_t r0, ptrdiff_t r1,
                           ptrdiff_t wo2)
{
    JOB sub = *jb; /* the rows of this task */
    sub.m = r1 - r0;
    sub.dst = jb->dst + r0 * jb->dst_m;
    sub.bias = jb->bias ? jb->bias + r0 : NULL;
    cbuf += r0 * ldc;
    if (wo2 == 0) {
        SFX(job_write)(&sub, cbuf, ldc, img, q0, q1);
        return;
    }
    const ptrdiff_t c0 = q0 / jb->qpitch, c1 = FC_MIN(q1 / jb->qpitch, jb->rows);
    REAL *dimg = sub.dst + img * jb->dst_n;
    for (ptrdiff_t mm = 0; mm < sub.m; ++mm) {
        const REAL bv = sub.bias ? sub.bias[mm] : (REAL)0;
        for (ptrdiff_t r = c0; r < c1; r += 2) {
            const REAL *crow = cbuf + mm * ldc + (r - c0) * jb->qpitch;
            SFX(pool2_row)(crow, crow + jb->qpitch, bv, jb->relu, wo2,
                           dimg + mm * jb->dst_m + (r / 2) * jb->dst_r);
        }
    }
}

/*
 * The forward's task plan: (job, image, column block, part). Blocks are whole
 * column tiles of the full panels' kernel, dealt evenly (the fused pool: nb
 * columns, whole row pairs), so no block computes a tile past the grid.
 */
typedef struct {
    const KERN *kk;
    const JOB *jobs;
    PLAN pl;                   /* every job has the same rows */
    ptrdiff_t n, ncols;        /* images, grid columns of a job */
    ptrdiff_t pool_nb;         /* the fused pool's columns per block, else 0 */
    ptrdiff_t wo2;             /* pooled columns (the fused pool), else 0 */
    ptrdiff_t ntiles, nblk, npan, nparts, nwhole;
    ptrdiff_t ldc;             /* scratch row stride: the widest block + overhang */
} SFX(fwd_plan);

/* Grid columns [q0, q0 + span) of job jb on the image grid src, row panels [p0, p1),
 * into cbuf (row stride ldc, column q0 + i at i; panel pi's rows from
 * pi * mr_full): job_product's calls, tile by tile over every panel. A tile's
 * source windows (every tap reads a shifted window of the same columns of each
 * input channel) then stay in L1 across the panels, and the packed weights
 * stream from L2 instead of the source. */
/* The next image's input, prefetched a slice per column tile while this one's
 * products run (run_fwd_images: its copy then finds it in cache, where it came
 * from memory with the kernels idle; 1T CPU h ~19.0 -> ~18.6 ms, f ~44.4 ->
 * ~42.4 ms). */
typedef struct {
    const char *p, *end;       /* the next image's bytes not yet prefetched */
    ptrdiff_t per_tile;        /* bytes per column tile */
} SFX(fwd_pf);

static void SFX(fwd_product)(const KERN *kk, const PLAN *pl, const JOB *jb, const REAL *src,
                             ptrdiff_t q0, ptrdiff_t span, ptrdiff_t p0, ptrdiff_t p1,
                             ptrdiff_t ldc, SFX(fwd_pf) *pf, REAL *cbuf)
{
    const ptrdiff_t nrf = kk->nr[pl->slot_full];
    const ptrdiff_t npan = FC_MIN(p1, pl->nfull + (pl->mr_tail > 0));
    /* a tail panel whose kernel has another width runs its own tiles, below */
    const int tail_wide = npan > pl->nfull && kk->nr[pl->slot_tail] != nrf;
    const REAL *srcq = src + q0;
    const REAL *ap0 = jb->apack + p0 * pl->mr_full * jb->kdim;
    for (ptrdiff_t jt = 0; jt < span; jt += nrf) {
        if (pf) {
            const char *e = pf->end - pf->p > pf->per_tile ? pf->p + pf->per_tile : pf->end;
#if defined(__GNUC__) || defined(__clang__)
            for (const char *q = pf->p; q < e; q += 64) __builtin_prefetch(q, 0, 2);
#endif
            pf->p = e;
        }
        SFX(tile_panels)(kk, pl, jb, ap0, p0, npan - tail_wide, srcq + jt, cbuf + jt, ldc);
    }
    if (!tail_wide) return;
    const ptrdiff_t nr = kk->nr[pl->slot_tail];
    const REAL *ap = jb->apack + pl->nfull * pl->mr_full * jb->kdim;
    REAL *crow = cbuf + pl->nfull * pl->mr_full * ldc;
    for (ptrdiff_t pc = 0; pc < jb->kdim || pc == 0; pc += FC_KC) {
        const ptrdiff_t kc = FC_MIN((ptrdiff_t)FC_KC, jb->kdim - pc);
        for (ptrdiff_t jr = 0; jr < span; jr += nr) /* (within ldc: span + widest) */
            kk->ukr[pl->slot_tail](kc, ap + pc * pl->mr_tail, srcq + jr, jb->koff + pc,
                                   crow + jr, ldc, pc > 0);
        if (jb->kdim == 0) break;
    }
}

/* Column block blk, row panels [p0, p1) of job j for image img, whose grid
 * (the job's channels) starts at src. */
static void SFX(fwd_block)(const SFX(fwd_plan) *d, ptrdiff_t j, ptrdiff_t img, const REAL *src,
                           ptrdiff_t blk, ptrdiff_t p0, ptrdiff_t p1, SFX(fwd_pf) *pf,
                           REAL *cbuf)
{
    const ptrdiff_t nrf = d->kk->nr[d->pl.slot_full];
    ptrdiff_t q0, q1;
    if (d->pool_nb) {
        q0 = blk * d->pool_nb;
        q1 = q0 + d->pool_nb;
    } else {
        q0 = blk * d->ntiles / d->nblk * nrf;
        q1 = (blk + 1) * d->ntiles / d->nblk * nrf;
    }
    SFX(fwd_product)(d->kk, &d->pl, &d->jobs[j], src, q0, q1 - q0, p0, p1, d->ldc, pf, cbuf);
    SFX(fwd_write)(&d->jobs[j], cbuf, d->ldc, img, q0, FC_MIN(q1, d->ncols),
                   p0 * d->pl.mr_full, FC_MIN(p1 * d->pl.mr_full, d->jobs[j].m), d->wo2);
}

/* Task t of run_fwd (part-major: a thread's share spans the blocks). */
static void SFX(fwd_task)(const SFX(fwd_plan) *d, ptrdiff_t t, REAL *cbuf)
{
    const ptrdiff_t part = t / d->nwhole, w = t % d->nwhole;
    const ptrdiff_t j = w / (d->n * d->nblk), img = w % (d->n * d->nblk) / d->nblk;
    const JOB *jb = &d->jobs[j];
    SFX(fwd_block)(d, j, img, jb->src + img * jb->src_n, w % d->nblk,
                   part * d->npan / d->nparts, (part + 1) * d->npan / d->nparts, NULL, cbuf);
}

/* The columns a block may compute past a job's grid (reads of the source
 * beyond it: the caller's slack). */
static ptrdiff_t SFX(fwd_blocks_end)(const SFX(fwd_plan) *d)
{
    const ptrdiff_t nrf = d->kk->nr[d->pl.slot_full];
    return d->pool_nb ? d->nblk * d->pool_nb : d->ntiles * nrf;
}

/*
 * Plan the blocks: about 512 columns each (block_cols's target), cut finer
 * when there are fewer blocks than threads (batch 1; the column cut changes no
 * element's sum), or, for the fused pool, pool_nb columns each.
 */
static void SFX(fwd_plan_blocks)(SFX(fwd_plan) *d, const KERN *kk, const JOB *jobs, int njobs,
                                 ptrdiff_t n, ptrdiff_t pool_nb, ptrdiff_t wo2, int nt)
{
    d->kk = kk; d->jobs = jobs; d->n = n; d->pool_nb = pool_nb; d->wo2 = wo2;
    d->pl = SFX(plan_rows)(kk, jobs[0].m);
    d->ncols = jobs[0].rows * jobs[0].qpitch;
    const ptrdiff_t nrf = kk->nr[d->pl.slot_full];
    d->ntiles = FC_MAX((ptrdiff_t)1, FC_CEILDIV(d->ncols, nrf));
    if (pool_nb) {
        d->nblk = FC_CEILDIV(d->ncols, pool_nb);
        d->ldc = pool_nb + SFX(widest)(kk);
    } else {
        d->nblk = FC_MIN(d->ntiles, FC_CEILDIV(d->ncols, (ptrdiff_t)512));
        if (njobs * n * d->nblk < nt)
            d->nblk = FC_MIN(d->ntiles, FC_CEILDIV((ptrdiff_t)nt, njobs * n));
        d->nblk = FC_MAX((ptrdiff_t)1, d->nblk);
        d->ldc = FC_CEILDIV(d->ntiles, d->nblk) * nrf + SFX(widest)(kk);
    }
    d->npan = d->pl.nfull + (d->pl.mr_tail > 0);
    d->nwhole = (ptrdiff_t)njobs * n * d->nblk;
    d->nparts = nt > 1 && d->nwhole < 2 * (ptrdiff_t)nt ? FC_MIN((ptrdiff_t)nt, d->npan) : 1;
}

/*
 * The forward's tasks: (job, image, column block, part). With fewer blocks
 * than threads to share them evenly (batch 1), each block's row panels are cut
 * into parts as well, so that a second thread has work; which task computes an
 * element changes none of its arithmetic. Each task owns its outputs: no merge.
 */
static int SFX(run_fwd)(const SFX(fwd_plan) *d, int nt)
{
    const ptrdiff_t ntask = d->nwhole * d->nparts;
    const size_t cbuf_elems = (size_t)(d->pl.mpad * d->ldc);
    int failed = 0;
    if (nt <= 1 || ntask <= 1) { /* no region: a serialised one costs ~0.25 us */
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * cbuf_elems);
        if (!cbuf) return FC_ENOMEM;
        for (ptrdiff_t t = 0; t < ntask; ++t) SFX(fwd_task)(d, t, cbuf);
        fc_free(cbuf);
        return FC_OK;
    }
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * cbuf_elems);
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
        /* part-major: a thread's share spans the blocks */
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t)
            if (cbuf) SFX(fwd_task)(d, t, cbuf);
        fc_free(cbuf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/*
 * The forward image by image (a batch of at least two images per thread): a
 * task pads and phase-splits one image into its thread's grid (as
 * pad_phase_copy does for the whole batch), then runs every block of every
 * job on it while the grid is still in L2. The whole-batch copy went to memory
 * and came back (bench shape h: 27 MB each way, a tenth of its time). The
 * grid's slack past img elements (the caller's, as for the whole batch) is
 * zeroed once. Per element the calls are run_fwd's: the same bits.
 */
static int SFX(run_fwd_images)(const SFX(fwd_plan) *d, const REAL *x, const fc_conv_geom *g,
                               ptrdiff_t hq, ptrdiff_t wq, ptrdiff_t img, ptrdiff_t slack,
                               ptrdiff_t job_off, int njobs, int nt)
{
    const size_t cbuf_elems = (size_t)(d->pl.mpad * d->ldc);
    const ptrdiff_t chw = g->c * g->h * g->w;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * cbuf_elems);
        REAL *grid = SFX(alloc_grid)(1, img, slack);
        if (!cbuf || !grid) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t i;
        /* every image costs the same: contiguous shares */
#pragma omp for schedule(static) nowait
        for (i = 0; i < d->n; ++i) {
            if (!cbuf || !grid) continue;
            for (ptrdiff_t ic = 0; ic < g->c; ++ic)
                SFX(pad_phase_plane)(x + i * chw, ic, g->c, g->h, g->w, g->sh, g->sw, g->ph,
                                     g->pw, hq, wq, img, grid);
            SFX(fwd_pf) pf;
            pf.p = (const char *)(x + (i + 1) * chw);
            pf.end = i + 1 < d->n ? (const char *)(x + (i + 2) * chw) : pf.p;
            pf.per_tile = FC_ROUNDUP(FC_CEILDIV((ptrdiff_t)sizeof(REAL) * chw,
                                                njobs * d->ntiles), 64);
            for (ptrdiff_t j = 0; j < njobs; ++j)
                for (ptrdiff_t blk = 0; blk < d->nblk; ++blk)
                    SFX(fwd_block)(d, j, i, grid + j * job_off, blk, 0, d->npan, &pf, cbuf);
        }
        fc_free(grid);
        fc_free(cbuf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---------------------------------------------------------------- forward -- */
#ifndef FC_COPY_PARALLEL_MIN
#define FC_COPY_PARALLEL_MIN 65536.0 /* elements of the padded input copy worth a team */
#endif

/* pool: 0 writes y (N, K, ho, wo); 1 writes its 2x2/2 max-pool (N, K, ho/2, wo/2). */
static int SFX(conv_fwd)(const REAL *x, const REAL *w, const REAL *bias,
                         const fc_conv_geom *g, int relu, int pool, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, fc_conv_work(g) / FC_CONV_FWD_MACS_PER_WORK);
#if FC_X86_SIMD
    /* the same bits with images in the lanes (fc_conv_fwd.c; float32, AVX-512)
     * for blocks of 16 images (fc_lanes_images), the fused pool included; the
     * rest below */
    fc_conv_geom rest;
    if (sizeof(REAL) == sizeof(float) && fc_simd_dispatch() == FC_SIMD_AVX512
        && fwl_fits(g)
        && fc_lanes_weights_finite((const float *)w, g->k * g->c * g->kh * g->kw)) {
        const ptrdiff_t nl = fc_lanes_images(g->n, FWL_MIN_TAIL);
        if (nl > 0) {
            rest = *g;
            rest.n = nl;
            const int r = fwl_forward((const float *)x, (const float *)w, (const float *)bias,
                                      &rest, relu, pool, nthreads, (float *)y);
            if (r != FC_OK || nl == g->n) return r;
            rest.n = g->n - nl;
            x += nl * g->c * g->h * g->w;
            y += nl * g->k * (pool ? (g->ho / 2) * (g->wo / 2) : g->ho * g->wo);
            g = &rest;
        }
    }
#endif
    const KERN *kk = GETK();
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G;
    const ptrdiff_t kdim = cg * g->kh * g->kw;
    const ptrdiff_t hp = g->h + g->ph + g->ph_end, wp = g->w + g->pw + g->pw_end;
    const ptrdiff_t hq = FC_CEILDIV(hp, g->sh), wq = FC_CEILDIV(wp, g->sw);
    const ptrdiff_t plane = hq * wq;
    const ptrdiff_t ho2 = g->ho / 2, wo2 = g->wo / 2;
    ptrdiff_t img;
    int rc = FC_OK;
    if (!SFX(phase_img)(g, hq, wq, &img)) return FC_ENOMEM;

    PLAN pl = SFX(plan_rows)(kk, mg);
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * kdim + 1));
    REAL *ap = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(G * pl.mpad * kdim + 1));
    JOB *jobs = (JOB *)malloc(sizeof(JOB) * (size_t)G);
    REAL *xq = NULL;
    if (!koff || !ap || !jobs) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t *woff = koff + kdim;
    for (ptrdiff_t c = 0, k = 0; c < cg; ++c)
        for (ptrdiff_t i = 0; i < g->kh; ++i)
            for (ptrdiff_t j = 0; j < g->kw; ++j, ++k) {
                const ptrdiff_t ei = i * g->dh, ej = j * g->dw;
                if (g->sh == 1 && g->sw == 1) { /* no divisions: a batch-1 layer's setup */
                    koff[k] = c * plane + ei * wq + ej;
                } else {
                    const ptrdiff_t phase = (ei % g->sh) * g->sw + (ej % g->sw);
                    koff[k] = (phase * g->c + c) * plane + (ei / g->sh) * wq + ej / g->sw;
                }
                woff[k] = k;
            }
    for (ptrdiff_t gi = 0; gi < G; ++gi) {
        JOB *jb = &jobs[gi];
        jb->apack = ap + gi * pl.mpad * kdim;
        SFX(pack_a)(w + gi * mg * kdim, kdim, woff, mg, kdim, &pl, (REAL *)jb->apack);
        jb->src_n = img;
        jb->koff = koff;
        jb->kdim = kdim;
        jb->m = mg;
        jb->qpitch = wq; jb->rows = g->ho; jb->cols = g->wo;
        jb->dst = y + gi * mg * g->ho * g->wo;
        jb->dst_n = g->k * g->ho * g->wo; jb->dst_m = g->ho * g->wo;
        jb->dst_r = g->wo; jb->dst_t = 1;
        jb->bias = bias ? bias + gi * mg : NULL;
        jb->relu = relu;
        if (pool) { /* only the conv rows and columns some window reads */
            jb->rows = 2 * ho2; jb->cols = 2 * wo2;
            jb->dst = y + gi * mg * ho2 * wo2;
            jb->dst_n = g->k * ho2 * wo2; jb->dst_m = ho2 * wo2; jb->dst_r = wo2;
        }
    }
    /* Columns per task: whole row pairs for the fused pool (cut finer when there
     * are fewer blocks than threads, batch 1), else whole tiles (fwd_plan_blocks) */
    const ptrdiff_t ncols = jobs[0].rows * wq;
    const ptrdiff_t whole = G * g->n;
    ptrdiff_t pool_nb = 0;
    if (pool) {
        ptrdiff_t rpb = SFX(pool_block_rows)(jobs[0].rows, wq);
        if (nthreads > 1 && whole * FC_CEILDIV(jobs[0].rows, rpb) < nthreads)
            rpb = FC_MAX((ptrdiff_t)2, FC_ROUNDUP(FC_CEILDIV(jobs[0].rows, nthreads), 2));
        pool_nb = rpb * wq;
    }
    SFX(fwd_plan) d;
    SFX(fwd_plan_blocks)(&d, kk, jobs, (int)G, g->n, pool_nb, pool ? wo2 : 0, nthreads);
    /* what run_fwd's tasks may read past an image region of img elements; the
     * last group reads furthest: its channels start (G-1)*cg planes in */
    ptrdiff_t kmax = 0;
    for (ptrdiff_t k = 0; k < kdim; ++k) kmax = FC_MAX(kmax, koff[k]);
    const ptrdiff_t end = (G - 1) * cg * plane + SFX(fwd_blocks_end)(&d) + SFX(widest)(kk) +
                          kmax;
    const ptrdiff_t slack = FC_MAX((ptrdiff_t)0, end - img) + 64;
    if (ncols > 0 && (!pool || wo2 > 0) && d.nparts == 1 && g->n >= 2 * (ptrdiff_t)nthreads) {
        rc = SFX(run_fwd_images)(&d, x, g, hq, wq, img, slack, cg * plane, (int)G, nthreads);
        goto done;
    }
    xq = SFX(alloc_grid)(g->n, img, slack);
    if (!xq) { rc = FC_ENOMEM; goto done; }
    /* a small copy is done before a woken helper would arrive: at batch 1 a
     * team for it made two threads slower than one */
    const int copy_nt = (double)g->n * (double)img >= FC_COPY_PARALLEL_MIN ? nthreads : 1;
    SFX(pad_phase_copy)(x, g->n, g->c, g->h, g->w, g->sh, g->sw, g->ph, g->pw, hq, wq, img,
                        copy_nt, xq);
    for (ptrdiff_t gi = 0; gi < G; ++gi) jobs[gi].src = xq + gi * cg * plane;
    if (ncols > 0 && (!pool || wo2 > 0))
        rc = SFX(run_fwd)(&d, nthreads);
done:
    free(koff);
    fc_free(ap);
    free(jobs);
    fc_free(xq);
    return rc;
}

int SFX(fc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *bias,
                       const fc_conv_geom *g, int relu, int nthreads, REAL *y)
{
    return SFX(conv_fwd)(x, w, bias, g, relu, 0, nthreads, y);
}

int SFX(fc_conv2d_fwd_maxpool2)(const REAL *x, const REAL *w, const REAL *bias,
                                const fc_conv_geom *g, int relu, int nthreads, REAL *y)
{
    return SFX(conv_fwd)(x, w, bias, g, relu, 1, nthreads, y);
}

#undef JOB
#undef PLAN
