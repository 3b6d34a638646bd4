/* fc_eltwise.c - element-wise ReLU passes that conv layers fuse around the kernels.
 * Written as `v <= 0 ? 0 : v` so that NaN passes through, as in NumPy's maximum and
 * PyTorch's relu / threshold_backward. The loops live in small functions with
 * restrict pointers so the compiler turns the select into a vector compare and
 * blend: a branch on the sign of random data mispredicts half the time (the
 * branchy version was 14% of a LeNet training step). */
#include "fc_internal.h"

#define FC_ELT_CHUNK 65536 /* elements per task: large enough to amortise the fork */

#define FC_DEF_RELU(REAL, SFX)                                                          \
    FC_CLONES static void relu_fwd_run_##SFX(const REAL *FC_RESTRICT x, ptrdiff_t n,              \
                                   REAL *FC_RESTRICT y)                                 \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) { const REAL v = x[i]; y[i] = v <= 0 ? (REAL)0 : v; }            \
    }                                                                                   \
    FC_CLONES static void relu_fwd_inplace_##SFX(REAL *y, ptrdiff_t n)                            \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) { const REAL v = y[i]; y[i] = v <= 0 ? (REAL)0 : v; }            \
    }                                                                                   \
    FC_CLONES static void relu_bwd_run_##SFX(const REAL *FC_RESTRICT gy, const REAL *FC_RESTRICT y, \
                                   ptrdiff_t n, REAL *FC_RESTRICT gx)                   \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                   \
            const REAL v = y[i], g = gy[i]; /* both loads unconditional: a blend */ \
            gx[i] = v <= 0 ? (REAL)0 : g;                                               \
        }          \
    }                                                                                   \
    FC_CLONES static void relu_bwd_inplace_##SFX(REAL *g, const REAL *FC_RESTRICT y, ptrdiff_t n) \
    {                                                                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                   \
            const REAL v = y[i], gg = g[i];                                             \
            g[i] = v <= 0 ? (REAL)0 : gg;                                               \
        }            \
    }                                                                                   \
    int fc_relu_fwd_##SFX(const REAL *x, ptrdiff_t n, int nthreads, REAL *y)          \
    {                                                                                   \
        nthreads = fc_threads_for(nthreads, (double)n);                                 \
        const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);                           \
        ptrdiff_t t;                                                                    \
        fc_team tm;                                                                     \
        fc_team_begin(&tm, nthreads);                                                   \
        _Pragma("omp parallel num_threads(nthreads) if (nthreads > 1 && nchunk > 1)")   \
        {                                                                               \
        fc_team_arrive(&tm);                                                            \
        _Pragma("omp for schedule(static) nowait")                                      \
        for (t = 0; t < nchunk; ++t) {                                                  \
            const ptrdiff_t a = t * FC_ELT_CHUNK, len = FC_MIN(n - a, FC_ELT_CHUNK);    \
            if (x == y) relu_fwd_inplace_##SFX(y + a, len);                             \
            else relu_fwd_run_##SFX(x + a, len, y + a);                                 \
        }                                                                               \
        fc_team_done(&tm);                                                              \
        }                                                                               \
        fc_team_end(&tm);                                                               \
        return FC_OK;                                                                   \
    }                                                                                   \
    int fc_relu_bwd_##SFX(const REAL *gy, const REAL *y, ptrdiff_t n, int nthreads,     \
                          REAL *gx)                                                     \
    {                                                                                   \
        nthreads = fc_threads_for(nthreads, (double)n);                                 \
        const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);                           \
        ptrdiff_t t;                                                                    \
        fc_team tm;                                                                     \
        fc_team_begin(&tm, nthreads);                                                   \
        _Pragma("omp parallel num_threads(nthreads) if (nthreads > 1 && nchunk > 1)")   \
        {                                                                               \
        fc_team_arrive(&tm);                                                            \
        _Pragma("omp for schedule(static) nowait")                                      \
        for (t = 0; t < nchunk; ++t) {                                                  \
            const ptrdiff_t a = t * FC_ELT_CHUNK, len = FC_MIN(n - a, FC_ELT_CHUNK);    \
            if (gx == gy) relu_bwd_inplace_##SFX(gx + a, y + a, len);                   \
            else relu_bwd_run_##SFX(gy + a, y + a, len, gx + a);                        \
        }                                                                               \
        fc_team_done(&tm);                                                              \
        }                                                                               \
        fc_team_end(&tm);                                                               \
        return FC_OK;                                                                   \
    }

FC_DEF_RELU(float, f32)
FC_DEF_RELU(double, f64)
