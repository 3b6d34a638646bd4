/*
 * fc_conv_common_impl.h - what the three convolution passes share: the job
 * runner (implicit GEMM over a column grid), padding and phase splitting,
 * A-panel packing. A template (see fc_instantiate.h), included at the top of
 * each pass's template: fc_conv_fwd_impl.h, fc_conv_grad_input_impl.h,
 * fc_conv_grad_weight_impl.h.
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

/* d[x] = s[2x]: one column phase of a stride-2 row, vectorised at the widest
 * ISA (element by element it was 11% of bench shape h's forward: a copy, the
 * same bits) */
FC_SIMD_PROC(SFX(take_even), (const REAL *FC_RESTRICT s, ptrdiff_t n, REAL *FC_RESTRICT d),
             (s, n, d))
{
    for (ptrdiff_t x = 0; x < n; ++x) d[x] = s[2 * x];
}

/* pad_phase_copy's task t: plane (in, ic) = (t / c, t % c) of every phase. */
static void SFX(pad_phase_plane)(const REAL *src, ptrdiff_t t, ptrdiff_t c, ptrdiff_t h,
                                 ptrdiff_t w, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t top,
                                 ptrdiff_t left, ptrdiff_t hq, ptrdiff_t wq, ptrdiff_t dst_n,
                                 REAL *dst /* OUT */)
{
    const ptrdiff_t plane = hq * wq;
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
                else if (sw == 2)
                    SFX(take_even)(srow + 2 * lo, hi - lo, drow + lo);
                else
                    for (ptrdiff_t x = lo; x < hi; ++x) drow[x] = srow[x * sw];
                for (ptrdiff_t x = hi; x < wq; ++x) drow[x] = 0;
            }
        }
}

/*
 * dst[n][phase][c][hq][wq] = src[n][c][hq*s_h + rh - top][wq*s_w + rw - left]
 * (0 outside), phase = rh * s_w + rw. Stride 1 makes it a plain padded copy.
 * One thread copies without opening a parallel region (a serialised region
 * still costs a quarter of a microsecond: a batch-1 layer's whole copy).
 */
static void SFX(pad_phase_copy)(const REAL *src, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h,
                                ptrdiff_t w, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t top,
                                ptrdiff_t left, ptrdiff_t hq, ptrdiff_t wq,
                                ptrdiff_t dst_n, int nt, REAL *dst /* OUT */)
{
    const ptrdiff_t total = n * c;
    ptrdiff_t t;
    nt = fc_team_for(nt, (double)total * sh * sw * hq * wq);
    if (nt <= 1) {
        for (t = 0; t < total; ++t)
            SFX(pad_phase_plane)(src, t, c, h, w, sh, sw, top, left, hq, wq, dst_n, dst);
        return;
    }
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (t = 0; t < total; ++t)
        SFX(pad_phase_plane)(src, t, c, h, w, sh, sw, top, left, hq, wq, dst_n, dst);
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* out = relu(c + bias), branch-free (a sign branch mispredicts on real data) */
FC_SIMD_PROC(SFX(bias_relu_row), (const REAL *FC_RESTRICT c, REAL bias, ptrdiff_t n,
                                  REAL *FC_RESTRICT out),
             (c, bias, n, out))
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const REAL v = c[i] + bias;
        out[i] = v <= 0 ? (REAL)0 : v; /* NaN stays NaN */
    }
}

/* out = c + bias (vectorised at the widest ISA: these write-outs are a third
 * of the time of a layer with one input channel) */
FC_SIMD_PROC(SFX(bias_row), (const REAL *FC_RESTRICT c, REAL bias, ptrdiff_t n,
                             REAL *FC_RESTRICT out),
             (c, bias, n, out))
{
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = c[i] + bias;
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

/* Columns [q0, q1) of the product in cbuf (row stride ldc, column q at
 * crow[q - q0]) written to the job's output: bias, ReLU, output strides. */
static void SFX(job_write)(const JOB *jb, const REAL *cbuf, ptrdiff_t ldc, ptrdiff_t img,
                           ptrdiff_t q0, ptrdiff_t q1)
{
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

/* The product for column block blk (nb columns) of image img of job jb, row
 * panels [p0, p1) (all: 0, npan), into cbuf (row stride nb + widest, column
 * q0 + i at i; panel pi's rows from pi * mr_full): no bias, no write-out. */
static void SFX(job_product)(const KERN *kk, const JOB *jb, ptrdiff_t nb, ptrdiff_t img,
                             ptrdiff_t blk, ptrdiff_t p0, ptrdiff_t p1, REAL *cbuf)
{
    const PLAN pl = SFX(plan_rows)(kk, jb->m);
    const ptrdiff_t q0 = blk * nb, ldc = nb + SFX(widest)(kk);
    const REAL *srcq = jb->src + img * jb->src_n + q0;
    const ptrdiff_t npan = FC_MIN(p1, pl.nfull + (pl.mr_tail > 0));
    const REAL *ap = jb->apack + p0 * pl.mr_full * jb->kdim;
    for (ptrdiff_t pi = p0; pi < npan; ++pi) {
        const int slot = pi < pl.nfull ? pl.slot_full : pl.slot_tail;
        const ptrdiff_t mr = kk->mr[slot], nr = kk->nr[slot];
        REAL *crow = cbuf + pi * pl.mr_full * ldc;
        for (ptrdiff_t pc = 0; pc < jb->kdim || pc == 0; pc += FC_KC) {
            const ptrdiff_t kc = FC_MIN((ptrdiff_t)FC_KC, jb->kdim - pc);
            for (ptrdiff_t jr = 0; jr < nb; jr += nr)
                kk->ukr[slot](kc, ap + pc * mr, srcq + jr, jb->koff + pc, crow + jr, ldc, pc > 0);
            if (jb->kdim == 0) break;
        }
        ap += jb->kdim * mr;
    }
}

/* Row panels [p0, p1) of job jb at ONE column tile (the tile-outermost products
 * of the forward and grad_input runners): job_product's calls for those
 * columns, panel pi's rows at crow0 + pi * mr_full * ldc, its packed weights
 * from ap (panel p0's). */
static inline void SFX(tile_panels)(const KERN *kk, const PLAN *pl, const JOB *jb,
                                    const REAL *ap, ptrdiff_t p0, ptrdiff_t p1,
                                    const REAL *srcq, REAL *crow0, ptrdiff_t ldc)
{
    for (ptrdiff_t pi = p0; pi < p1; ++pi) {
        const int slot = pi < pl->nfull ? pl->slot_full : pl->slot_tail;
        const ptrdiff_t mr = kk->mr[slot];
        REAL *crow = crow0 + pi * pl->mr_full * ldc;
        for (ptrdiff_t pc = 0; pc < jb->kdim || pc == 0; pc += FC_KC) {
            const ptrdiff_t kc = FC_MIN((ptrdiff_t)FC_KC, jb->kdim - pc);
            kk->ukr[slot](kc, ap + pc * mr, srcq, jb->koff + pc, crow, ldc, pc > 0);
            if (jb->kdim == 0) break;
        }
        ap += jb->kdim * mr;
    }
}

/* One task: column block blk (nb columns) of image img of job jb, through cbuf. */
static void SFX(job_task)(const KERN *kk, const JOB *jb, ptrdiff_t nb, ptrdiff_t img,
                          ptrdiff_t blk, REAL *cbuf)
{
    const ptrdiff_t ncols = jb->rows * jb->qpitch, q0 = blk * nb;
    SFX(job_product)(kk, jb, nb, img, blk, 0, PTRDIFF_MAX, cbuf);
    SFX(job_write)(jb, cbuf, nb + SFX(widest)(kk), img, q0, FC_MIN(q0 + nb, ncols));
}

/*
 * Run jobs over n images. jobs[j].src must be readable up to
 * src + (n-1)*src_n + max(koff) + ncols_grid + nb + nr_max (the caller's slack).
 * Plan (task index space: for each job, n images x its column blocks) -> tasks
 * (each owns its output elements: no merge). Returns FC_ENOMEM if per-thread
 * scratch could not be allocated.
 */
static int SFX(run_jobs)(const KERN *kk, const JOB *jobs, int njobs, ptrdiff_t n, int nt)
{
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
        /* dealt round-robin: the jobs' costs differ (a stride-2 grad_input's
         * four phases have 4, 2, 2 and 1 taps of a 3x3 kernel, and contiguous
         * shares of the job-major list gave one thread two thirds of the work);
         * each task owns its outputs, so who runs it changes no bit */
#pragma omp for schedule(static, 1) nowait
        for (t = 0; t < ntask; ++t) {
            if (!cbuf) continue;
            int j = 0;
            while (t >= first[j + 1]) ++j;
            const ptrdiff_t nblk = FC_CEILDIV(jobs[j].rows * jobs[j].qpitch, nbc[j]);
            SFX(job_task)(kk, &jobs[j], nbc[j], (t - first[j]) / nblk, (t - first[j]) % nblk,
                          cbuf);
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

