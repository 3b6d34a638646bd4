/*
 * fc_conv_impl.h - convolution drivers, written once for both dtypes.
 * Included by fc_conv.c with REAL (float/double), SFX(name) and KERN set.
 *
 * Every pass is an "implicit GEMM":  OUT[m, q] = sum_k A[m, k] * SRC[q + koff[k]]
 * over a column grid q = r * qpitch + t laid on a zero-padded copy of the
 * source, so one kernel family does all the arithmetic:
 *
 *   forward      SRC = x, padded and split into stride phases; A = weights.
 *   grad-input   SRC = grad_out, padded; A = weights transposed; one job per
 *                stride phase of grad_x, with only the taps that land on it.
 *   grad-weight  SRC = patch rows of x (NHWC, packed per pixel block);
 *                A = grad_out transposed; reduced over pixel blocks through
 *                per-chunk partial sums merged in chunk order.
 *
 * Work is split into tasks (image, column block) that each own their output
 * elements, and the chunking depends only on the shape, so results are
 * bitwise identical for any thread count.
 */

#define JOB SFX(fc_job)
#define PLAN SFX(fc_plan)

typedef struct {
    const REAL *src;           /* image 0 of the source grid */
    ptrdiff_t src_n;           /* source stride between images */
    const ptrdiff_t *koff;     /* kdim offsets into the source, per reduction index */
    ptrdiff_t kdim;
    const REAL *apack;         /* A packed in panels (see pack_a) */
    ptrdiff_t m;               /* rows of A = output channels of this job */
    ptrdiff_t qpitch, rows, cols;
    REAL *dst;                 /* element (n, m, r, t) */
    ptrdiff_t dst_n, dst_m, dst_r, dst_t;
    const REAL *bias;          /* per row, or NULL */
    int relu;
} JOB;

/* How the M rows of a job are cut into micro-kernel panels. */
typedef struct {
    int slot_full, slot_tail;  /* kernel slots for full panels and the remainder */
    ptrdiff_t mr_full, mr_tail;
    ptrdiff_t nfull;           /* number of full panels; tail panel iff mr_tail > 0 */
    ptrdiff_t mpad;            /* rows including padding */
} PLAN;

static PLAN SFX(plan_rows)(const KERN *kk, ptrdiff_t m)
{
    PLAN p;
    int top = 0;
    for (int s = 0; s < FC_NUM_MR; ++s)
        if (kk->mr[s] > 0) top = s;
    /* fewer rows than the biggest kernel: the smallest kernel that covers them */
    int fit = top;
    for (int s = 0; s < FC_NUM_MR; ++s)
        if (kk->mr[s] >= m) { fit = s; break; }
    if (m <= kk->mr[top]) {
        p.slot_full = fit; p.mr_full = kk->mr[fit]; p.nfull = 1;
        p.slot_tail = fit; p.mr_tail = 0;
    } else {
        p.slot_full = top; p.mr_full = kk->mr[top]; p.nfull = m / kk->mr[top];
        ptrdiff_t rem = m - p.nfull * p.mr_full;
        p.slot_tail = top; p.mr_tail = 0;
        if (rem > 0) {
            for (int s = 0; s < FC_NUM_MR; ++s)
                if (kk->mr[s] >= rem) { p.slot_tail = s; break; }
            p.mr_tail = kk->mr[p.slot_tail];
        }
    }
    p.mpad = p.nfull * p.mr_full + p.mr_tail;
    return p;
}

/* the widest column tile of any kernel: the overhang every buffer must allow */
static ptrdiff_t SFX(widest)(const KERN *kk)
{
    ptrdiff_t w = 0;
    for (int s = 0; s < FC_NUM_MR; ++s) w = FC_MAX(w, (ptrdiff_t)kk->nr[s]);
    return w;
}

/*
 * Pack A[m, k] = w[m * rs + woff[k]] (m < M, else 0) into panels: panel i holds
 * kdim groups of mr values, panels stored one after another.
 */
static void SFX(pack_a)(const REAL *w, ptrdiff_t rs, const ptrdiff_t *woff, ptrdiff_t m,
                        ptrdiff_t kdim, const PLAN *pl, REAL *ap /* OUT */)
{
    ptrdiff_t npan = pl->nfull + (pl->mr_tail > 0);
    for (ptrdiff_t pi = 0; pi < npan; ++pi) {
        ptrdiff_t mr = pi < pl->nfull ? pl->mr_full : pl->mr_tail;
        ptrdiff_t r0 = pi * pl->mr_full;
        for (ptrdiff_t k = 0; k < kdim; ++k)
            for (ptrdiff_t r = 0; r < mr; ++r)
                ap[k * mr + r] = (r0 + r < m) ? w[(r0 + r) * rs + woff[k]] : (REAL)0;
        ap += kdim * mr;
    }
}

/*
 * dst[n][phase][c][hq][wq] = src[n][c][hq*s_h + rh - top][wq*s_w + rw - left]
 * (0 outside), phase = rh * s_w + rw. Stride 1 makes it a plain padded copy.
 */
static void SFX(pad_phase_copy)(const REAL *src, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h,
                                ptrdiff_t w, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t top,
                                ptrdiff_t left, ptrdiff_t hq, ptrdiff_t wq,
                                ptrdiff_t dst_n, int nt, REAL *dst /* OUT */)
{
    const ptrdiff_t plane = hq * wq;
    const ptrdiff_t total = n * c;
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t) {
        const ptrdiff_t in = t / c, ic = t % c;
        const REAL *s = src + (in * c + ic) * h * w;
        for (ptrdiff_t rh = 0; rh < sh; ++rh)
            for (ptrdiff_t rw = 0; rw < sw; ++rw) {
                REAL *d = dst + in * dst_n + ((rh * sw + rw) * c + ic) * plane;
                /* wq range whose source column lies inside [0, w) */
                ptrdiff_t lo = left - rw > 0 ? FC_CEILDIV(left - rw, sw) : 0;
                ptrdiff_t hi = FC_CEILDIV(w + left - rw, sw);
                if (hi > wq) hi = wq;
                if (hi < 0) hi = 0;
                if (lo > hi) lo = hi;
                for (ptrdiff_t yq = 0; yq < hq; ++yq) {
                    REAL *drow = d + yq * wq;
                    ptrdiff_t ys = yq * sh + rh - top;
                    if (ys < 0 || ys >= h) {
                        memset(drow, 0, sizeof(REAL) * (size_t)wq);
                        continue;
                    }
                    const REAL *srow = s + ys * w + (rw - left);
                    for (ptrdiff_t x = 0; x < lo; ++x) drow[x] = 0;
                    if (sw == 1)
                        memcpy(drow + lo, srow + lo, sizeof(REAL) * (size_t)(hi - lo));
                    else
                        for (ptrdiff_t x = lo; x < hi; ++x) drow[x] = srow[x * sw];
                    for (ptrdiff_t x = hi; x < wq; ++x) drow[x] = 0;
                }
            }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* out = relu(c + bias), branch-free (a sign branch mispredicts on real data) */
FC_CLONES static void SFX(bias_relu_row)(const REAL *FC_RESTRICT c, REAL bias, ptrdiff_t n,
                               REAL *FC_RESTRICT out)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const REAL v = c[i] + bias;
        out[i] = v <= 0 ? (REAL)0 : v; /* NaN stays NaN */
    }
}

/* out = c + bias (vectorised at the widest ISA: these write-outs are a third
 * of the time of a layer with one input channel) */
FC_CLONES static void SFX(bias_row)(const REAL *FC_RESTRICT c, REAL bias, ptrdiff_t n,
                                    REAL *FC_RESTRICT out)
{
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = c[i] + bias;
}

/*
 * col2im of one tap over a block of pixels [p0, p0 + pb): grad_x[c] at
 * (oh*sh + di, ow*sw + dj) += drow[oh*wo + ow]. One call per tap, so the row
 * loop runs inside the widest-ISA clone.
 */
FC_CLONES static void SFX(col2im_tap)(const fc_conv_geom *g, const REAL *FC_RESTRICT drow,
                                      ptrdiff_t p0, ptrdiff_t pb, ptrdiff_t di, ptrdiff_t dj,
                                      REAL *FC_RESTRICT gxc)
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

/* Columns per task for a job: about 512, spread evenly, rounded to the kernel width. */
static ptrdiff_t SFX(block_cols)(const KERN *kk, const PLAN *pl, ptrdiff_t ncols)
{
    const ptrdiff_t nr = kk->nr[pl->slot_full];
    const ptrdiff_t target = 512;
    ptrdiff_t nb = FC_CEILDIV(ncols, target);
    if (nb < 1) nb = 1;
    return FC_ROUNDUP(FC_CEILDIV(ncols, nb), nr);
}

#define FC_KC 512 /* reduction block: A panel and the B rows it touches stay in L1/L2 */

/*
 * Run jobs over n images. jobs[j].src must be readable up to
 * src + (n-1)*src_n + max(koff) + ncols_grid + nb + nr_max (the caller's slack).
 * Returns FC_ENOMEM if per-thread scratch could not be allocated.
 */
static int SFX(run_jobs)(const KERN *kk, const JOB *jobs, int njobs, ptrdiff_t n, int nt)
{
    /* task index space: for each job, n images x its column blocks */
    ptrdiff_t ntask = 0, cbuf_elems = 0;
    const ptrdiff_t nr_max = SFX(widest)(kk);
    ptrdiff_t *first = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * njobs + 1));
    if (!first) return FC_ENOMEM;
    ptrdiff_t *nbc = first + njobs + 1;
    for (int j = 0; j < njobs; ++j) {
        PLAN pl = SFX(plan_rows)(kk, jobs[j].m);
        ptrdiff_t ncols = jobs[j].rows * jobs[j].qpitch;
        nbc[j] = ncols > 0 ? SFX(block_cols)(kk, &pl, ncols) : 1;
        first[j] = ntask;
        ntask += ncols > 0 ? n * FC_CEILDIV(ncols, nbc[j]) : 0;
        cbuf_elems = FC_MAX(cbuf_elems, pl.mpad * (nbc[j] + nr_max));
    }
    first[njobs] = ntask;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && ntask > 1)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)cbuf_elems);
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t) {
            if (!cbuf) continue;
            int j = 0;
            while (t >= first[j + 1]) ++j;
            const JOB *jb = &jobs[j];
            const PLAN pl = SFX(plan_rows)(kk, jb->m);
            const ptrdiff_t nb = nbc[j];
            const ptrdiff_t ncols = jb->rows * jb->qpitch;
            const ptrdiff_t nblk = FC_CEILDIV(ncols, nb);
            const ptrdiff_t img = (t - first[j]) / nblk, blk = (t - first[j]) % nblk;
            const ptrdiff_t q0 = blk * nb, ldc = nb + nr_max;
            const REAL *srcq = jb->src + img * jb->src_n + q0;
            const ptrdiff_t npan = pl.nfull + (pl.mr_tail > 0);
            const REAL *ap = jb->apack;
            for (ptrdiff_t pi = 0; pi < npan; ++pi) {
                const int slot = pi < pl.nfull ? pl.slot_full : pl.slot_tail;
                const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
                REAL *crow = cbuf + pi * pl.mr_full * ldc;
                for (ptrdiff_t pc = 0; pc < jb->kdim || pc == 0; pc += FC_KC) {
                    const ptrdiff_t kc = FC_MIN((ptrdiff_t)FC_KC, jb->kdim - pc);
                    for (ptrdiff_t jr = 0; jr < nb; jr += nr)
                        kk->ukr[slot](kc, ap + pc * mr, srcq + jr, jb->koff + pc,
                                      crow + jr, ldc, pc > 0);
                    if (jb->kdim == 0) break;
                }
                ap += jb->kdim * mr;
            }
            /* write the valid columns of the block */
            const ptrdiff_t q1 = FC_MIN(q0 + nb, ncols);
            REAL *dimg = jb->dst + img * jb->dst_n;
            for (ptrdiff_t mm = 0; mm < jb->m; ++mm) {
                const REAL bv = jb->bias ? jb->bias[mm] : (REAL)0;
                const REAL *crow = cbuf + mm * ldc - q0;
                REAL *dm = dimg + mm * jb->dst_m;
                for (ptrdiff_t r = q0 / jb->qpitch; r * jb->qpitch < q1; ++r) {
                    ptrdiff_t a = FC_MAX(q0, r * jb->qpitch);
                    ptrdiff_t b = FC_MIN(q1, r * jb->qpitch + jb->cols);
                    REAL *drow = dm + r * jb->dst_r - r * jb->qpitch * jb->dst_t;
                    if (jb->relu && jb->dst_t == 1) {
                        SFX(bias_relu_row)(crow + a, bv, b - a, drow + a);
                    } else if (jb->relu) {
                        for (ptrdiff_t q = a; q < b; ++q) {
                            REAL v = crow[q] + bv;
                            drow[q * jb->dst_t] = v <= 0 ? (REAL)0 : v; /* NaN stays NaN */
                        }
                    } else if (jb->dst_t == 1) {
                        SFX(bias_row)(crow + a, bv, b - a, drow + a);
                    } else {
                        for (ptrdiff_t q = a; q < b; ++q) drow[q * jb->dst_t] = crow[q] + bv;
                    }
                }
            }
        }
        fc_free(cbuf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    free(first);
    return failed ? FC_ENOMEM : FC_OK;
}

/*
 * Elements past the end of the last image's region that run_jobs may read for a
 * job whose source starts src_off elements into an image region of img_elems
 * (a group's channels start part-way into the image).
 */
static ptrdiff_t SFX(job_slack)(const KERN *kk, const JOB *jb, ptrdiff_t img_elems,
                                ptrdiff_t src_off)
{
    PLAN pl = SFX(plan_rows)(kk, jb->m);
    ptrdiff_t ncols = jb->rows * jb->qpitch;
    if (ncols <= 0) return 0;
    ptrdiff_t nb = SFX(block_cols)(kk, &pl, ncols);
    const ptrdiff_t nr_max = SFX(widest)(kk);
    ptrdiff_t kmax = 0;
    for (ptrdiff_t k = 0; k < jb->kdim; ++k) kmax = FC_MAX(kmax, jb->koff[k]);
    ptrdiff_t end = src_off + FC_CEILDIV(ncols, nb) * nb + nr_max + kmax;
    return FC_MAX((ptrdiff_t)0, end - img_elems) + 64;
}

/*
 * Elements per image of the padded, phase-split input, sh * sw * C * hq * wq:
 * under C * (hp + sh - 1) * (wp + sw - 1), because functional.py passes a
 * kernel stride no longer than the padded extent (a longer one leaves one
 * output, which that stride computes alike). 0 if it does not fit a ptrdiff_t.
 */
static int SFX(phase_img)(const fc_conv_geom *g, ptrdiff_t hq, ptrdiff_t wq, ptrdiff_t *img)
{
    int bad = 0;
    *img = (ptrdiff_t)fc_size_mul(fc_size_mul(g->sh, hq, &bad), fc_size_mul(g->sw, wq, &bad),
                                  &bad);
    *img = (ptrdiff_t)fc_size_mul(*img, g->c, &bad);
    return !bad;
}

/* n grids of img elements plus zeroed slack, or NULL (also if the size overflows) */
static REAL *SFX(alloc_grid)(ptrdiff_t n, ptrdiff_t img, ptrdiff_t slack)
{
    int bad = 0;
    const size_t body = fc_size_mul(n, img, &bad);
    if (bad || body + (size_t)slack > (size_t)PTRDIFF_MAX / sizeof(REAL)) return NULL;
    REAL *p = (REAL *)fc_malloc(sizeof(REAL) * (body + (size_t)slack));
    if (p) memset(p + body, 0, sizeof(REAL) * (size_t)slack);
    return p;
}

/* ---------------------------------------------------------------- forward -- */
int SFX(fc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *bias,
                       const fc_conv_geom *g, int relu, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->k * g->ho * g->wo * (g->c / g->groups) * g->kh * g->kw);
    const KERN *kk = GETK();
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G;
    const ptrdiff_t kdim = cg * g->kh * g->kw;
    const ptrdiff_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw;
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

static int SFX(bwd_data_col2im)(const KERN *kk, const REAL *gy, const REAL *w,
                                const fc_conv_geom *g, int nt, REAL *gx)
{
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G;
    const ptrdiff_t kh = g->kh, kw = g->kw, ckk = cg * kh * kw;
    const ptrdiff_t hw = g->ho * g->wo, chw = g->h * g->w;
    const ptrdiff_t img = g->k * hw;
    const ptrdiff_t nr_max = SFX(widest)(kk);
    const PLAN pl = SFX(plan_rows)(kk, ckk);
    const ptrdiff_t npan = pl.nfull + (pl.mr_tail > 0);
    const ptrdiff_t pb_max = FC_MIN((ptrdiff_t)FC_COL2IM_PB, FC_ROUNDUP(hw, 16));
    const ptrdiff_t ldc = pb_max + nr_max;
    int rc = FC_OK, failed = 0;

    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * mg));
    REAL *ap = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(G * pl.mpad * mg));
    /* Column tiles may read up to ldc values past an image: harmless inside gy,
     * but not past its end, so the last images are read from a copy with slack.
     * One is not enough when an image is shorter than ldc (a 1x1 output, e.g. a
     * stride past the input): the over-read of the one before passes the end. */
    const ptrdiff_t tail = FC_MIN(g->n, 1 + FC_CEILDIV(ldc, img));
    REAL *gyc = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(tail * img + ldc + 64));
    if (!koff || !ap || !gyc) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t *woff = koff + mg;
    for (ptrdiff_t m = 0; m < mg; ++m) { koff[m] = m * hw; woff[m] = m * ckk; }
    for (ptrdiff_t gi = 0; gi < G; ++gi)
        SFX(pack_a)(w + gi * mg * ckk, 1, woff, ckk, mg, &pl, ap + gi * pl.mpad * mg);
    memcpy(gyc, gy + (g->n - tail) * img, sizeof(REAL) * (size_t)(tail * img));
    memset(gyc + tail * img, 0, sizeof(REAL) * (size_t)(ldc + 64));

    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && g->n > 1)
    {
        fc_team_arrive(&tm);
        REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(pl.mpad * ldc));
        if (!cbuf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t in;
#pragma omp for schedule(static) nowait
        for (in = 0; in < g->n; ++in) {
            if (!cbuf) continue;
            REAL *gxn = gx + in * g->c * chw;
            memset(gxn, 0, sizeof(REAL) * (size_t)(g->c * chw));
            for (ptrdiff_t gi = 0; gi < G; ++gi) {
                const REAL *src = (in >= g->n - tail ? gyc + (in - (g->n - tail)) * img
                                                     : gy + in * img) + gi * mg * hw;
                const REAL *apg = ap + gi * pl.mpad * mg;
                const ptrdiff_t nr_full = kk->nr[pl.slot_full];
                for (ptrdiff_t p0 = 0; p0 < hw; p0 += pb_max) {
                    const ptrdiff_t pb = FC_MIN(pb_max, hw - p0);
                    /* column tile outermost: its mg rows of gy stay in L1 for every
                     * panel; a tail panel with a wider kernel gets its own sweep */
                    const ptrdiff_t nr_tail = kk->nr[pl.slot_tail];
                    const int tail_apart = pl.mr_tail > 0 && nr_tail > nr_full;
                    const ptrdiff_t npan_in = npan - tail_apart;
                    for (ptrdiff_t jr = 0; jr < pb; jr += nr_full) {
                        const REAL *a = apg;
                        for (ptrdiff_t pi = 0; pi < npan_in; ++pi) {
                            const int slot = pi < pl.nfull ? pl.slot_full : pl.slot_tail;
                            const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
                            for (ptrdiff_t j2 = jr; j2 < jr + nr_full; j2 += nr)
                                kk->ukr[slot](mg, a, src + p0 + j2, koff,
                                              cbuf + pi * pl.mr_full * ldc + j2, ldc, 0);
                            a += mg * mr;
                        }
                    }
                    if (tail_apart)
                        for (ptrdiff_t jr = 0; jr < pb; jr += nr_tail)
                            kk->ukr[pl.slot_tail](mg, apg + pl.nfull * pl.mr_full * mg,
                                                  src + p0 + jr, koff,
                                                  cbuf + pl.nfull * pl.mr_full * ldc + jr, ldc, 0);
                    /* col2im: row (c, i, j) of dcols adds into grad_x[c] */
                    for (ptrdiff_t c = 0; c < cg; ++c) {
                        REAL *gxc = gxn + (gi * cg + c) * chw;
                        for (ptrdiff_t i = 0; i < kh; ++i)
                            for (ptrdiff_t j = 0; j < kw; ++j) {
                                const REAL *drow = cbuf + ((c * kh + i) * kw + j) * ldc - p0;
                                SFX(col2im_tap)(g, drow, p0, pb, i * g->dh - g->ph,
                                                j * g->dw - g->pw, gxc);
                            }
                    }
                }
            }
        }
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

/* Input channels per group up to which grad-input takes the col2im route
 * (FASTCONV_DX_COL2IM_MAX_C overrides; 1-thread CPU time: c 2.35 -> 1.56 ms). */
#ifndef FC_DX_COL2IM_MAX_C
#define FC_DX_COL2IM_MAX_C 4
#endif

int SFX(fc_conv2d_bwd_data)(const REAL *gy, const REAL *w, const fc_conv_geom *g,
                            int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->k * g->ho * g->wo * (g->c / g->groups) * g->kh * g->kw);
    const KERN *kk = GETK();
    {
        const ptrdiff_t lim = fc_route_override(FC_OVERRIDE_DX_COL2IM_MAX_C, FC_DX_COL2IM_MAX_C);
        /* needs a reduction long enough to amortise the C tile stores (a: 6 is not) */
        if (g->c / g->groups <= lim && g->k / g->groups >= 16)
            return SFX(bwd_data_col2im)(kk, gy, w, g, nthreads, gx);
    }
    const ptrdiff_t G = g->groups, cg = g->c / G, mg = g->k / G;
    const ptrdiff_t khw = g->kh * g->kw, sh = g->sh, sw = g->sw;
    /* phases with rows of grad_x: rh < min(sh, h) (functional.py may pass a
     * stride up to the padded extent, past h), likewise rw */
    const ptrdiff_t shx = FC_MIN(sh, g->h), swx = FC_MIN(sw, g->w);
    int rc = FC_OK;

    /*
     * grad_x[ih] collects w[i] * grad_y[oh] for ih + ph - i*dh = oh*sh. For the
     * rows ih = u*sh + rh of one phase only the taps with
     * (rh + ph - i*dh) % sh == 0 contribute, at oh = u + (rh + ph - i*dh)/sh:
     * a stride-1 correlation with a subset of the taps. Pad grad_y so that every
     * such oh for every phase lies inside the padded copy.
     */
    ptrdiff_t padt = 0, padb = 0, padl = 0, padr = 0;
    for (ptrdiff_t rh = 0; rh < shx; ++rh) {
        ptrdiff_t hu = FC_CEILDIV(g->h - rh, sh);
        for (ptrdiff_t i = 0; i < g->kh; ++i) {
            ptrdiff_t num = rh + g->ph - i * g->dh;
            if (((num % sh) + sh) % sh) continue;
            ptrdiff_t a = SFX(fdiv)(num, sh);
            padt = FC_MAX(padt, -a);
            padb = FC_MAX(padb, hu - 1 + a - (g->ho - 1));
        }
    }
    for (ptrdiff_t rw = 0; rw < swx; ++rw) {
        ptrdiff_t wu = FC_CEILDIV(g->w - rw, sw);
        for (ptrdiff_t j = 0; j < g->kw; ++j) {
            ptrdiff_t num = rw + g->pw - j * g->dw;
            if (((num % sw) + sw) % sw) continue;
            ptrdiff_t b = SFX(fdiv)(num, sw);
            padl = FC_MAX(padl, -b);
            padr = FC_MAX(padr, wu - 1 + b - (g->wo - 1));
        }
    }
    const ptrdiff_t hg = g->ho + padt + padb, wg = g->wo + padl + padr;
    const ptrdiff_t plane = hg * wg;
    int bad = 0;
    const ptrdiff_t img = (ptrdiff_t)fc_size_mul(g->k, plane, &bad);
    if (bad) return FC_ENOMEM;

    /*
     * One job per (phase with taps, group). Each tap (m, i, j) lands on exactly
     * one phase, so the tap tables and packed weights of all phases together
     * hold mg*kh*kw entries (not that times the phase count, which grows with
     * the stride); a phase no tap lands on is zero, set by one memset.
     */
    PLAN pl = SFX(plan_rows)(kk, cg);
    const ptrdiff_t kmax = mg * khw;
    const ptrdiff_t njmax = FC_MIN(shx * swx, kmax) * G;
    ptrdiff_t *tabs = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * kmax + 1));
    REAL *ap = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(G * pl.mpad * kmax + 1));
    JOB *jobs = (JOB *)malloc(sizeof(JOB) * (size_t)(njmax + 1));
    /* which row / column phases some tap lands on, so that a stride far past
     * the kernel costs a pass over its phases, not phases x taps */
    char *hit = (char *)calloc((size_t)(shx + swx), 1);
    REAL *gyp = NULL;
    if (!tabs || !ap || !jobs || !hit) { rc = FC_ENOMEM; goto done; }
    ptrdiff_t slack = 64, njobs = 0, used = 0, nrow = 0, ncol = 0;
    for (ptrdiff_t i = 0; i < g->kh; ++i) {
        const ptrdiff_t rh = (((i * g->dh - g->ph) % sh) + sh) % sh;
        if (rh < shx && !hit[rh]) { hit[rh] = 1; ++nrow; }
    }
    for (ptrdiff_t j = 0; j < g->kw; ++j) {
        const ptrdiff_t rw = (((j * g->dw - g->pw) % sw) + sw) % sw;
        if (rw < swx && !hit[shx + rw]) { hit[shx + rw] = 1; ++ncol; }
    }
    /* a phase no tap lands on is zero: one memset before the jobs */
    const int empty_phase = nrow < shx || ncol < swx;
    REAL *apn = ap;
    for (ptrdiff_t rh = 0; rh < shx; ++rh)
        for (ptrdiff_t rw = 0; rw < swx; ++rw) {
            if (!hit[rh] || !hit[shx + rw]) continue;
            /* koff stays for the jobs; woff is only read by pack_a below */
            ptrdiff_t *koff = tabs + used, *woff = koff + kmax;
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
                        koff[kd] = m * plane + (a + padt) * wg + (b + padl);
                        woff[kd] = m * cg * khw + i * g->kw + j;
                        ++kd;
                    }
                }
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
    SFX(pad_phase_copy)(gy, g->n, g->k, g->ho, g->wo, 1, 1, padt, padl, hg, wg, img,
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
FC_CLONES static REAL SFX(sum_lanes)(const REAL *v, ptrdiff_t n)
{
    REAL l[16] = {0};
    ptrdiff_t p = 0;
    for (; p + 16 <= n; p += 16)
        for (int q = 0; q < 16; ++q) l[q] += v[p + q];
    for (int q = 0; p < n; ++p, ++q) l[q] += v[p];
    for (int w = 8; w >= 1; w /= 2)
        for (int q = 0; q < w; ++q) l[q] += l[q + w];
    return l[0];
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
static int SFX(bwd_weight_dot)(const KERN *kk, const REAL *gy, const REAL *x,
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
                    for (ptrdiff_t im = 0; im < ni; ++im)
                        sb += SFX(sum_lanes)(gl + (r * chunk_max + im) * lq, lq);
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

int SFX(fc_conv2d_bwd_weight)(const REAL *gy, const REAL *x, const fc_conv_geom *g,
                              int nthreads, REAL *gw, REAL *gb)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->k * g->ho * g->wo * (g->c / g->groups) * g->kh * g->kw);
    const KERN *kk = GETK();
    {
        const ptrdiff_t dot_max = fc_route_override(FC_OVERRIDE_DW_DOT_MAX, FC_DW_DOT_MAX);
        if ((g->k / g->groups) * (g->c / g->groups) * g->kh * g->kw <= dot_max)
            return SFX(bwd_weight_dot)(kk, gy, x, g, nthreads, gw, gb);
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
        REAL *bt = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(FC_DW_PB * ldb + nr_max));
        REAL *at = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(FC_DW_PB * pl.mpad));
        if (!bt || !at) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* columns ckk..ldb of every patch row stay zero: the copies below never touch them */
            memset(bt, 0, sizeof(REAL) * (size_t)(FC_DW_PB * ldb + nr_max));
        }
        ptrdiff_t ch;
#pragma omp for schedule(static) nowait
        for (ch = 0; ch < nch; ++ch) {
            if (!bt || !at) continue;
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
                    for (ptrdiff_t m = 0; m < g->k; ++m)
                        pbias[m] += SFX(sum_lanes)(gyn + m * hw + p0, pb);
                }
                for (ptrdiff_t gi = 0; gi < G; ++gi) {
                    /* patch rows: bt[p, (i, j, c)] */
                    for (ptrdiff_t p = 0; p < pb; ++p) {
                        const ptrdiff_t oh = (p0 + p) / g->wo, ow = (p0 + p) % g->wo;
                        REAL *row = bt + p * ldb;
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
                    /* partial[m, k] += sum_p A[p, m] * bt[p, k] */
                    {
                        const ptrdiff_t npan = pl.nfull + (pl.mr_tail > 0);
                        const REAL *a = at;
                        REAL *cpart = pc + gi * part_g;
                        for (ptrdiff_t pi = 0; pi < npan; ++pi) {
                            const int slot = pi < pl.nfull ? pl.slot_full : pl.slot_tail;
                            const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
                            for (ptrdiff_t jr = 0; jr < ckk; jr += nr)
                                kk->ukr[slot](pb, a, bt + jr, koff,
                                              cpart + pi * pl.mr_full * ldb + jr, ldb, 1);
                            a += pb * mr;
                        }
                    }
                }
            }
        }
        fc_free(bt);
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
