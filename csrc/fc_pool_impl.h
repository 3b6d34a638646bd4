/*
 * fc_pool_impl.h - max and average pooling, written once for both dtypes.
 * Included by fc_pool.c with REAL and SFX(name) set.
 *
 * Each (n, c) plane is one task; a plane's gradient is accumulated serially in
 * a fixed order, so results do not depend on the thread count.
 * Semantics follow torch.nn.functional: max pooling pads with -inf, the first
 * maximum in raster order wins, a NaN wins over numbers (the last NaN, as in
 * PyTorch); average pooling divides by the window clipped to the padded input
 * (count_include_pad) or to the real input.
 */

/* window rows [*lo, *hi) of output row o, clipped to the input; returns padded size */
static inline ptrdiff_t SFX(win)(ptrdiff_t o, ptrdiff_t s, ptrdiff_t p, ptrdiff_t k,
                                 ptrdiff_t n, ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = o * s - p, b = FC_MIN(a + k, n + p);
    ptrdiff_t padded = b - a;
    *lo = FC_MAX(a, (ptrdiff_t)0);
    *hi = FC_MIN(b, n);
    return padded;
}

/* One output row of 2x2/2 max pooling; restrict and local sizes let it vectorise. */
static void SFX(max2x2_row)(const REAL *FC_RESTRICT r0, ptrdiff_t w, ptrdiff_t wo, int64_t base,
                            REAL *FC_RESTRICT y, int64_t *FC_RESTRICT idx)
{
    const REAL *FC_RESTRICT r1 = r0 + w;
    for (ptrdiff_t ow = SFX(max2x2_simd)(r0, w, wo, base, y, idx); ow < wo; ++ow) {
        const REAL v0 = r0[2 * ow], v1 = r0[2 * ow + 1];
        const REAL v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
        REAL best = v0;
        int64_t off = 0;
        int take = (v1 > best) | (v1 != v1);
        best = take ? v1 : best;
        off = take ? 1 : off;
        take = (v2 > best) | (v2 != v2);
        best = take ? v2 : best;
        off = take ? (int64_t)w : off;
        take = (v3 > best) | (v3 != v3);
        best = take ? v3 : best;
        off = take ? (int64_t)w + 1 : off;
        y[ow] = best;
        if (idx) idx[ow] = base + 2 * ow + off;
    }
}

int SFX(fc_maxpool2d_fwd)(const REAL *x, const fc_pool_geom *g, int nthreads, REAL *y,
                          int64_t *idx)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->c * (g->h * g->w + g->ho * g->wo * g->kh * g->kw));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    ptrdiff_t t;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (t = 0; t < planes; ++t) {
        const REAL *xp = x + t * hw;
        REAL *yp = y + t * ohw;
        int64_t *ip = idx ? idx + t * ohw : NULL;
        if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0) {
            /*
             * The common LeNet case: four candidates in raster order, no clipping.
             * Written as selects, not branches: on real data the winner is
             * unpredictable and mispredictions cost more than the arithmetic.
             * Starting from the first candidate equals starting from -inf.
             */
            for (ptrdiff_t oh = 0; oh < g->ho; ++oh)
                SFX(max2x2_row)(xp + 2 * oh * g->w, g->w, g->wo, (int64_t)(2 * oh * g->w),
                                yp + oh * g->wo, ip ? ip + oh * g->wo : NULL);
            continue;
        }
        for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
            ptrdiff_t h0, h1;
            SFX(win)(oh, g->sh, g->ph, g->kh, g->h, &h0, &h1);
            for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
                ptrdiff_t w0, w1;
                SFX(win)(ow, g->sw, g->pw, g->kw, g->w, &w0, &w1);
                REAL best = -(REAL)INFINITY;
                ptrdiff_t bi = h0 * g->w + w0;
                for (ptrdiff_t ih = h0; ih < h1; ++ih)
                    for (ptrdiff_t iw = w0; iw < w1; ++iw) {
                        REAL v = xp[ih * g->w + iw];
                        if (v > best || v != v) { best = v; bi = ih * g->w + iw; }
                    }
                yp[oh * g->wo + ow] = best;
                if (ip) ip[oh * g->wo + ow] = (int64_t)bi;
            }
        }
    }
    return FC_OK;
}

int SFX(fc_maxpool2d_bwd)(const REAL *gy, const int64_t *idx, const fc_pool_geom *g,
                          int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->c * (g->h * g->w + g->ho * g->wo * g->kh * g->kw));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    int bad = 0;
    ptrdiff_t t;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1) \
    reduction(| : bad)
    for (t = 0; t < planes; ++t) {
        REAL *gp = gx + t * hw;
        const REAL *yp = gy + t * ohw;
        const int64_t *ip = idx + t * ohw;
        memset(gp, 0, sizeof(REAL) * (size_t)hw);
        for (ptrdiff_t o = 0; o < ohw; ++o) {
            int64_t i = ip[o];
            if (i < 0 || i >= (int64_t)hw) { bad |= 1; continue; }
            gp[i] += yp[o];
        }
    }
    return bad ? FC_EINDEX : FC_OK;
}

int SFX(fc_avgpool2d_fwd)(const REAL *x, const fc_pool_geom *g, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->c * (g->h * g->w + g->ho * g->wo * g->kh * g->kw));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    ptrdiff_t t;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (t = 0; t < planes; ++t) {
        const REAL *xp = x + t * hw;
        REAL *yp = y + t * ohw;
        if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0) {
            for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
                const REAL *r0 = xp + 2 * oh * g->w, *r1 = r0 + g->w;
                for (ptrdiff_t ow = 0; ow < g->wo; ++ow)
                    yp[oh * g->wo + ow] =
                        (((r0[2 * ow] + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) / (REAL)4;
            }
            continue;
        }
        for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
            ptrdiff_t h0, h1;
            ptrdiff_t ph = SFX(win)(oh, g->sh, g->ph, g->kh, g->h, &h0, &h1);
            for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
                ptrdiff_t w0, w1;
                ptrdiff_t pw = SFX(win)(ow, g->sw, g->pw, g->kw, g->w, &w0, &w1);
                REAL s = 0;
                for (ptrdiff_t ih = h0; ih < h1; ++ih)
                    for (ptrdiff_t iw = w0; iw < w1; ++iw) s += xp[ih * g->w + iw];
                ptrdiff_t div = g->count_include_pad ? ph * pw : (h1 - h0) * (w1 - w0);
                yp[oh * g->wo + ow] = s / (REAL)div;
            }
        }
    }
    return FC_OK;
}

int SFX(fc_avgpool2d_bwd)(const REAL *gy, const fc_pool_geom *g, int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, (double)g->n * g->c * (g->h * g->w + g->ho * g->wo * g->kh * g->kw));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    ptrdiff_t t;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (t = 0; t < planes; ++t) {
        REAL *gp = gx + t * hw;
        const REAL *yp = gy + t * ohw;
        if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0) {
            /* windows tile the input: write every element once, no scatter */
            for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
                REAL *r0 = gp + 2 * oh * g->w, *r1 = r0 + g->w;
                for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
                    const REAL v = yp[oh * g->wo + ow] / (REAL)4;
                    r0[2 * ow] = v; r0[2 * ow + 1] = v; r1[2 * ow] = v; r1[2 * ow + 1] = v;
                }
                for (ptrdiff_t x = 2 * g->wo; x < g->w; ++x) r0[x] = r1[x] = 0;
            }
            for (ptrdiff_t y = 2 * g->ho; y < g->h; ++y)
                memset(gp + y * g->w, 0, sizeof(REAL) * (size_t)g->w);
            continue;
        }
        memset(gp, 0, sizeof(REAL) * (size_t)hw);
        for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
            ptrdiff_t h0, h1;
            ptrdiff_t ph = SFX(win)(oh, g->sh, g->ph, g->kh, g->h, &h0, &h1);
            for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
                ptrdiff_t w0, w1;
                ptrdiff_t pw = SFX(win)(ow, g->sw, g->pw, g->kw, g->w, &w0, &w1);
                ptrdiff_t div = g->count_include_pad ? ph * pw : (h1 - h0) * (w1 - w0);
                const REAL v = yp[oh * g->wo + ow] / (REAL)div;
                for (ptrdiff_t ih = h0; ih < h1; ++ih)
                    for (ptrdiff_t iw = w0; iw < w1; ++iw) gp[ih * g->w + iw] += v;
            }
        }
    }
    return FC_OK;
}
