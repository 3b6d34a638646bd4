/*
 * fc_optim.c - fused optimiser updates (SGD, Adagrad, RMSprop, Adam) for
 * fastconv.optim.
 *
 * Each kernel does in one pass over the parameter what fastconv/optim.py's NumPy
 * path does in a chain of whole-array calls (L1/L2 penalty, slot update, step),
 * and gives bitwise the same numbers. That holds because every operation here is
 * the same IEEE operation, on the same operands, in the same order, rounded to
 * the parameter's dtype after each step exactly as NumPy rounds each ufunc
 * result:
 *   - Python floats reach NumPy as "weak" scalars (NEP 50) and are rounded to the
 *     array dtype before the ufunc runs; here (REAL)double does the same rounding.
 *     Scalars that optim.py computes in Python (1 - beta, lr / (1 - b1**t),
 *     sqrt(1 - b2**t)) are computed the same way in double, or handed over from
 *     Python, before that rounding.
 *   - No contraction of a*b+c into an FMA: GCC does not contract under -std=c11
 *     (the build's dialect), and the pragmas below keep it off under other
 *     flags (GCC) and in clang. Each operation is also its own statement, which
 *     an -ffp-contract=on compiler never fuses across.
 *   - sqrt and division are correctly rounded in IEEE arithmetic, as in NumPy.
 *   - sign(w) follows numpy.sign: +1, -1, 0 for +-0, and NaN for NaN.
 * The one thing not reproduced is which payload a NaN carries when two NaN
 * operands meet (the compiler may swap the operands of a commutative operation).
 *
 * Loop-invariant options (penalties on or off, nesterov, SGD's first step) are
 * selects rather than separate loops: the vectoriser turns them into blends, and
 * the loops are bound by memory traffic (SGD) or by the divide and square-root
 * units (Adam in float32: two divisions and one square root per element).
 *
 * Parallelism: the parameters of one call are treated as one concatenated
 * vector, cut into one contiguous range per thread (boundaries rounded down to
 * multiples of 16 elements). The update is
 * element-wise, so the result does not depend on the partition or thread count.
 * The SIMD width follows the one SIMD level (fc_simd_dispatch: the start-up
 * cap and set_simd_level apply); the results are the same at every level.
 */
#include <math.h>

#include "fc_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
/* The build's -std=c11 already means no contraction; this keeps it so when
 * CFLAGS add -ffp-contract=fast or a GNU dialect (with -march=native it would
 * otherwise fuse a*b+c into FMAs and break bitwise equality with NumPy). */
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__)
#define FC_OPT_INLINE static inline __attribute__((always_inline))
#else
#define FC_OPT_INLINE static inline
#endif

#define FC_OPT_ALIGN 16 /* thread range boundaries: 64 bytes of float32 */
/* Rough single-thread cost of one element in units of fc_threads_for's "work"
 * (about 1e4 per microsecond): below ~30k elements one thread is faster. */
#define FC_OPT_WORK_PER_ELEM 8.0

/* Hyper-parameters rounded to the dtype once per call, as NumPy rounds a weak
 * Python scalar operand. */
#define FC_OPT_DEF_SCALARS(REAL, SFX)                                                   \
    typedef struct {                                                                    \
        REAL lr, wd, l1, mom, eps, alpha, oma, b1, omb1, b2, omb2;                      \
    } opt_sc_##SFX;                                                                     \
    static void opt_scalars_##SFX(const fc_optim_hyper *h, opt_sc_##SFX *s)             \
    {                                                                                   \
        s->lr = (REAL)h->lr;                                                            \
        s->wd = (REAL)h->weight_decay;                                                  \
        s->l1 = (REAL)h->l1;                                                            \
        s->mom = (REAL)h->momentum;                                                     \
        s->eps = (REAL)h->eps;                                                          \
        s->alpha = (REAL)h->alpha;                                                      \
        s->oma = (REAL)(1.0 - h->alpha);                                                \
        s->b1 = (REAL)h->beta1;                                                         \
        s->omb1 = (REAL)(1.0 - h->beta1);                                               \
        s->b2 = (REAL)h->beta2;                                                         \
        s->omb2 = (REAL)(1.0 - h->beta2);                                               \
    }

/*
 * The penalised gradient of optim.Optimizer._regularized_grad:
 *   g = w * wd; g += grad          (when wd_on)
 *   tmp = sign(w) * l1; g += tmp   (when l1_on)
 */
#define FC_OPT_GRAD(REAL)                                                               \
    const REAL wi = w[i];                                                               \
    REAL gi = g[i];                                                                     \
    {                                                                                   \
        const REAL t = wi * wd;                                                         \
        const REAL gw = t + gi;                                                         \
        gi = wd_on ? gw : gi;                                                           \
        const REAL sg = wi > 0 ? (REAL)1 : wi < 0 ? (REAL)-1 : wi == 0 ? (REAL)0 : wi;  \
        const REAL s = sg * l1;                                                         \
        const REAL gl = gi + s;                                                         \
        gi = l1_on ? gl : gi;                                                           \
    }

#define FC_OPT_DEF_LOOPS(REAL, SFX, SQRT)                                               \
    /* SGD, momentum 0:  tmp = g * lr; w -= tmp */                                      \
    FC_OPT_INLINE void sgd_##SFX(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,       \
                                 REAL l1, int wd_on, int l1_on, REAL lr,                \
                                 REAL *FC_RESTRICT w)                                   \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                             \
            FC_OPT_GRAD(REAL)                                                           \
            const REAL t = gi * lr;                                                     \
            w[i] = wi - t;                                                              \
        }                                                                               \
    }                                                                                   \
    /* SGD with momentum: buf = g (first step) or buf = buf * mom + g;                  \
     * d = buf * mom + g (nesterov) or buf; w -= d * lr */                              \
    FC_OPT_INLINE void sgd_mom_##SFX(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,   \
                                     REAL l1, int wd_on, int l1_on, REAL lr, REAL mom,  \
                                     int nesterov, int first, REAL *FC_RESTRICT w,      \
                                     REAL *FC_RESTRICT buf)                             \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                             \
            FC_OPT_GRAD(REAL)                                                           \
            const REAL bm = buf[i] * mom;                                               \
            const REAL bs = bm + gi;                                                    \
            const REAL b = first ? gi : bs;                                             \
            buf[i] = b;                                                                 \
            const REAL dm = b * mom;                                                    \
            const REAL dn = dm + gi;                                                    \
            const REAL d = nesterov ? dn : b;                                           \
            const REAL t = d * lr;                                                      \
            w[i] = wi - t;                                                              \
        }                                                                               \
    }                                                                                   \
    /* Adagrad: tmp = g*g; acc += tmp; tmp = sqrt(acc) + eps; tmp = g / tmp * lr */     \
    FC_OPT_INLINE void adagrad_##SFX(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,   \
                                     REAL l1, int wd_on, int l1_on, REAL lr, REAL eps,  \
                                     REAL *FC_RESTRICT w, REAL *FC_RESTRICT acc)        \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                             \
            FC_OPT_GRAD(REAL)                                                           \
            const REAL g2 = gi * gi;                                                    \
            const REAL a = acc[i] + g2;                                                 \
            acc[i] = a;                                                                 \
            const REAL r = SQRT(a);                                                     \
            const REAL den = r + eps;                                                   \
            const REAL q = gi / den;                                                    \
            const REAL t = q * lr;                                                      \
            w[i] = wi - t;                                                              \
        }                                                                               \
    }                                                                                   \
    /* RMSprop: tmp = g*g*(1-alpha); sq = sq*alpha + tmp; tmp = g / (sqrt(sq) + eps);   \
     * with momentum buf = buf*mom + tmp, tmp = buf; w -= tmp * lr */                   \
    FC_OPT_INLINE void rmsprop_##SFX(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,   \
                                     REAL l1, int wd_on, int l1_on, REAL lr, REAL eps,  \
                                     REAL alpha, REAL oma, int use_mom, REAL mom,       \
                                     REAL *FC_RESTRICT w, REAL *FC_RESTRICT sq,         \
                                     REAL *FC_RESTRICT buf)                             \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                             \
            FC_OPT_GRAD(REAL)                                                           \
            const REAL g2 = gi * gi;                                                    \
            const REAL g2a = g2 * oma;                                                  \
            const REAL sa = sq[i] * alpha;                                              \
            const REAL s = sa + g2a;                                                    \
            sq[i] = s;                                                                  \
            const REAL r = SQRT(s);                                                     \
            const REAL den = r + eps;                                                   \
            REAL q = gi / den;                                                          \
            if (use_mom) { /* constant at every call site: two loops */                 \
                const REAL bm = buf[i] * mom;                                           \
                q = bm + q;                                                             \
                buf[i] = q;                                                             \
            }                                                                           \
            const REAL t = q * lr;                                                      \
            w[i] = wi - t;                                                              \
        }                                                                               \
    }                                                                                   \
    /* Adam: m = m*b1 + g*(1-b1); v = v*b2 + g*g*(1-b2);                                \
     * tmp = sqrt(v) / c2 + eps; w -= m / tmp * step_size */                            \
    FC_OPT_INLINE void adam_##SFX(ptrdiff_t n, const REAL *FC_RESTRICT g, REAL wd,      \
                                  REAL l1, int wd_on, int l1_on, REAL eps, REAL b1,     \
                                  REAL omb1, REAL b2, REAL omb2, REAL c2,               \
                                  REAL step_size, REAL *FC_RESTRICT w,                  \
                                  REAL *FC_RESTRICT m, REAL *FC_RESTRICT v)             \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                             \
            FC_OPT_GRAD(REAL)                                                           \
            const REAL mb = m[i] * b1;                                                  \
            const REAL gb = gi * omb1;                                                  \
            const REAL mi = mb + gb;                                                    \
            m[i] = mi;                                                                  \
            const REAL g2 = gi * gi;                                                    \
            const REAL g2b = g2 * omb2;                                                 \
            const REAL vb = v[i] * b2;                                                  \
            const REAL vi = vb + g2b;                                                   \
            v[i] = vi;                                                                  \
            const REAL r = SQRT(vi);                                                    \
            const REAL rc = r / c2;                                                     \
            const REAL den = rc + eps;                                                  \
            const REAL q = mi / den;                                                    \
            const REAL t = q * step_size;                                               \
            w[i] = wi - t;                                                              \
        }                                                                               \
    }

/* One range [a, a + n) of one tensor, at one SIMD level. */
#define FC_OPT_DEF_RANGE(REAL, SFX, LV, TGT)                                            \
    TGT static void range_##SFX##_##LV(const fc_optim_hyper *h, const opt_sc_##SFX *s,  \
                                       const fc_optim_tensor_##SFX *t, ptrdiff_t a,     \
                                       ptrdiff_t n)                                     \
    {                                                                                   \
        const REAL *g = t->grad + a;                                                    \
        REAL *w = t->w + a;                                                             \
        const int wd_on = t->regularize && h->weight_decay != 0.0;                      \
        const int l1_on = t->regularize && h->l1 != 0.0;                                \
        switch (h->kind) {                                                              \
        case FC_OPTIM_SGD:                                                              \
            if (h->momentum != 0.0)                                                     \
                sgd_mom_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->mom,          \
                              h->nesterov, t->first, w, t->slot1 + a);                  \
            else                                                                        \
                sgd_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, w);                  \
            break;                                                                      \
        case FC_OPTIM_ADAGRAD:                                                          \
            adagrad_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps, w,           \
                          t->slot1 + a);                                                \
            break;                                                                      \
        case FC_OPTIM_RMSPROP:                                                          \
            if (h->momentum != 0.0)                                                     \
                rmsprop_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps,          \
                              s->alpha, s->oma, 1, s->mom, w, t->slot1 + a,             \
                              t->slot2 + a);                                            \
            else                                                                        \
                rmsprop_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->lr, s->eps,          \
                              s->alpha, s->oma, 0, s->mom, w, t->slot1 + a, NULL);      \
            break;                                                                      \
        case FC_OPTIM_ADAM:                                                             \
            adam_##SFX(n, g, s->wd, s->l1, wd_on, l1_on, s->eps, s->b1, s->omb1, s->b2, \
                       s->omb2, (REAL)t->bias_correction2, (REAL)t->step_size, w,       \
                       t->slot1 + a, t->slot2 + a);                                     \
            break;                                                                      \
        default:                                                                        \
            break;                                                                      \
        }                                                                               \
    }

#define FC_OPT_DEF_STEP(REAL, SFX)                                                      \
    int fc_optim_step_##SFX(const fc_optim_hyper *h, const fc_optim_tensor_##SFX *t,    \
                            ptrdiff_t ntensors, int nthreads)                           \
    {                                                                                   \
        ptrdiff_t total = 0;                                                            \
        for (ptrdiff_t k = 0; k < ntensors; ++k) total += t[k].n;                       \
        if (total == 0) return FC_OK;                                                   \
        opt_sc_##SFX s;                                                                 \
        opt_scalars_##SFX(h, &s);                                                       \
        const int level = fc_simd_dispatch();                                              \
        nthreads = fc_threads_for(nthreads, (double)total * FC_OPT_WORK_PER_ELEM);      \
        fc_team tm;                                                                     \
        fc_team_begin(&tm, nthreads);                                                   \
        _Pragma("omp parallel num_threads(nthreads) if (nthreads > 1)")                 \
        {                                                                               \
            fc_team_arrive(&tm);                                                        \
            const ptrdiff_t nth = FC_NUM_THREADS(), tid = FC_THREAD_ID();               \
            const ptrdiff_t lo = opt_bound(total, nth, tid);                            \
            const ptrdiff_t hi = opt_bound(total, nth, tid + 1);                        \
            ptrdiff_t off = 0;                                                          \
            for (ptrdiff_t k = 0; k < ntensors && off < hi; off += t[k].n, ++k) {       \
                const ptrdiff_t a = FC_MAX(lo, off), b = FC_MIN(hi, off + t[k].n);      \
                if (a >= b) continue;                                                   \
                if (level == FC_SIMD_AVX512)                                            \
                    range_##SFX##_avx512(h, &s, &t[k], a - off, b - a);                 \
                else if (level == FC_SIMD_AVX2)                                         \
                    range_##SFX##_avx2(h, &s, &t[k], a - off, b - a);                   \
                else                                                                    \
                    range_##SFX##_gen(h, &s, &t[k], a - off, b - a);                    \
                fc_simd_ran(level);                                                     \
            }                                                                           \
            fc_team_done(&tm);                                                          \
        }                                                                               \
        fc_team_end(&tm);                                                               \
        return FC_OK;                                                                   \
    }

#if FC_HAVE_OPENMP
#define FC_NUM_THREADS() omp_get_num_threads()
#else
#define FC_NUM_THREADS() 1
#endif

/* Start of thread tid's range out of nth over total elements. */
static ptrdiff_t opt_bound(ptrdiff_t total, ptrdiff_t nth, ptrdiff_t tid)
{
    if (tid >= nth) return total;
    const ptrdiff_t b = (ptrdiff_t)((double)total * (double)tid / (double)nth);
    return FC_MIN(total, b / FC_OPT_ALIGN * FC_OPT_ALIGN);
}

#if FC_X86_SIMD
/* No "fma" in these targets: nothing here is to be contracted. */
#define FC_OPT_TGT_AVX2 __attribute__((target("avx2")))
#define FC_OPT_TGT_AVX512 __attribute__((target("avx512f,avx2")))
#else
#define FC_OPT_TGT_AVX2
#define FC_OPT_TGT_AVX512
#endif

FC_OPT_DEF_SCALARS(float, f32)
FC_OPT_DEF_SCALARS(double, f64)
FC_OPT_DEF_LOOPS(float, f32, sqrtf)
FC_OPT_DEF_LOOPS(double, f64, sqrt)
FC_OPT_DEF_RANGE(float, f32, gen, )
FC_OPT_DEF_RANGE(double, f64, gen, )
FC_OPT_DEF_RANGE(float, f32, avx2, FC_OPT_TGT_AVX2)
FC_OPT_DEF_RANGE(double, f64, avx2, FC_OPT_TGT_AVX2)
FC_OPT_DEF_RANGE(float, f32, avx512, FC_OPT_TGT_AVX512)
FC_OPT_DEF_RANGE(double, f64, avx512, FC_OPT_TGT_AVX512)
FC_OPT_DEF_STEP(float, f32)
FC_OPT_DEF_STEP(double, f64)
