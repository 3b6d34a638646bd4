/*
 * fc_linear_impl.h - the dense layer's extra passes: column sums (bias gradient)
 * and the whole backward in one parallel region. A template (see
 * fc_instantiate.h), instantiated by fc_gemm.c after fc_gemm_impl.h, whose
 * static planner and runner it calls.
 */
/* Columns [jb * 256, +256) of the column sums: each summed top to bottom. */
static void SFX(colsum_block)(const REAL *a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t lda,
                              int accumulate, ptrdiff_t jb, REAL *out)
{
    const ptrdiff_t j0 = jb * 256, j1 = FC_MIN(n, j0 + 256);
    REAL s[256];
    for (ptrdiff_t j = j0; j < j1; ++j) s[j - j0] = 0;
    for (ptrdiff_t i = 0; i < m; ++i) {
        const REAL *r = a + i * lda;
        for (ptrdiff_t j = j0; j < j1; ++j) s[j - j0] += r[j];
    }
    for (ptrdiff_t j = j0; j < j1; ++j) out[j] = accumulate ? out[j] + s[j - j0] : s[j - j0];
}

int SFX(fc_colsum)(const REAL *a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t lda, int accumulate,
                   int nthreads, REAL *out)
{
    const ptrdiff_t nb = FC_CEILDIV(n, 256);
    nthreads = fc_threads_for(nthreads, (double)m * (double)n);
    ptrdiff_t jb;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && nb > 1)
    {
    fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
    for (jb = 0; jb < nb; ++jb) SFX(colsum_block)(a, m, n, lda, accumulate, jb, out);
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return FC_OK;
}

int SFX(fc_linear_bwd)(const REAL *gy, const REAL *x, const REAL *w, ptrdiff_t n,
                       ptrdiff_t in, ptrdiff_t out, int accumulate, int nthreads, REAL *gx,
                       REAL *gw, REAL *gb)
{
    int rc = FC_OK;
    if (n <= 0 || in <= 0 || out <= 0) { /* degenerate: the general entry points cope */
        if (gx && (rc = SFX(fc_gemm)(0, 0, n, in, out, gy, out, w, in, NULL, FC_BIAS_NONE, 0,
                                     nthreads, gx, in)) != FC_OK)
            return rc;
        if (gw && (rc = SFX(fc_gemm)(1, 0, out, in, n, gy, out, x, in, NULL, FC_BIAS_NONE,
                                     accumulate, nthreads, gw, in)) != FC_OK)
            return rc;
        if (gb && n > 0) rc = SFX(fc_colsum)(gy, n, out, out, accumulate, nthreads, gb);
        else if (gb && !accumulate) memset(gb, 0, sizeof(REAL) * (size_t)FC_MAX(out, 0));
        return rc;
    }
    SFX(fc_gemm_plan) gd, gwp;
    ptrdiff_t *kd = NULL, *kw = NULL;
    REAL *sd = NULL, *sw = NULL;
    if (gx) rc = SFX(gemm_plan)(0, 0, n, in, out, gy, out, w, in, NULL, FC_BIAS_NONE, 0, gx,
                                in, &gd, &kd, &sd);
    if (rc == FC_OK && gw)
        rc = SFX(gemm_plan)(1, 0, out, in, n, gy, out, x, in, NULL, FC_BIAS_NONE, accumulate,
                            gw, in, &gwp, &kw, &sw);
    if (rc == FC_OK) {
        const double work = (double)n * (double)in * (double)out * ((gx != NULL) + (gw != NULL));
        nthreads = fc_threads_for(nthreads, work);
        const ptrdiff_t nb = FC_CEILDIV(out, 256);
        int failed = 0;
        /* one team for both products and the bias sums */
        fc_team tm;
        fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
            fc_team_arrive(&tm);
            if (gx) SFX(gemm_team)(&gd, &failed);
            if (gw) SFX(gemm_team)(&gwp, &failed);
            if (gb) {
                ptrdiff_t jb;
#pragma omp for schedule(static) nowait
                for (jb = 0; jb < nb; ++jb) SFX(colsum_block)(gy, n, out, out, accumulate, jb, gb);
            }
            fc_team_done(&tm);
        }
        fc_team_end(&tm);
        if (failed) rc = FC_ENOMEM;
    }
    free(kd);
    free(kw);
    fc_free(sd);
    fc_free(sw);
    return rc;
}
