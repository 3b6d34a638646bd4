/*
 * fc_gemm_plan_impl.h - the plan of one dense product (gemm_plan): its route
 * (operands, orientation, kernel) and buffers. Part of the fc_gemm_impl.h
 * template, included by it.
 */
/* Where P = A' B' reads its operands: A' in place (arow) or packed from
 * apk_src; B' in place (bdir) or transposed from btr_src. */
typedef struct {
    const REAL *arow, *apk_src, *bdir, *btr_src;
    ptrdiff_t a_ld, apk_ld, bdir_ld, btr_ld;
    ptrdiff_t apk_rs;          /* packed source: A'[i, k] = apk_src[i * apk_rs + k * apk_ld] */
} SFX(gemm_ops);

/* The route of one product: operands, orientation, kernel slot (or a narrow kernel). */
static void SFX(gemm_choose)(int transa, int transb, ptrdiff_t m, ptrdiff_t n, const REAL *a,
                             ptrdiff_t lda, const REAL *b, ptrdiff_t ldb, int bias_mode,
                             GEMM *g, SFX(gemm_ops) *o)
{
    const KERN *kk = GETK();
    memset(o, 0, sizeof *o);
    o->apk_rs = 1;
    if (!transb) {                 /* P = C = op(A) B */
        g->m = m; g->n = n; g->trans_out = 0;
        if (!transa) { o->arow = a; o->a_ld = lda; }
        else { o->apk_src = a; o->apk_ld = lda; }     /* A'[i, k] = a[k * lda + i] */
        o->bdir = b; o->bdir_ld = ldb;
        g->bias_rows = bias_mode == FC_BIAS_ROWS;
    } else {                       /* P = C^T = B op(A)^T, with B = b rows (n x k) */
        g->m = n; g->n = m; g->trans_out = 1; g->dense_fwd = 1;
        o->arow = b; o->a_ld = ldb;
        if (transa) { o->bdir = a; o->bdir_ld = lda; }    /* B'[k, i] = a[k * lda + i] */
        else { o->btr_src = a; o->btr_ld = lda; }         /* B'[k, i] = a[i * lda + k] */
        g->bias_rows = bias_mode == FC_BIAS_COLS;
    }
    g->slot = SFX(gemm_slot)(kk, g->m, g->n);
    const int forced = fc_route_override(FC_OVERRIDE_GEMM_SLOT, -1);
    if (forced >= 0 && forced < FC_NUM_MR && kk->mr[forced] > 0) g->slot = forced;
    g->mr = kk->mr[g->slot];
    g->nr = kk->nr[g->slot];
    /*
     * The forward of a few samples (P = W x^T with a handful of columns): every
     * slot pads the columns to its 48-128, doing up to 128x the useful
     * multiply-adds. A kernel one vector wide pads to 8-16 instead; it reads W
     * in place like the others and its FMA chain per element is the same.
     */
    if (transb && forced < 0) {
        const NARROW nk = GETN();
        if (g->n == 1 && nk.fn1) { /* one sample: lanes across rows of W */
            g->narrow = nk.fn1;
            g->mr = nk.mr1;
            g->nr = 1;
        } else if (g->n <= nk.nr) {
            g->narrow = nk.fn;
            g->mr = nk.mr;
            g->nr = nk.nr;
        }
    }
    /*
     * A row-major A' that is the smaller operand and is reused by several column
     * tiles is packed after all: its rows are often a power-of-two apart (a
     * grad_out of 1024 features) and would then fight for the same L1 sets.
     * The big operand (a weight) is never copied.
     */
    if (o->arow && g->n > g->nr && (double)g->m <= (double)g->n &&
        fc_route_override(FC_OVERRIDE_GEMM_PACKA, 1)) {
        o->apk_src = o->arow; o->apk_rs = o->a_ld; o->apk_ld = 1;
        o->arow = NULL;
    }
}

/* Offset tables and scratch for the chosen route (A' tail, packed A',
 * transposed B' or B' tail), filled where they are copies made once. */
static int SFX(gemm_buffers)(const SFX(gemm_ops) *o, ptrdiff_t k, GEMM *g,
                             ptrdiff_t **koff_out, REAL **scratch_out)
{
    const ptrdiff_t mr = g->mr, nr = g->nr;
    const ptrdiff_t npad = FC_ROUNDUP(g->n, nr), mpad = FC_ROUNDUP(g->m, mr);
    const ptrdiff_t m_rem = g->m % mr, n_rem = g->n % nr;
    /* one allocation for the offset tables, then the REAL scratch */
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)(2 * k));
    size_t nscratch = 0;
    if (o->arow && m_rem) nscratch += (size_t)(mr * k);         /* atail */
    if (o->apk_src) nscratch += (size_t)(mpad * k);              /* apack */
    if (o->btr_src) nscratch += (size_t)(k * npad);              /* transposed B' */
    else if (n_rem && !g->b_padded) nscratch += (size_t)(k * nr); /* btail */
    REAL *scratch = nscratch ? (REAL *)fc_malloc(sizeof(REAL) * nscratch) : NULL;
    if (!koff || (nscratch && !scratch)) {
        free(koff);
        fc_free(scratch);
        return FC_ENOMEM;
    }
    REAL *sp = scratch;
    ptrdiff_t *koff_t = koff + k;
    if (o->arow) {
        g->arow = o->arow;
        g->lda = o->a_ld;
        if (m_rem) {
            REAL *at = sp;
            sp += mr * k;
            const ptrdiff_t i0 = g->m - m_rem;
            for (ptrdiff_t r = 0; r < mr; ++r) {
                if (r < m_rem) memcpy(at + r * k, o->arow + (i0 + r) * o->a_ld, sizeof(REAL) * (size_t)k);
                else memset(at + r * k, 0, sizeof(REAL) * (size_t)k);
            }
            g->atail = at;
        }
    } else {
        g->apack = g->apack_dst = sp;
        sp += mpad * k;
        g->apk_src = o->apk_src;
        g->apk_rs = o->apk_rs;
        g->apk_ld = o->apk_ld;
    }
    if (o->btr_src) {
        REAL *b_trans = sp;
        sp += k * npad;
        g->b_trans_dst = b_trans;
        g->btr_src = o->btr_src;
        g->btr_ld = o->btr_ld;
        g->npad = npad;
        g->b = b_trans;
        for (ptrdiff_t i = 0; i < k; ++i) koff[i] = i * npad;
    } else {
        g->b = o->bdir;
        g->b_strided = 1;
        for (ptrdiff_t i = 0; i < k; ++i) koff[i] = i * o->bdir_ld;
        if (n_rem && !g->b_padded) { /* the last tile would read past the end of B's last row */
            REAL *b_tail = sp;
            sp += k * nr;
            const ptrdiff_t j0 = g->n - n_rem;
            for (ptrdiff_t i = 0; i < k; ++i) {
                memcpy(b_tail + i * nr, o->bdir + i * o->bdir_ld + j0, sizeof(REAL) * (size_t)n_rem);
                memset(b_tail + i * nr + n_rem, 0, sizeof(REAL) * (size_t)(nr - n_rem));
                koff_t[i] = i * nr;
            }
            g->btail = b_tail;
            g->koff_t = koff_t;
        }
    }
    g->koff = koff;
    *koff_out = koff;
    *scratch_out = scratch;
    return FC_OK;
}

/*
 * Plan a product with m, n, k >= 1 (arguments as fc_gemm): fills *gp and
 * allocates its offset tables (*koff_out) and scratch (*scratch_out), which the
 * caller frees with free / fc_free after running it.
 */
static int SFX(gemm_plan)(int transa, int transb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                          const REAL *a, ptrdiff_t lda, const REAL *b, ptrdiff_t ldb,
                          const REAL *bias, int bias_mode, int accumulate, REAL *c,
                          ptrdiff_t ldc, GEMM *gp, ptrdiff_t **koff_out, REAL **scratch_out)
{
    GEMM g;
    SFX(gemm_ops) o;
    memset(&g, 0, sizeof g);
    *koff_out = NULL;
    *scratch_out = NULL;
    g.c = c;
    g.ldc = ldc;
    g.accumulate = accumulate;
    g.kdim = k;
    g.bias = bias_mode == FC_BIAS_NONE ? NULL : bias;
    SFX(gemm_choose)(transa, transb, m, n, a, lda, b, ldb, bias_mode, &g, &o);
    const int rc = SFX(gemm_buffers)(&o, k, &g, koff_out, scratch_out);
    if (rc == FC_OK) *gp = g;
    return rc;
}
