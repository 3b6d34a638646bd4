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
    char *hit = (char *)calloc((size_t)(shx + swx), 1);
    REAL *gyp = NULL;
    if (!tabs || !ap || !jobs || !hit) { rc = FC_ENOMEM; goto done; }
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
    if (njobs > 0) rc = SFX(run_jobs)(kk, jobs, (int)njobs, g->n, nthreads);
done:
    free(tabs);
    fc_free(ap);
    free(jobs);
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
     * (fc_conv_grad_input.c; float32, AVX-512) for whole blocks of 16 images;
     * the rest below */
    fc_conv_geom rest;
    if (sizeof(REAL) == sizeof(float) && fc_simd_dispatch() == FC_SIMD_AVX512 && gil_fits(g)
        && fc_lanes_weights_finite((const float *)w, g->k * g->c * g->kh * g->kw)) {
        const ptrdiff_t nl = fc_lanes_images(g->n, nthreads);
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
