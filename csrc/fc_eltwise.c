/* fc_eltwise.c - element-wise ReLU passes that conv layers fuse around the kernels.
 * Written as `v <= 0 ? 0 : v` so that NaN passes through, as in NumPy's maximum and
 * PyTorch's relu / threshold_backward. */
#include "fc_internal.h"

#define FC_ELT_CHUNK 65536 /* elements per task: large enough to amortise the fork */

#define FC_DEF_RELU(REAL, SFX)                                                          \
    int fc_relu_fwd_##SFX(const REAL *x, ptrdiff_t n, int nthreads, REAL *y)          \
    {                                                                                   \
        nthreads = fc_threads_for(nthreads, (double)n);                                                \
        const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);                           \
        ptrdiff_t t;                                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && nchunk > 1)") \
        for (t = 0; t < nchunk; ++t) {                                                  \
            const ptrdiff_t a = t * FC_ELT_CHUNK, b = FC_MIN(n, a + FC_ELT_CHUNK);      \
            for (ptrdiff_t i = a; i < b; ++i) y[i] = x[i] <= 0 ? (REAL)0 : x[i];         \
        }                                                                               \
        return FC_OK;                                                                   \
    }                                                                                   \
    int fc_relu_bwd_##SFX(const REAL *gy, const REAL *y, ptrdiff_t n, int nthreads,     \
                          REAL *gx)                                                     \
    {                                                                                   \
        nthreads = fc_threads_for(nthreads, (double)n);                                                \
        const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);                           \
        ptrdiff_t t;                                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && nchunk > 1)") \
        for (t = 0; t < nchunk; ++t) {                                                  \
            const ptrdiff_t a = t * FC_ELT_CHUNK, b = FC_MIN(n, a + FC_ELT_CHUNK);      \
            for (ptrdiff_t i = a; i < b; ++i) gx[i] = y[i] <= 0 ? (REAL)0 : gy[i];       \
        }                                                                               \
        return FC_OK;                                                                   \
    }

FC_DEF_RELU(float, f32)
FC_DEF_RELU(double, f64)
