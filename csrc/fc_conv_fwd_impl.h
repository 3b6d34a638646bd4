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

/* Task t of run_fwd (part-major: a thread's share spans the blocks). */
static void SFX(fwd_task)(const KERN *kk, const JOB *jobs, ptrdiff_t n, ptrdiff_t nb,
                          ptrdiff_t wo2, ptrdiff_t nblk, ptrdiff_t npan, ptrdiff_t nparts,
                          ptrdiff_t nwhole, ptrdiff_t t, REAL *cbuf)
{
    const PLAN pl = SFX(plan_rows)(kk, jobs[0].m);
    const ptrdiff_t ncols = jobs[0].rows * jobs[0].qpitch, ldc = nb + SFX(widest)(kk);
    const ptrdiff_t part = t / nwhole, w = t % nwhole;
    const ptrdiff_t j = w / (n * nblk), img = w % (n * nblk) / nblk, blk = w % nblk;
    const ptrdiff_t p0 = part * npan / nparts, p1 = (part + 1) * npan / nparts;
    const ptrdiff_t q0 = blk * nb;
    SFX(job_product)(kk, &jobs[j], nb, img, blk, p0, p1, cbuf);
    SFX(fwd_write)(&jobs[j], cbuf, ldc, img, q0, FC_MIN(q0 + nb, ncols), p0 * pl.mr_full,
                   FC_MIN(p1 * pl.mr_full, jobs[j].m), wo2);
}

/*
 * The forward's tasks: (job, image, column block of nb columns, part). With
 * fewer blocks than threads to share them evenly (batch 1), each block's row
 * panels are cut into parts as well, so that a second thread has work; which
 * task computes an element changes none of its arithmetic. wo2 > 0: the fused
 * pool (nb is then whole row pairs). Each task owns its outputs: no merge.
 */
static int SFX(run_fwd)(const KERN *kk, const JOB *jobs, int njobs, ptrdiff_t n, ptrdiff_t nb,
                        ptrdiff_t wo2, int nt)
{
    const PLAN pl = SFX(plan_rows)(kk, jobs[0].m);
    const ptrdiff_t ncols = jobs[0].rows * jobs[0].qpitch;
    const ptrdiff_t nblk = FC_CEILDIV(ncols, nb), npan = pl.nfull + (pl.mr_tail > 0);
    const ptrdiff_t ldc = nb + SFX(widest)(kk);
    const ptrdiff_t nwhole = (ptrdiff_t)njobs * n * nblk;
    const ptrdiff_t nparts = nt > 1 && nwhole < 2 * (ptrdiff_t)nt ? FC_MIN((ptrdiff_t)nt, npan) : 1;
    const ptrdiff_t ntask = nwhole * nparts;
    int failed = 0;
    if (nt <= 1 || ntask <= 1) { /* no region: a serialised one costs ~0.25 us */
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(pl.mpad * ldc));
        if (!cbuf) return FC_ENOMEM;
        for (ptrdiff_t t = 0; t < ntask; ++t)
            SFX(fwd_task)(kk, jobs, n, nb, wo2, nblk, npan, nparts, nwhole, t, cbuf);
        fc_free(cbuf);
        return FC_OK;
    }
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(pl.mpad * ldc));
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
        /* part-major: a thread's share spans the blocks */
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t)
            if (cbuf) SFX(fwd_task)(kk, jobs, n, nb, wo2, nblk, npan, nparts, nwhole, t, cbuf);
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
     * for whole blocks of 16 images, the fused pool included; the rest below */
    fc_conv_geom rest;
    if (sizeof(REAL) == sizeof(float) && fc_simd_dispatch() == FC_SIMD_AVX512
        && fwl_fits(g)
        && fc_lanes_weights_finite((const float *)w, g->k * g->c * g->kh * g->kw)) {
        const ptrdiff_t nl = fc_lanes_images(g->n, nthreads);
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
    /* Columns per task: whole row pairs for the fused pool, else block_cols; cut
     * finer when there are fewer blocks than threads (batch 1), a one-panel
     * layer's only way to share (the column cut changes no element's sum). */
    const ptrdiff_t ncols = jobs[0].rows * wq, nr = kk->nr[pl.slot_full];
    const ptrdiff_t whole = G * g->n;
    ptrdiff_t nb;
    if (pool) {
        ptrdiff_t rpb = SFX(pool_block_rows)(jobs[0].rows, wq);
        if (nthreads > 1 && whole * FC_CEILDIV(jobs[0].rows, rpb) < nthreads)
            rpb = FC_MAX((ptrdiff_t)2, FC_ROUNDUP(FC_CEILDIV(jobs[0].rows, nthreads), 2));
        nb = rpb * wq;
    } else {
        nb = ncols > 0 ? SFX(block_cols)(kk, &pl, ncols) : 1;
        if (nthreads > 1 && whole * FC_CEILDIV(ncols, nb) < nthreads)
            nb = FC_MAX(nr, FC_ROUNDUP(FC_CEILDIV(ncols, nthreads), nr));
    }
    /* what run_fwd's tasks may read past an image region of img elements; the
     * last group reads furthest: its channels start (G-1)*cg planes in */
    ptrdiff_t kmax = 0;
    for (ptrdiff_t k = 0; k < kdim; ++k) kmax = FC_MAX(kmax, koff[k]);
    const ptrdiff_t end = (G - 1) * cg * plane + FC_CEILDIV(ncols, nb) * nb + SFX(widest)(kk) +
                          kmax;
    const ptrdiff_t slack = FC_MAX((ptrdiff_t)0, end - img) + 64;
    xq = SFX(alloc_grid)(g->n, img, slack);
    if (!xq) { rc = FC_ENOMEM; goto done; }
    /* a small copy is done before a woken helper would arrive: at batch 1 a
     * team for it made two threads slower than one */
    const int copy_nt = (double)g->n * (double)img >= FC_COPY_PARALLEL_MIN ? nthreads : 1;
    SFX(pad_phase_copy)(x, g->n, g->c, g->h, g->w, g->sh, g->sw, g->ph, g->pw, hq, wq, img,
                        copy_nt, xq);
    for (ptrdiff_t gi = 0; gi < G; ++gi) jobs[gi].src = xq + gi * cg * plane;
    if (ncols > 0 && (!pool || wo2 > 0))
        rc = SFX(run_fwd)(kk, jobs, (int)G, g->n, nb, pool ? wo2 : 0, nthreads);
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
