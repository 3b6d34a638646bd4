/*
 * fc_optim_impl.h - the fused optimiser step. A template (see fc_instantiate.h),
 * instantiated by fc_optim.c, which explains why it is bitwise NumPy's result.
 */
/* Hyper-parameters rounded to the dtype once per call, as NumPy rounds a weak
 * Python scalar operand. */
typedef struct {
    REAL lr, wd, l1, mom, eps, alpha, oma, b1, omb1, b2, omb2;
} SFX(opt_sc);
static void SFX(opt_scalars)(const fc_optim_hyper *h, SFX(opt_sc) *s)
{
    s->lr = (REAL)h->lr;
    s->wd = (REAL)h->weight_decay;
    s->l1 = (REAL)h->l1;
    s->mom = (REAL)h->momentum;
    s->eps = (REAL)h->eps;
    s->alpha = (REAL)h->alpha;
    s->oma = (REAL)(1.0 - h->alpha);
    s->b1 = (REAL)h->beta1;
    s->omb1 = (REAL)(1.0 - h->beta1);
    s->b2 = (REAL)h->beta2;
    s->omb2 = (REAL)(1.0 - h->beta2);
}

/* SGD, momentum 0:  tmp = g * lr; w -= tmp */
FC_ALWAYS_INLINE void SFX(sgd)(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,
                             REAL l1, int wd_on, int l1_on, REAL lr,
                             REAL *FC_RESTRICT w)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        FC_OPT_GRAD
        const REAL t = gi * lr;
        w[i] = wi - t;
    }
}
/* SGD with momentum: buf = g (first step) or buf = buf * mom + g;
 * d = buf * mom + g (nesterov) or buf; w -= d * lr */
FC_ALWAYS_INLINE void SFX(sgd_mom)(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,
                                 REAL l1, int wd_on, int l1_on, REAL lr, REAL mom,
                                 int nesterov, int first, REAL *FC_RESTRICT w,
                                 REAL *FC_RESTRICT buf)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        FC_OPT_GRAD
        const REAL bm = buf[i] * mom;
        const REAL bs = bm + gi;
        const REAL b = first ? gi : bs;
        buf[i] = b;
        const REAL dm = b * mom;
        const REAL dn = dm + gi;
        const REAL d = nesterov ? dn : b;
        const REAL t = d * lr;
        w[i] = wi - t;
    }
}
/* Adagrad: tmp = g*g; acc += tmp; tmp = sqrt(acc) + eps; tmp = g / tmp * lr */
FC_ALWAYS_INLINE void SFX(adagrad)(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,
                                 REAL l1, int wd_on, int l1_on, REAL lr, REAL eps,
                                 REAL *FC_RESTRICT w, REAL *FC_RESTRICT acc)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        FC_OPT_GRAD
        const REAL g2 = gi * gi;
        const REAL a = acc[i] + g2;
        acc[i] = a;
        const REAL r = SFX(opt_sqrt)(a);
        const REAL den = r + eps;
        const REAL q = gi / den;
        const REAL t = q * lr;
        w[i] = wi - t;
    }
}
/* RMSprop: tmp = g*g*(1-alpha); sq = sq*alpha + tmp; tmp = g / (sqrt(sq) + eps);
 * with momentum buf = buf*mom + tmp, tmp = buf; w -= tmp * lr */
FC_ALWAYS_INLINE void SFX(rmsprop)(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,
                                 REAL l1, int wd_on, int l1_on, REAL lr, REAL eps,
                                 REAL alpha, REAL oma, int use_mom, REAL mom,
                                 REAL *FC_RESTRICT w, REAL *FC_RESTRICT sq,
                                 REAL *FC_RESTRICT buf)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        FC_OPT_GRAD
        const REAL g2 = gi * gi;
        const REAL g2a = g2 * oma;
        const REAL sa = sq[i] * alpha;
        const REAL s = sa + g2a;
        sq[i] = s;
        const REAL r = SFX(opt_sqrt)(s);
        const REAL den = r + eps;
        REAL q = gi / den;
        if (use_mom) { /* constant at every call site: two loops */
            const REAL bm = buf[i] * mom;
            q = bm + q;
            buf[i] = q;
        }
        const REAL t = q * lr;
        w[i] = wi - t;
    }
}
/* Adam: m = m*b1 + g*(1-b1); v = v*b2 + g*g*(1-b2);
 * tmp = sqrt(v) / c2 + eps; w -= m / tmp * step_size */
FC_ALWAYS_INLINE void SFX(adam)(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,
                              REAL l1, int wd_on, int l1_on, REAL eps, REAL b1,
                              REAL omb1, REAL b2, REAL omb2, REAL c2,
                              REAL step_size, REAL *FC_RESTRICT w,
                              REAL *FC_RESTRICT m, REAL *FC_RESTRICT v)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        FC_OPT_GRAD
        const REAL mb = m[i] * b1;
        const REAL gb = gi * omb1;
        const REAL mi = mb + gb;
        m[i] = mi;
        const REAL g2 = gi * gi;
        const REAL g2b = g2 * omb2;
        const REAL vb = v[i] * b2;
        const REAL vi = vb + g2b;
        v[i] = vi;
        const REAL r = SFX(opt_sqrt)(vi);
        const REAL rc = r / c2;
        const REAL den = rc + eps;
        const REAL q = mi / den;
        const REAL t = q * step_size;
        w[i] = wi - t;
    }
}

/* One range [a, a + n) of one tensor, compiled per SIMD level (FC_SIMD_PROC). */
FC_SIMD_PROC(SFX(range), (const fc_optim_hyper *h, const SFX(opt_sc) *s,
                          const SFX(fc_optim_tensor) *t, ptrdiff_t a, ptrdiff_t n),
             (h, s, t, a, n))
{
    const REAL *g = t->grad + a;
    REAL *w = t->w + a;
    const int wd_on = t->regularize && h->weight_decay != 0.0;
    const int l1_on = t->regularize && h->l1 != 0.0;
    switch (h->kind) {
    case FC_OPTIM_SGD:
        if (h->momentum != 0.0)
            SFX(sgd_mom)(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->mom,
                          h->nesterov, t->first, w, t->slot1 + a);
        else
            SFX(sgd)(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, w);
        break;
    case FC_OPTIM_ADAGRAD:
        SFX(adagrad)(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps, w,
                      t->slot1 + a);
        break;
    case FC_OPTIM_RMSPROP:
        if (h->momentum != 0.0)
            SFX(rmsprop)(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps,
                          s->alpha, s->oma, 1, s->mom, w, t->slot1 + a,
                          t->slot2 + a);
        else
            SFX(rmsprop)(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps,
                          s->alpha, s->oma, 0, s->mom, w, t->slot1 + a, NULL);
        break;
    case FC_OPTIM_ADAM:
        SFX(adam)(n, g, s->wd, s->l1, wd_on, l1_on, s->eps, s->b1, s->omb1, s->b2,
                   s->omb2, (REAL)t->bias_correction2, (REAL)t->step_size, w,
                   t->slot1 + a, t->slot2 + a);
        break;
    default:
        break;
    }
}

int SFX(fc_optim_step)(const fc_optim_hyper *h, const SFX(fc_optim_tensor) *t,
                        ptrdiff_t ntensors, int nthreads)
{
    ptrdiff_t total = 0;
    for (ptrdiff_t k = 0; k < ntensors; ++k) total += t[k].n;
    if (total == 0) return FC_OK;
    SFX(opt_sc) s;
    SFX(opt_scalars)(h, &s);
    nthreads = fc_threads_for(nthreads, (double)total * FC_OPT_WORK_PER_ELEM);
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        fc_team_arrive(&tm);
        const ptrdiff_t nth = FC_NUM_THREADS(), tid = FC_THREAD_ID();
        const ptrdiff_t lo = opt_bound(total, nth, tid);
        const ptrdiff_t hi = opt_bound(total, nth, tid + 1);
        ptrdiff_t off = 0;
        for (ptrdiff_t k = 0; k < ntensors && off < hi; off += t[k].n, ++k) {
            const ptrdiff_t a = FC_MAX(lo, off), b = FC_MIN(hi, off + t[k].n);
            if (a >= b) continue;
            SFX(range)(h, &s, &t[k], a - off, b - a);
        }
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return FC_OK;
}
