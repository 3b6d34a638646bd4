/*
 * fc_gemm_impl.h - dense matrix product for the Linear layer. A template (see
 * fc_instantiate.h), instantiated by fc_gemm.c.
 *
 * fc_gemm computes C (=|+=) op(A) op(B) (+ bias). Internally it multiplies
 *     P[m, n] = A'[m, k] B'[k, n]
 * where row k of B' must be contiguous in n (the micro-kernels load NR
 * consecutive values of it). When op(B) is B itself that holds and P = C.
 * When op(B) = B^T it does not, so the driver computes P = C^T = op(B)^T op(A)^T
 * instead and writes P transposed into C. Then:
 *   - A' is either read in place, a row-major block (row-A kernels: the
 *     forward reads the weight this way), or packed into k-major panels of MR
 *     rows (a transposed A, or a row-major A' that is the smaller operand and
 *     is reused by many column tiles: grad_out in both gradients);
 *   - B' is read in place with row stride ldb (staged KC rows at a time
 *     through a small per-thread buffer when several row panels share it: the
 *     weight in grad-input), or is a zero-padded transposed copy when neither
 *     layout fits (the forward's input x, small).
 * The big operand of every dense-layer product (the weight, or the weight
 * gradient being written) is thus read or written once, never copied whole.
 *
 * Work: P is cut into register tiles MR x NR of one kernel slot; tiles are
 * grouped into tasks along one dimension (a number of tasks that depends on
 * the shape only); inside a task the reduction runs in KC-blocks in a fixed
 * order. Every P element is computed by one task in one fixed order, so the
 * result is bitwise identical for any thread count.
 */

#define GEMM SFX(fc_gemm_plan)

typedef struct {
    ptrdiff_t m, n, kdim;
    int slot;                  /* kernel slot: mr x nr */
    RKERN narrow;              /* when set, the narrow row-A kernel replaces the slot's */
    ptrdiff_t mr, nr;
    /* A': rows (row-A kernel) or packed panels */
    const REAL *arow;          /* A'[i, k] = arow[i * lda + k]; NULL when packed */
    ptrdiff_t lda;
    const REAL *atail;         /* row-A: the last, partial panel's rows, zero padded, lda = kdim */
    const REAL *apack;         /* packed: panel p at apack + p * kdim * mr, mr values per k */
    /* B': row k at b + koff[k]; the last tile reads from btail (koff_t) when set */
    const REAL *b;
    const ptrdiff_t *koff;
    const REAL *btail;
    const ptrdiff_t *koff_t;
    int b_strided;             /* B' is read in place from a caller's matrix */
    /* destination */
    REAL *c;
    ptrdiff_t ldc;
    int trans_out;             /* P[i, j] goes to c[j * ldc + i] */
    const REAL *bias;
    int bias_rows;             /* bias indexed by the row (1) or the column (0) of P */
    int accumulate;
    int dense_fwd;             /* a dense forward: reduction block by fc_gemm(0, 1)'s rule */
    int b_padded;              /* B' rows readable and zero up to FC_ROUNDUP(n, nr): no btail */
    /* packing done by the team at the start of gemm_run (one parallel region) */
    const REAL *apk_src;       /* A'[i, k] = apk_src[i * apk_rs + k * apk_ld] -> apack */
    ptrdiff_t apk_rs, apk_ld;
    REAL *apack_dst;
    const REAL *btr_src;       /* B'[k, j] = btr_src[j * btr_ld + k] -> b_trans_dst, ld npad */
    ptrdiff_t btr_ld, npad;
    REAL *b_trans_dst;
} GEMM;

/* Reduction block: the B' block of one tile (KC x NR) stays in L1 while every
 * row panel of the task runs over it. the gemm_kc route override forces it (tests). */
#define FC_GEMM_KC 128
/* Reduction block of a transposed product (the dense forward, P = W x^T): the B'
 * block of the widest tile (128 floats or 64 doubles) x 2048 = 1 MB stays in L2. */
#define FC_GEMM_KC_TRANS 2048

/*
 * Kernel slot for an m x n product: the least padded work per unit of register
 * tile (all the big tiles keep the FMA units equally busy), ties to the taller
 * tile, whose B loads are shared by more rows.
 */
static int SFX(gemm_slot)(const KERN *kk, ptrdiff_t m, ptrdiff_t n)
{
    int best = -1;
    double best_cost = 0;
    for (int s = 0; s < FC_NUM_MR; ++s) {
        if (kk->mr[s] <= 0) continue;
        const double mr = kk->mr[s], nr = kk->nr[s];
        const double area = mr * nr;
        const double cost = (double)FC_ROUNDUP(m, (ptrdiff_t)mr) *
                            (double)FC_ROUNDUP(n, (ptrdiff_t)nr) / area;
        if (best < 0 || cost < best_cost * 0.999 ||
            (cost <= best_cost * 1.001 && kk->mr[s] > kk->mr[best])) {
            best = s;
            best_cost = cost;
        }
    }
    return best;
}

/* Store a computed block of P (rows i0.., cols j0.., pitch ldp) into C. */
static void SFX(gemm_store)(const GEMM *g, const REAL *p, ptrdiff_t ldp, ptrdiff_t i0,
                            ptrdiff_t rows, ptrdiff_t j0, ptrdiff_t cols)
{
    for (ptrdiff_t i = 0; i < rows; ++i) {
        const REAL *pr = p + i * ldp;
        const ptrdiff_t gi = i0 + i;
        const REAL brow = (g->bias && g->bias_rows) ? g->bias[gi] : (REAL)0;
        const REAL *bcol = (g->bias && !g->bias_rows) ? g->bias + j0 : NULL;
        if (!g->trans_out) {
            REAL *cr = g->c + gi * g->ldc + j0;
            if (g->accumulate) {
                if (bcol) for (ptrdiff_t j = 0; j < cols; ++j) cr[j] += pr[j] + bcol[j];
                else for (ptrdiff_t j = 0; j < cols; ++j) cr[j] += pr[j] + brow;
            } else {
                if (bcol) for (ptrdiff_t j = 0; j < cols; ++j) cr[j] = pr[j] + bcol[j];
                else for (ptrdiff_t j = 0; j < cols; ++j) cr[j] = pr[j] + brow;
            }
        } else {
            REAL *cc = g->c + j0 * g->ldc + gi;
            const ptrdiff_t ld = g->ldc;
            if (g->accumulate) {
                if (bcol) for (ptrdiff_t j = 0; j < cols; ++j) cc[j * ld] += pr[j] + bcol[j];
                else for (ptrdiff_t j = 0; j < cols; ++j) cc[j * ld] += pr[j] + brow;
            } else {
                if (bcol) for (ptrdiff_t j = 0; j < cols; ++j) cc[j * ld] = pr[j] + bcol[j];
                else for (ptrdiff_t j = 0; j < cols; ++j) cc[j * ld] = pr[j] + brow;
            }
        }
    }
}

/*
 * Block kb (16 values of k) of the zero-padded transposed copy of B':
 * b_trans_dst[k * npad + j] = btr_src[j * btr_ld + k] for j < n, 0 up to npad.
 */
static void SFX(gemm_transpose_block)(const GEMM *g, ptrdiff_t kb)
{
    const REAL *src = g->btr_src;
    REAL *dst = g->b_trans_dst;
    const ptrdiff_t ls = g->btr_ld, ld = g->npad, n = g->n;
    const ptrdiff_t k0 = kb * 16, k1 = FC_MIN(g->kdim, k0 + 16);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += 16) {
        const ptrdiff_t j1 = FC_MIN(n, j0 + 16);
        for (ptrdiff_t k = k0; k < k1; ++k)
            for (ptrdiff_t j = j0; j < j1; ++j) dst[k * ld + j] = src[j * ls + k];
    }
    for (ptrdiff_t k = k0; k < k1; ++k)
        for (ptrdiff_t j = n; j < ld; ++j) dst[k * ld + j] = 0;
}

/* Panel p of A' into apack_dst: mr values per k, rows past m zero. */
static void SFX(gemm_pack_panel)(const GEMM *g, ptrdiff_t p)
{
    const ptrdiff_t mr = g->mr, k = g->kdim;
    REAL *dst = g->apack_dst + p * k * mr;
    const ptrdiff_t i0 = p * mr, rows = FC_MIN(mr, g->m - i0);
    if (g->apk_rs == 1) {
        for (ptrdiff_t q = 0; q < k; ++q) {
            const REAL *s = g->apk_src + q * g->apk_ld + i0;
            ptrdiff_t r = 0;
            for (; r < rows; ++r) dst[q * mr + r] = s[r];
            for (; r < mr; ++r) dst[q * mr + r] = 0;
        }
    } else { /* rows of a row-major A' (apk_ld == 1) */
        for (ptrdiff_t r = 0; r < mr; ++r) {
            const REAL *s = g->apk_src + (i0 + r) * g->apk_rs;
            if (r < rows)
                for (ptrdiff_t q = 0; q < k; ++q) dst[q * mr + r] = s[q];
            else
                for (ptrdiff_t q = 0; q < k; ++q) dst[q * mr + r] = 0;
        }
    }
}

/* Where tile (pi, tj) of a task starting at (pi0, tj0) lives in cbuf (see gemm_team). */
static REAL *SFX(gemm_slot_ptr)(REAL *cbuf, int direct_ok, int m_part, ptrdiff_t task_cols,
                                ptrdiff_t tm, ptrdiff_t cb_cols, ptrdiff_t mr, ptrdiff_t nr,
                                ptrdiff_t pi, ptrdiff_t pi0, ptrdiff_t tj, ptrdiff_t tj0,
                                ptrdiff_t *ld)
{
    if (!direct_ok) {
        *ld = cb_cols;
        return cbuf + (pi - pi0) * mr * cb_cols + (tj - tj0) * nr;
    }
    *ld = nr;
    if (m_part && pi == tm - 1) return cbuf + (tj - tj0) * mr * nr;
    /* the partial last column tile, down the task's row panels */
    return cbuf + ((m_part ? task_cols : 0) + (pi - pi0)) * mr * nr;
}

/* Tasks: FC_GEMM_TASKS blocks of tiles along the longer tile dimension. */
#define FC_GEMM_TASKS 24

/* How one product is cut into tasks, and each task's scratch sizes. */
typedef struct {
    const KERN *kk;
    RKERN rkern;               /* row-A kernel (A' read in place) */
    ptrdiff_t tm, tn;          /* row panels, column tiles */
    int split_n;               /* tasks split the column tiles (else the row panels) */
    ptrdiff_t tsplit, ntask;   /* tiles along the split dimension; tasks */
    ptrdiff_t kcb;             /* reduction block */
    ptrdiff_t task_cols, cb_cols;
    int m_part, direct_ok, pack_b;
    ptrdiff_t cb_elems;        /* cbuf size (see below) */
} SFX(gemm_split);

/* The reduction block of a product (of a dense forward when dense_fwd). */
static ptrdiff_t SFX(gemm_kc)(int dense_fwd, ptrdiff_t kdim)
{
    ptrdiff_t kc_dflt = FC_GEMM_KC;
    if (dense_fwd) kc_dflt = FC_MAX(kc_dflt, FC_MIN(kdim, (ptrdiff_t)FC_GEMM_KC_TRANS));
    ptrdiff_t kcb = fc_route_override(FC_OVERRIDE_GEMM_KC, (int)kc_dflt);
    return kcb < 8 ? kc_dflt : kcb;
}

static void SFX(gemm_split_plan)(const GEMM *g, SFX(gemm_split) *sp)
{
    const ptrdiff_t mr = g->mr, nr = g->nr;
    sp->kk = GETK();
    sp->rkern = g->narrow ? g->narrow : GETR()[g->slot];
    sp->tm = FC_CEILDIV(g->m, mr);
    sp->tn = FC_CEILDIV(g->n, nr);
    const ptrdiff_t tm = sp->tm, tn = sp->tn;
    /* split the columns when there are many column tiles, else the rows */
    sp->split_n = tn >= 16 || tn >= tm;
    sp->tsplit = sp->split_n ? tn : tm;
    sp->ntask = FC_MIN(sp->tsplit, (ptrdiff_t)FC_MAX(1, fc_route_override(FC_OVERRIDE_GEMM_TASKS,
                                                                          FC_GEMM_TASKS)));
    /*
     * A' read in place (a weight's rows, in the forward) streams from memory once;
     * reading each row whole, rather than in KC pieces revisited per block, keeps
     * the access sequential for the prefetchers (5-7% at 1 thread). B' then comes
     * from L2 (B' already packed whole: the per-block copies of a strided B' would
     * grow with KC).
     * Every C element is a sum of per-block FMA chains, so the blocking decides its
     * rounding. In the dense forward the columns of P are the batch rows: its block
     * must depend on nothing the batch size changes (the kernel slot, whether A' is
     * packed), or a sample's output would depend on the batch it is in.
     */
    sp->kcb = SFX(gemm_kc)(g->dense_fwd, g->kdim);
    /* the most tiles any task gets along the split dimension */
    const ptrdiff_t per_max = FC_CEILDIV(sp->tsplit, sp->ntask);
    const ptrdiff_t cb_rows = (sp->split_n ? tm : per_max) * mr;
    sp->cb_cols = (sp->split_n ? per_max : tn) * nr;
    sp->direct_ok = !g->trans_out && !g->bias;
    /*
     * cbuf holds the tiles that cannot be written in place. Without bias or
     * transposition those are only the partial ones: the last row panel across
     * the task's column tiles and the last column tile down its row panels, each
     * an mr x nr slot (a weight gradient of many rows then needs no buffer of its
     * height). Otherwise it holds every tile of the task, row-major.
     */
    sp->m_part = g->m % mr != 0;
    const int n_part = g->n % nr != 0;
    sp->task_cols = sp->split_n ? per_max : tn;
    const ptrdiff_t task_rows = sp->split_n ? tm : per_max;
    sp->cb_elems = sp->direct_ok ? FC_MAX((ptrdiff_t)1, (sp->m_part ? sp->task_cols : 0) +
                                                            (n_part ? task_rows : 0)) * mr * nr
                                 : cb_rows * sp->cb_cols;
    /* copy B' tiles when they are read in place and shared by several row panels */
    sp->pack_b = g->b_strided && (sp->split_n ? tm : FC_CEILDIV(sp->tsplit, sp->ntask)) > 1 &&
                 fc_route_override(FC_OVERRIDE_GEMM_PACKB, 1);
}

/* The C tile (pi, tj) of reduction block pc (kc long) with B' at bp / ko. */
static void SFX(gemm_tile)(const GEMM *g, const SFX(gemm_split) *sp, ptrdiff_t pi,
                           ptrdiff_t pi0, ptrdiff_t pi1, ptrdiff_t tj, ptrdiff_t tj0,
                           ptrdiff_t pc, ptrdiff_t kc, const REAL *bp, const ptrdiff_t *ko,
                           REAL *cbuf)
{
    const ptrdiff_t mr = g->mr, nr = g->nr, i0 = pi * mr, j0 = tj * nr;
    const int full_m = i0 + mr <= g->m, full_n = j0 + nr <= g->n;
    REAL *cp;
    ptrdiff_t ldc;
    int acc;
    if (sp->direct_ok && full_n && full_m) {
        cp = g->c + i0 * g->ldc + j0;
        ldc = g->ldc;
        acc = pc > 0 || g->accumulate;
        /* The next panel's C tile is mr rows a whole C row apart (a weight
         * gradient's 12.5 KB): no hardware prefetcher follows that, and the
         * kernel would wait on memory at its end. */
        if (pi + 1 < pi1 && pc == 0)
            for (ptrdiff_t r = 0; r < mr; ++r) {
                const char *row = (const char *)(cp + (mr + r) * ldc);
                for (ptrdiff_t off = 0; off < nr * (ptrdiff_t)sizeof(REAL); off += 64)
                    FC_PREFETCH_W(row + off);
            }
    } else {
        cp = SFX(gemm_slot_ptr)(cbuf, sp->direct_ok, sp->m_part, sp->task_cols, sp->tm,
                                sp->cb_cols, mr, nr, pi, pi0, tj, tj0, &ldc);
        acc = pc > 0;
    }
    if (g->arow) {
        if (full_m)
            sp->rkern(kc, g->arow + i0 * g->lda + pc, g->lda, bp, ko, cp, ldc, acc);
        else
            sp->rkern(kc, g->atail + pc, g->kdim, bp, ko, cp, ldc, acc);
    } else {
        sp->kk->ukr[g->slot](kc, g->apack + pi * g->kdim * mr + pc * mr, bp, ko, cp, ldc, acc);
    }
}

/* One task: tiles [lo, hi) of the split dimension, reduction blocks in order,
 * then the tiles that went through cbuf stored into C. */
static void SFX(gemm_task)(const GEMM *g, const SFX(gemm_split) *sp, ptrdiff_t t, REAL *cbuf,
                           REAL *bbuf, const ptrdiff_t *koff_c)
{
    const ptrdiff_t mr = g->mr, nr = g->nr;
    const ptrdiff_t lo = t * sp->tsplit / sp->ntask, hi = (t + 1) * sp->tsplit / sp->ntask;
    const ptrdiff_t pi0 = sp->split_n ? 0 : lo, pi1 = sp->split_n ? sp->tm : hi;
    const ptrdiff_t tj0 = sp->split_n ? lo : 0, tj1 = sp->split_n ? hi : sp->tn;
    for (ptrdiff_t pc = 0; pc < g->kdim; pc += sp->kcb) {
        const ptrdiff_t kc = FC_MIN(sp->kcb, g->kdim - pc);
        const ptrdiff_t tfull = FC_MIN(tj1, g->b_padded ? FC_CEILDIV(g->n, nr) : g->n / nr) - tj0;
        if (bbuf) {
            /* B' rows far apart in memory (a weight's rows) cost a TLB walk
             * each and map onto few cache sets: copy this reduction block of
             * the task's full tiles, a whole row at a time, into tile-major
             * order, where each tile stays in L1 for every row panel. */
            for (ptrdiff_t q = 0; q < kc; ++q) {
                const REAL *src = g->b + tj0 * nr + g->koff[pc + q];
                for (ptrdiff_t u = 0; u < tfull; ++u)
                    memcpy(bbuf + (u * kc + q) * nr, src + u * nr, sizeof(REAL) * (size_t)nr);
            }
        }
        for (ptrdiff_t tj = tj0; tj < tj1; ++tj) {
            const ptrdiff_t j0 = tj * nr;
            const REAL *bp;
            const ptrdiff_t *ko;
            if (j0 + nr > g->n && g->btail) {
                bp = g->btail;
                ko = g->koff_t + pc;
            } else if (bbuf) {
                bp = bbuf + (tj - tj0) * kc * nr;
                ko = koff_c;
            } else {
                bp = g->b + j0;
                ko = g->koff + pc;
            }
            for (ptrdiff_t pi = pi0; pi < pi1; ++pi)
                SFX(gemm_tile)(g, sp, pi, pi0, pi1, tj, tj0, pc, kc, bp, ko, cbuf);
        }
    }
    for (ptrdiff_t pi = pi0; pi < pi1; ++pi) {
        const ptrdiff_t i0 = pi * mr, rows = FC_MIN(mr, g->m - i0);
        for (ptrdiff_t tj = tj0; tj < tj1; ++tj) {
            const ptrdiff_t j0 = tj * nr, cols = FC_MIN(nr, g->n - j0);
            if (sp->direct_ok && rows == mr && cols == nr) continue;
            ptrdiff_t ldp;
            const REAL *p = SFX(gemm_slot_ptr)(cbuf, sp->direct_ok, sp->m_part, sp->task_cols,
                                               sp->tm, sp->cb_cols, mr, nr, pi, pi0, tj, tj0,
                                               &ldp);
            SFX(gemm_store)(g, p, ldp, i0, rows, j0, cols);
        }
    }
}

/*
 * The product, run by every thread of the calling team (or by one thread
 * outside a parallel region): worksharing loops pack the small operands, then
 * share out the tasks (each owns its C tiles: nothing to merge). Sets *failed
 * when scratch memory ran out.
 */
static void SFX(gemm_team)(const GEMM *g, int *failed)
{
    SFX(gemm_split) sp;
    SFX(gemm_split_plan)(g, &sp);
    REAL *cbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)sp.cb_elems);
    REAL *bbuf = NULL;
    ptrdiff_t *koff_c = NULL;
    if (sp.pack_b && cbuf) {
        bbuf = (REAL *)fc_malloc(sizeof(REAL) * (size_t)(sp.kcb * sp.cb_cols));
        koff_c = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)sp.kcb);
        if (!bbuf || !koff_c) {
            fc_free(cbuf);
            cbuf = NULL;
        } else {
            for (ptrdiff_t q = 0; q < sp.kcb; ++q) koff_c[q] = q * g->nr;
        }
    }
    if (!cbuf) {
#pragma omp atomic write
        *failed = 1;
    }
    /* packing the small operands: a worksharing loop each, so the team is
     * woken once per product (each extra region or barrier costs a time slice
     * when the machine is oversubscribed) */
    ptrdiff_t t;
    if (g->apack_dst) {
        const ptrdiff_t npan = FC_CEILDIV(g->m, g->mr);
#pragma omp for schedule(static)
        for (t = 0; t < npan; ++t) SFX(gemm_pack_panel)(g, t);
    }
    if (g->b_trans_dst) {
        const ptrdiff_t nkb = FC_CEILDIV(g->kdim, 16);
#pragma omp for schedule(static)
        for (t = 0; t < nkb; ++t) SFX(gemm_transpose_block)(g, t);
    }
#pragma omp for schedule(static)
    for (t = 0; t < sp.ntask; ++t)
        if (cbuf) SFX(gemm_task)(g, &sp, t, cbuf, bbuf, koff_c);
    fc_free(cbuf);
    fc_free(bbuf);
    free(koff_c);
}

static int SFX(gemm_run)(const GEMM *g, int nt)
{
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        fc_team_arrive(&tm);
        SFX(gemm_team)(g, &failed);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

#include "fc_gemm_plan_impl.h" /* gemm_plan: the route and buffers of one product */

int SFX(fc_gemm)(int transa, int transb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                 const REAL *a, ptrdiff_t lda, const REAL *b, ptrdiff_t ldb, const REAL *bias,
                 int bias_mode, int accumulate, int nthreads, REAL *c, ptrdiff_t ldc)
{
    if (m <= 0 || n <= 0) return FC_OK;
    if (bias_mode == FC_BIAS_NONE) bias = NULL;
    if (k <= 0) { /* empty reduction: C (=|+=) bias or 0 */
        for (ptrdiff_t i = 0; i < m; ++i)
            for (ptrdiff_t j = 0; j < n; ++j) {
                const REAL v = !bias ? (REAL)0
                               : bias_mode == FC_BIAS_ROWS ? bias[i] : bias[j];
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + v : v;
            }
        return FC_OK;
    }
    nthreads = fc_threads_for(nthreads, (double)m * (double)n * (double)k);
    GEMM g;
    ptrdiff_t *koff;
    REAL *scratch;
    int rc = SFX(gemm_plan)(transa, transb, m, n, k, a, lda, b, ldb, bias, bias_mode,
                            accumulate, c, ldc, &g, &koff, &scratch);
    if (rc == FC_OK) rc = SFX(gemm_run)(&g, nthreads);
    free(koff);
    fc_free(scratch);
    return rc;
}

/*
 * fc_linear_fwd_panels: GETV()'s kernel down each panel of the weight, the
 * panels cut into one chunk per thread (each element is computed by one chunk,
 * the same way for any cut), the reduction in fc_gemm's blocks, each block's
 * chain added to the sum so far, then the bias: fc_gemm's order.
 */
/* fc_linear_fwd_panels's chunk ch of nchunk: panels [p0, p1), their columns of y */
static void SFX(panels_chunk)(const REAL *x, const REAL *wp, const REAL *bias, ptrdiff_t nin,
                              ptrdiff_t nout, ptrdiff_t ch, ptrdiff_t nchunk, REAL *y)
{
    const ptrdiff_t pw = FC_KMAJOR_PAD;
    const GEMV kern = GETV();
    const ptrdiff_t kcb = SFX(gemm_kc)(1, nin);
    const ptrdiff_t np = FC_CEILDIV(nout, pw);
    const ptrdiff_t p0 = ch * np / nchunk, p1 = (ch + 1) * np / nchunk;
    REAL t[FC_KMAJOR_PAD];
    for (ptrdiff_t p = p0; p < p1; ++p) {
        const REAL *w = wp + p * nin * pw;
        const ptrdiff_t c0 = p * pw, e1 = FC_MIN(c0 + pw, nout);
        /* whole vectors of any level, no further into the zero padding */
        const ptrdiff_t cols = FC_MIN(pw, FC_ROUNDUP(e1 - c0, (ptrdiff_t)16));
        for (ptrdiff_t pc = 0; pc < nin; pc += kcb) {
            const ptrdiff_t kc = FC_MIN(kcb, nin - pc);
            kern(kc, w + pc * pw, pw, x + pc, cols, t);
            if (pc == 0) memcpy(y + c0, t, sizeof(REAL) * (size_t)(e1 - c0));
            else for (ptrdiff_t j = c0; j < e1; ++j) y[j] = y[j] + t[j - c0];
        }
        if (bias) for (ptrdiff_t j = c0; j < e1; ++j) y[j] = y[j] + bias[j];
    }
}

/*
 * The dense forward of one row, y = x W^T (+ bias), from the panelled copy of W
 * (fastconv.h). Each thread streams its own contiguous run of whole panels: at
 * batch 1 the layer is one pass over the weight (12.8 MB for the MNIST CNN's
 * 3136 -> 1024, from L3), so the order it is read in sets its speed.
 */
int SFX(fc_linear_fwd_panels)(const REAL *x, const REAL *wp, const REAL *bias, ptrdiff_t nin,
                              ptrdiff_t nout, int nthreads, REAL *y)
{
    if (nout <= 0) return FC_OK;
    if (nin <= 0) { /* empty reduction: the bias or zeros (fc_gemm's rule) */
        for (ptrdiff_t j = 0; j < nout; ++j) y[j] = bias ? bias[j] : (REAL)0;
        return FC_OK;
    }
    nthreads = fc_threads_for(nthreads, (double)nout * (double)nin);
    const ptrdiff_t nchunk = FC_MIN((ptrdiff_t)nthreads, FC_CEILDIV(nout, (ptrdiff_t)FC_KMAJOR_PAD));
    if (nchunk <= 1) { /* no region: a serialised one costs ~0.25 us, a small layer's third */
        SFX(panels_chunk)(x, wp, bias, nin, nout, 0, 1, y);
        return FC_OK;
    }
    ptrdiff_t ch;
    fc_team tm;
    fc_team_begin(&tm, (int)nchunk);
#pragma omp parallel num_threads((int)nchunk)
    {
        fc_team_arrive(&tm);
#pragma omp for schedule(static)
        for (ch = 0; ch < nchunk; ++ch) SFX(panels_chunk)(x, wp, bias, nin, nout, ch, nchunk, y);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return FC_OK;
}

/*
 * The dense forward y = x W^T (+ bias) from a k-major copy of the weight,
 * wt[q * ldw + i] = W[i, q], ldw >= FC_ROUNDUP(nout, FC_KMAJOR_PAD) and zero
 * past nout. It is the product P = x Wt in the plain orientation, which reads
 * Wt rows whole: no transposition of W as it goes, which is what makes the
 * transposed route slow for a few samples. The reduction block is fc_gemm(0, 1)'s,
 * and every kernel is an FMA chain in k order per block: each element is the
 * same sum in the same order, so the output is bitwise fc_gemm's.
 */
int SFX(fc_linear_fwd_kmajor)(const REAL *x, const REAL *wt, ptrdiff_t ldw, const REAL *bias,
                              ptrdiff_t n, ptrdiff_t nin, ptrdiff_t nout, int nthreads,
                              REAL *y)
{
    if (n <= 0 || nout <= 0) return FC_OK;
    if (nin <= 0 || ldw < FC_ROUNDUP(nout, (ptrdiff_t)FC_KMAJOR_PAD)) /* fc_gemm copes */
        return SFX(fc_gemm)(0, 1, n, nout, nin, x, nin, wt, nin, bias,
                            bias ? FC_BIAS_COLS : FC_BIAS_NONE, 0, nthreads, y, nout);
    nthreads = fc_threads_for(nthreads, (double)n * (double)nout * (double)nin);
    GEMM g;
    SFX(gemm_ops) o;
    memset(&g, 0, sizeof g);
    g.c = y;
    g.ldc = nout;
    g.kdim = nin;
    g.bias = bias;
    g.dense_fwd = 1;
    g.b_padded = 1;
    SFX(gemm_choose)(0, 0, n, nout, x, nin, wt, ldw, bias ? FC_BIAS_COLS : FC_BIAS_NONE, &g, &o);
    ptrdiff_t *koff = NULL;
    REAL *scratch = NULL;
    int rc = SFX(gemm_buffers)(&o, nin, &g, &koff, &scratch);
    if (rc == FC_OK) rc = SFX(gemm_run)(&g, nthreads);
    free(koff);
    fc_free(scratch);
    return rc;
}

#undef GEMM
