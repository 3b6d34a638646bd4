/*
 * fc_optim.c - fused optimiser updates (SGD, Adagrad, RMSprop, Adam) for
 * fastconv.optim.
 *
 * Each kernel does in one pass over the parameter what fastconv/optim/'s NumPy
 * path does in a chain of whole-array calls (L1/L2 penalty, slot update, step),
 * and gives bitwise the same numbers. That holds because every operation here is
 * the same IEEE operation, on the same operands, in the same order, rounded to
 * the parameter's dtype after each step exactly as NumPy rounds each ufunc
 * result:
 *   - Python floats reach NumPy as "weak" scalars (NEP 50) and are rounded to the
 *     array dtype before the ufunc runs; here (REAL)double does the same rounding.
 *     Scalars that fastconv.optim computes in Python (1 - beta, lr / (1 - b1**t),
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

#define FC_OPT_ALIGN 16 /* thread range boundaries: 64 bytes of float32 */
/* Rough single-thread cost of one element in units of fc_threads_for's "work"
 * (about 1e4 per microsecond): below ~30k elements one thread is faster. */
#define FC_OPT_WORK_PER_ELEM 8.0

/*
 * The penalised gradient of optim.Optimizer._regularized_grad:
 *   g = w * wd; g += grad          (when wd_on)
 *   tmp = sign(w) * l1; g += tmp   (when l1_on)
 */
#define FC_OPT_GRAD                                                               \
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

static inline float opt_sqrt_f32(float v) { return sqrtf(v); }
static inline double opt_sqrt_f64(double v) { return sqrt(v); }

#define FC_TEMPLATE "fc_optim_impl.h"
#include "fc_instantiate.h"
