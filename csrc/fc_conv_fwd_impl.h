/*
 * fc_conv_fwd_impl.h - convolution forward: one implicit-GEMM job per group.
 * A template (see fc_instantiate.h), instantiated by fc_conv_fwd.c.
 */
#include "fc_conv_common_impl.h"

/* ---------------------------------------------------------------- forward -- */
int SFX(fc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *bias,
                       const fc_conv_geom *g, int relu, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
#if FC_X86_SIMD
    /* the same bits with images in the lanes (fc_conv_fwd.c; float32, AVX-512)
     * for whole blocks of 16 images; the rest below */
    fc_conv_geom rest;
    if (sizeof(REAL) == sizeof(float) && fc_simd_dispatch() == FC_SIMD_AVX512 && fwl_fits(g)) {
        const ptrdiff_t nl = fc_lanes_images(g->n, nthreads);
        if (nl > 0) {
            rest = *g;
            rest.n = nl;
            const int r = fwl_forward((const float *)x, (const float *)w, (const float *)bias,
                                      &rest, relu, nthreads, (float *)y);
            if (r != FC_OK || nl == g->n) return r;
            rest.n = g->n - nl;
            x += nl * g->c * g->h * g->w;
            y += nl * g->k * g->ho * g->wo;
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
                const ptrdiff_t phase = (ei % g->sh) * g->sw + (ej % g->sw);
                koff[k] = (phase * g->c + c) * plane + (ei / g->sh) * wq + ej / g->sw;
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
    }
    /* the last group reads furthest: its channels start (G-1)*cg planes in */
    ptrdiff_t slack = SFX(job_slack)(kk, &jobs[0], img, (G - 1) * cg * plane);
    xq = SFX(alloc_grid)(g->n, img, slack);
    if (!xq) { rc = FC_ENOMEM; goto done; }
    SFX(pad_phase_copy)(x, g->n, g->c, g->h, g->w, g->sh, g->sw, g->ph, g->pw, hq, wq, img,
                        nthreads, xq);
    for (ptrdiff_t gi = 0; gi < G; ++gi) jobs[gi].src = xq + gi * cg * plane;
    rc = SFX(run_jobs)(kk, jobs, (int)G, g->n, nthreads);
done:
    free(koff);
    fc_free(ap);
    free(jobs);
    fc_free(xq);
    return rc;
}

#undef JOB
#undef PLAN
