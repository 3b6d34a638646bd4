/*
 * fc_eltwise_impl.h - element-wise ReLU passes (forward and gradient).
 * A template (see fc_instantiate.h), instantiated by fc_eltwise.c.
 */
FC_SIMD_PROC(SFX(relu_fwd_run), (const REAL *FC_RESTRICT x, ptrdiff_t n, REAL *FC_RESTRICT y),
             (x, n, y))
{
    for (ptrdiff_t i = 0; i < n; ++i) { const REAL v = x[i]; y[i] = v <= 0 ? (REAL)0 : v; }
}
FC_SIMD_PROC(SFX(relu_fwd_inplace), (REAL *y, ptrdiff_t n),
             (y, n))
{
    for (ptrdiff_t i = 0; i < n; ++i) { const REAL v = y[i]; y[i] = v <= 0 ? (REAL)0 : v; }
}
FC_SIMD_PROC(SFX(relu_bwd_run), (const REAL *FC_RESTRICT gy, const REAL *FC_RESTRICT y,
                                 ptrdiff_t n, REAL *FC_RESTRICT gx),
             (gy, y, n, gx))
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const REAL v = y[i], g = gy[i]; /* both loads unconditional: a blend */
        gx[i] = v <= 0 ? (REAL)0 : g;
    }
}
FC_SIMD_PROC(SFX(relu_bwd_inplace), (REAL *g, const REAL *FC_RESTRICT y, ptrdiff_t n),
             (g, y, n))
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const REAL v = y[i], gg = g[i];
        g[i] = v <= 0 ? (REAL)0 : gg;
    }
}
int SFX(fc_relu_fwd)(const REAL *x, ptrdiff_t n, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, (double)n);
    const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1 && nchunk > 1)
    {
    fc_team_arrive(&tm);
    #pragma omp for schedule(static) nowait
    for (t = 0; t < nchunk; ++t) {
        const ptrdiff_t a = t * FC_ELT_CHUNK, len = FC_MIN(n - a, FC_ELT_CHUNK);
        if (x == y) SFX(relu_fwd_inplace)(y + a, len);
        else SFX(relu_fwd_run)(x + a, len, y + a);
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return FC_OK;
}
int SFX(fc_relu_bwd)(const REAL *gy, const REAL *y, ptrdiff_t n, int nthreads,
                      REAL *gx)
{
    nthreads = fc_threads_for(nthreads, (double)n);
    const ptrdiff_t nchunk = FC_CEILDIV(n, FC_ELT_CHUNK);
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1 && nchunk > 1)
    {
    fc_team_arrive(&tm);
    #pragma omp for schedule(static) nowait
    for (t = 0; t < nchunk; ++t) {
        const ptrdiff_t a = t * FC_ELT_CHUNK, len = FC_MIN(n - a, FC_ELT_CHUNK);
        if (gx == gy) SFX(relu_bwd_inplace)(gx + a, y + a, len);
        else SFX(relu_bwd_run)(gy + a, y + a, len, gx + a);
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return FC_OK;
}
