/*
 * fc_pool_impl.h - max and average pooling. A template (see fc_instantiate.h),
 * instantiated by fc_pool.c.
 *
 * Each (n, c) plane is one task; a plane's gradient is accumulated serially in
 * a fixed order, so results do not depend on the thread count.
 * Semantics follow torch.nn.functional: max pooling pads with -inf, the first
 * maximum in raster order wins, a NaN wins over numbers (the last NaN, as in
 * PyTorch); average pooling divides by the window clipped to the padded input
 * [-ph, h + ph_end) (count_include_pad) or to the real input. Padding may
 * differ per side, and a ceil-mode window may run past the bottom/right
 * padding; the Python layer makes sure every window holds an input element.
 * Tap i of a window is i*dh rows below its origin (dilation; for average pooling
 * ONNX's, PyTorch's has none).
 */

/* the LeNet case, 2x2 windows with stride 2 and no padding: they tile the input
 * (a ceil-mode window past the last row or column would not) */
static inline int SFX(is_2x2s2)(const fc_pool_geom *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 &&
           g->ph_end == 0 && g->pw_end == 0 && g->dh == 1 && g->dw == 1 &&
           2 * g->ho <= g->h && 2 * g->wo <= g->w;
}

/* rows [*lo, *hi) of the (undilated) window of output row o, clipped to the input;
 * returns its size clipped to the padded input [-p, n + p_end) */
static inline ptrdiff_t SFX(win)(ptrdiff_t o, ptrdiff_t s, ptrdiff_t p, ptrdiff_t p_end,
                                 ptrdiff_t k, ptrdiff_t n, ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = o * s - p, b = FC_MIN(a + k, n + p_end);
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

/* outputs [*lo, *hi) along one axis whose tap at offset e (tap - pad) lies inside
 * [0, n) with stride s; used for rows and for columns */
static inline void SFX(tap_cols)(ptrdiff_t e, ptrdiff_t s, ptrdiff_t n, ptrdiff_t no,
                                 ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = e < 0 ? FC_CEILDIV(-e, s) : 0;
    ptrdiff_t b = n - e > 0 ? FC_CEILDIV(n - e, s) : 0;
    *lo = a;
    *hi = FC_MIN(b, no);
    if (*hi < *lo) *hi = *lo;
}

/* the first tap index i >= 0 with i*d >= m (m may be negative) */
static inline ptrdiff_t SFX(first_tap)(ptrdiff_t m, ptrdiff_t d)
{
    return m > 0 ? FC_CEILDIV(m, d) : 0;
}

/*
 * The window taps that can land on the input: rows [*i0, *i1) and columns
 * [*j0, *j1). Tap i of output o reads row o*sh + i*dh - ph, inside [0, h) for
 * some o < ho only if ph - (ho-1)*sh <= i*dh < ph + h, so a window far wider
 * than the input (allowed with padding up to nearly all of it) costs what the
 * input does, not kh*kw. Tap (i, j) is numbered (i - i0) * (j1 - j0) + (j - j0):
 * raster order, fewer than 2**32 (functional.py checks), whatever kh*kw is.
 */
static void SFX(tap_range)(const fc_pool_geom *g, ptrdiff_t *i0, ptrdiff_t *i1, ptrdiff_t *j0,
                           ptrdiff_t *j1)
{
    *i0 = SFX(first_tap)(g->ph - (g->ho - 1) * g->sh, g->dh);
    *i1 = FC_MAX(*i0, FC_MIN(g->kh, SFX(first_tap)(g->ph + g->h, g->dh)));
    *j0 = SFX(first_tap)(g->pw - (g->wo - 1) * g->sw, g->dw);
    *j1 = FC_MAX(*j0, FC_MIN(g->kw, SFX(first_tap)(g->pw + g->w, g->dw)));
}

/* work of a pooling call for the thread-count rule, in double: with a huge
 * window ho*wo*kh*kw passes 2**63, and only the taps that land on the input
 * are visited anyway */
static double SFX(pool_work)(const fc_pool_geom *g)
{
    ptrdiff_t i0, i1, j0, j1;
    SFX(tap_range)(g, &i0, &i1, &j0, &j1);
    return (double)g->n * (double)g->c *
           ((double)g->h * (double)g->w + (double)g->ho * (double)g->wo * (double)(i1 - i0) *
                                              (double)(j1 - j0));
}

/*
 * One tap of a max window over a block of outputs: best = the tap value where it
 * wins (strictly greater, or NaN), and tid = this tap's number there. The source
 * is contiguous along a row (the caller splits strided rows into phases).
 * Selects on bit patterns with all-ones masks: GCC will not if-convert a
 * NaN-aware float select, but vectorises and/or.
 */
FC_SIMD_PROC(SFX(max_tap), (const REAL *FC_RESTRICT src, ptrdiff_t src_rs, ptrdiff_t rows,
                            ptrdiff_t n, uint32_t tap, REAL *FC_RESTRICT best,
                            uint32_t *FC_RESTRICT tid, ptrdiff_t rs),
             (src, src_rs, rows, n, tap, best, tid, rs))
{
    if (src_rs == n && rs == n) { /* contiguous rows: one long run vectorises better */
        n *= rows;
        rows = 1;
    }
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const REAL *sr = src + r * src_rs;
        const UINT *FC_RESTRICT sb = (const UINT *)sr;
        REAL *br = best + r * rs;
        UINT *FC_RESTRICT bb = (UINT *)br;
        uint32_t *FC_RESTRICT tr = tid + r * rs;
        for (ptrdiff_t o = 0; o < n; ++o) {
            const REAL v = sr[o], bv = br[o];
            const UINT m = (UINT)0 - (UINT)((v > bv) | (v != v));
            bb[o] = (sb[o] & m) | (bb[o] & ~m);
            tr[o] = (tap & (uint32_t)m) | (tr[o] & ~(uint32_t)m);
        }
    }
}

/*
 * Per-thread scratch of max_plane_generic. Shape-only tables first (set up once
 * by max_plane_setup): tid0 = the tap number each output starts from (its first
 * element inside the input, where an all -inf window points), base = the input
 * index of its window's origin, tapoff = a tap's index offset from the origin;
 * then the per-plane tap numbers and the phase-split rows.
 */
typedef struct {
    int64_t *base, *tapoff;
    uint32_t *tid0, *tid;
    REAL *ph;
} SFX(max_scratch);

/*
 * Elements of a plane's phase split (0 when there is no stride to split): under
 * (h + sh - 1) * (w + sw - 1), and functional.py passes sh <= h, sw <= w. *bad
 * is set if it does not fit a ptrdiff_t.
 */
static ptrdiff_t SFX(phase_elems)(const fc_pool_geom *g, int *bad)
{
    if (g->sh <= 1 && g->sw <= 1) return 0;
    return (ptrdiff_t)fc_size_mul(fc_size_mul(g->sh, FC_CEILDIV(g->h, g->sh), bad),
                                  fc_size_mul(g->sw, FC_CEILDIV(g->w, g->sw), bad), bad);
}

/* bytes of a max_scratch, or 0 if that does not fit a size_t (no allocation can) */
static size_t SFX(max_scratch_bytes)(const fc_pool_geom *g)
{
    ptrdiff_t i0, i1, j0, j1;
    SFX(tap_range)(g, &i0, &i1, &j0, &j1);
    int bad = 0;
    const size_t ohw = fc_size_mul(g->ho, g->wo, &bad);
    const size_t ntap = fc_size_mul(i1 - i0, j1 - j0, &bad);
    const size_t ph = fc_size_mul(SFX(phase_elems)(g, &bad), sizeof(REAL), &bad);
    const size_t idx = fc_size_mul(ohw + ntap, sizeof(int64_t), &bad);
    const size_t tid = fc_size_mul(ohw, 2 * sizeof(uint32_t), &bad);
    if (bad || idx > SIZE_MAX / 4 || tid > SIZE_MAX / 4 || ph > SIZE_MAX / 4) return 0;
    return idx + tid + ph + 64;
}

static SFX(max_scratch) SFX(max_plane_setup)(const fc_pool_geom *g, char *mem)
{
    SFX(max_scratch) sc;
    const ptrdiff_t ohw = g->ho * g->wo;
    ptrdiff_t i0, i1, j0, j1;
    SFX(tap_range)(g, &i0, &i1, &j0, &j1);
    const ptrdiff_t nj = j1 - j0;
    sc.base = (int64_t *)mem;
    sc.tapoff = sc.base + ohw;
    sc.tid0 = (uint32_t *)(sc.tapoff + (i1 - i0) * nj);
    sc.tid = sc.tid0 + ohw;
    sc.ph = (REAL *)FC_ROUNDUP((uintptr_t)(sc.tid + ohw), (uintptr_t)sizeof(REAL));
    for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
        const ptrdiff_t a = oh * g->sh - g->ph;
        const ptrdiff_t ti = SFX(first_tap)(-a, g->dh); /* first tap row inside the input */
        for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
            const ptrdiff_t b = ow * g->sw - g->pw;
            const ptrdiff_t tj = SFX(first_tap)(-b, g->dw);
            /* ti >= i0 and tj >= j0: see tap_range */
            sc.tid0[oh * g->wo + ow] = (uint32_t)((ti - i0) * nj + (tj - j0));
            sc.base[oh * g->wo + ow] = (int64_t)(a * g->w + b);
        }
    }
    for (ptrdiff_t i = i0; i < i1; ++i)
        for (ptrdiff_t j = j0; j < j1; ++j)
            sc.tapoff[(i - i0) * nj + (j - j0)] = (int64_t)(i * g->dh * g->w + j * g->dw);
    return sc;
}

/* the columns of one row split by parity: the common stride 2, vectorised */
FC_SIMD_PROC(SFX(split2), (const REAL *FC_RESTRICT src, ptrdiff_t w, REAL *FC_RESTRICT even,
                           REAL *FC_RESTRICT odd),
             (src, w, even, odd))
{
    for (ptrdiff_t k = 0; k < w / 2; ++k) {
        even[k] = src[2 * k];
        odd[k] = src[2 * k + 1];
    }
    if (w & 1) even[w / 2] = src[w - 1];
}

/* idx = base + tapoff[tid] (int64 input indices from the 32-bit tap numbers) */
FC_SIMD_PROC(SFX(tap_index), (const int64_t *FC_RESTRICT base, const int64_t *FC_RESTRICT tapoff,
                              const uint32_t *FC_RESTRICT tid, ptrdiff_t n,
                              int64_t *FC_RESTRICT idx),
             (base, tapoff, tid, n, idx))
{
    for (ptrdiff_t o = 0; o < n; ++o) idx[o] = base[o] + tapoff[tid[o]];
}

/*
 * A plane split into its stride phases: phase (ev, eh) holds rows ev, ev+sh, ...
 * and of those the columns eh, eh+sw, ...; phase plane p = ev * sw + eh, its row
 * y' and column k at ph[(p * hph + y') * wph + k], hph = ceil(h/sh),
 * wph = ceil(w/sw). A strided window tap then reads contiguous values.
 */
static void SFX(split_phases)(const REAL *xp, const fc_pool_geom *g, REAL *ph)
{
    const ptrdiff_t sh = g->sh, sw = g->sw, w = g->w;
    const ptrdiff_t hph = FC_CEILDIV(g->h, sh), wph = FC_CEILDIV(w, sw);
    for (ptrdiff_t y = 0; y < g->h; ++y) {
        REAL *d = ph + ((y % sh) * sw * hph + y / sh) * wph; /* phase (y % sh, 0) */
        if (sw == 2) {
            SFX(split2)(xp + y * w, w, d, d + hph * wph);
            continue;
        }
        for (ptrdiff_t r = 0; r < sw; ++r) {
            const REAL *sr = xp + y * w + r;
            const ptrdiff_t nr = r < w ? FC_CEILDIV(w - r, sw) : 0;
            for (ptrdiff_t k = 0; k < nr; ++k) d[r * hph * wph + k] = sr[k * sw];
        }
    }
}

/* one row from its even and odd columns (the inverse of split2), vectorised */
FC_SIMD_PROC(SFX(merge2), (const REAL *FC_RESTRICT even, const REAL *FC_RESTRICT odd, ptrdiff_t w,
                           REAL *FC_RESTRICT dst),
             (even, odd, w, dst))
{
    for (ptrdiff_t k = 0; k < w / 2; ++k) {
        dst[2 * k] = even[k];
        dst[2 * k + 1] = odd[k];
    }
    if (w & 1) dst[w - 1] = even[w / 2];
}

/* the inverse: phase planes back into one plane (every element written once) */
static void SFX(merge_phases)(const REAL *ph, const fc_pool_geom *g, REAL *xp)
{
    const ptrdiff_t sh = g->sh, sw = g->sw, w = g->w;
    const ptrdiff_t hph = FC_CEILDIV(g->h, sh), wph = FC_CEILDIV(w, sw);
    for (ptrdiff_t y = 0; y < g->h; ++y) {
        const REAL *d = ph + ((y % sh) * sw * hph + y / sh) * wph;
        if (sw == 2) {
            SFX(merge2)(d, d + hph * wph, w, xp + y * w);
            continue;
        }
        for (ptrdiff_t r = 0; r < sw; ++r) {
            REAL *sr = xp + y * w + r;
            const ptrdiff_t nr = r < w ? FC_CEILDIV(w - r, sw) : 0;
            for (ptrdiff_t k = 0; k < nr; ++k) sr[k * sw] = d[r * hph * wph + k];
        }
    }
}

/*
 * Where tap (i, j) of the window acts: outputs rows [*r0, *r1) and columns
 * [*lo, *hi) (0 if none), reading the input at *off + r * pitch + o relative to
 * output (r0 + r, lo + o). Offsets are into the phase split (split_phases) with
 * row pitch ceil(w/sw); without a stride that is the plane itself (one phase,
 * pitch w), so the same offset serves both. Output (r, o) reads input row
 * r*sh + ei = (r + qv)*sh + ev and column o*sw + e = (o + qh)*sw + eh.
 */
static int SFX(tap_span)(const fc_pool_geom *g, ptrdiff_t i, ptrdiff_t j, ptrdiff_t *r0,
                         ptrdiff_t *r1, ptrdiff_t *lo, ptrdiff_t *hi, ptrdiff_t *off)
{
    const ptrdiff_t sh = g->sh, sw = g->sw;
    const ptrdiff_t hph = FC_CEILDIV(g->h, sh), wph = FC_CEILDIV(g->w, sw);
    const ptrdiff_t ei = i * g->dh - g->ph, e = j * g->dw - g->pw;
    SFX(tap_cols)(ei, sh, g->h, g->ho, r0, r1);
    SFX(tap_cols)(e, sw, g->w, g->wo, lo, hi);
    if (*r1 <= *r0 || *hi <= *lo) return 0;
    const ptrdiff_t ev = ((ei % sh) + sh) % sh, qv = (ei - ev) / sh;
    const ptrdiff_t eh = ((e % sw) + sw) % sw, qh = (e - eh) / sw;
    *off = ((ev * sw + eh) * hph + *r0 + qv) * wph + *lo + qh;
    return 1;
}

/*
 * Max pooling of one plane with any window: taps outermost in raster order, all
 * outputs innermost. Each output still sees its window in raster order, so the
 * first maximum and the last NaN win exactly as in the one-window-at-a-time rule.
 * With a column stride the rows are first split into stride phases (column
 * ow*sw + e is element ow + floor(e/sw) of phase e mod sw), so every tap reads
 * contiguous values; a tap number per output is kept (32-bit, like the f32
 * values it is selected with) and turned into the int64 input index at the end.
 */
static void SFX(max_plane_generic)(const REAL *xp, const fc_pool_geom *g, REAL *best,
                                   int64_t *idx, const SFX(max_scratch) *sc)
{
    const ptrdiff_t ohw = g->ho * g->wo;
    const ptrdiff_t wph = FC_CEILDIV(g->w, g->sw); /* row pitch of what the taps read */
    const int split = g->sh > 1 || g->sw > 1;
    if (split) SFX(split_phases)(xp, g, sc->ph);
    const REAL *planes = split ? sc->ph : xp;
    for (ptrdiff_t o = 0; o < ohw; ++o) best[o] = -(REAL)INFINITY;
    memcpy(sc->tid, sc->tid0, sizeof(uint32_t) * (size_t)ohw);
    ptrdiff_t i0, i1, j0, j1;
    SFX(tap_range)(g, &i0, &i1, &j0, &j1);
    for (ptrdiff_t i = i0; i < i1; ++i)
        for (ptrdiff_t j = j0; j < j1; ++j) {
            ptrdiff_t r0, r1, lo, hi, off;
            if (!SFX(tap_span)(g, i, j, &r0, &r1, &lo, &hi, &off)) continue;
            SFX(max_tap)(planes + off, wph, r1 - r0, hi - lo,
                         (uint32_t)((i - i0) * (j1 - j0) + (j - j0)),
                         best + r0 * g->wo + lo, sc->tid + r0 * g->wo + lo, g->wo);
        }
    if (idx) SFX(tap_index)(sc->base, sc->tapoff, sc->tid, ohw, idx);
}

int SFX(fc_maxpool2d_fwd)(const REAL *x, const fc_pool_geom *g, int nthreads, REAL *y,
                          int64_t *idx)
{
    nthreads = fc_threads_for(nthreads, SFX(pool_work)(g));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
    fc_team_arrive(&tm);
    const size_t nbytes = SFX(max_scratch_bytes)(g);
    char *scratch = nbytes ? (char *)fc_malloc(nbytes) : NULL;
    SFX(max_scratch) sc;
    if (scratch) sc = SFX(max_plane_setup)(g, scratch);
    if (!scratch) {
#pragma omp atomic write
        failed = 1;
    }
    ptrdiff_t t;
#pragma omp for schedule(static) nowait
    for (t = 0; t < planes; ++t) {
        if (!scratch) continue;
        const REAL *xp = x + t * hw;
        REAL *yp = y + t * ohw;
        int64_t *ip = idx ? idx + t * ohw : NULL;
        if (SFX(is_2x2s2)(g) && SFX(max2x2_fast)() && g->w < (1 << 30)) {
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
        /* the running maxima live in y itself */
        SFX(max_plane_generic)(xp, g, yp, ip, &sc);
    }
    fc_free(scratch);
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

int SFX(fc_maxpool2d_bwd)(const REAL *gy, const int64_t *idx, const fc_pool_geom *g,
                          int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, SFX(pool_work)(g));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    int bad = 0;
    ptrdiff_t t;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : bad)
    {
    fc_team_arrive(&tm);
    /* The caller's guess of the windows (functional.py: H // H_out x W // W_out)
     * says 2x2 tiles: try writing each element once (max2x2_bwd_plane); once a
     * plane shows an index outside its tile, this thread's remaining planes go
     * straight to the scatter. Either way gives the same bits. */
    int tiled = g->sh == 2 && g->sw == 2 && 2 * g->ho <= g->h && 2 * g->wo <= g->w &&
                g->w < ((ptrdiff_t)1 << 30);
#pragma omp for schedule(static) nowait
    for (t = 0; t < planes; ++t) {
        REAL *gp = gx + t * hw;
        const REAL *yp = gy + t * ohw;
        const int64_t *ip = idx + t * ohw;
        if (tiled) {
            if (SFX(max2x2_bwd_plane)(yp, ip, g->h, g->w, g->ho, g->wo, gp)) continue;
            tiled = 0;
        }
        memset(gp, 0, sizeof(REAL) * (size_t)hw);
        for (ptrdiff_t o = 0; o < ohw; ++o) {
            int64_t i = ip[o];
            if (i < 0 || i >= (int64_t)hw) { bad |= 1; continue; }
            gp[i] += yp[o];
        }
    }
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return bad ? FC_EINDEX : FC_OK;
}

/* acc[r, o] += src[r * src_rs + o * sw]: one tap of an average window over a block */
FC_SIMD_PROC(SFX(add_tap), (const REAL *FC_RESTRICT src, ptrdiff_t src_rs, ptrdiff_t sw,
                            ptrdiff_t rows, ptrdiff_t n, REAL *FC_RESTRICT acc, ptrdiff_t rs),
             (src, src_rs, sw, rows, n, acc, rs))
{
    for (ptrdiff_t r = 0; r < rows; ++r)
        for (ptrdiff_t o = 0; o < n; ++o) acc[r * rs + o] += src[r * src_rs + o * sw];
}

/* dst[r * rs + o] += v[r * vs + o]: one tap of an average window's backward */
FC_SIMD_PROC(SFX(add_rows), (const REAL *FC_RESTRICT v, ptrdiff_t vs, ptrdiff_t rows, ptrdiff_t n,
                             REAL *FC_RESTRICT dst, ptrdiff_t rs),
             (v, vs, rows, n, dst, rs))
{
    for (ptrdiff_t r = 0; r < rows; ++r)
        for (ptrdiff_t o = 0; o < n; ++o) dst[r * rs + o] += v[r * vs + o];
}

/* taps i in [0, k) of a window starting at a (dilation d) that land in [lo, hi) */
static inline ptrdiff_t SFX(taps_in)(ptrdiff_t a, ptrdiff_t d, ptrdiff_t k, ptrdiff_t lo,
                                     ptrdiff_t hi)
{
    const ptrdiff_t first = SFX(first_tap)(lo - a, d);
    const ptrdiff_t last = hi - a > 0 ? FC_MIN(k, FC_CEILDIV(hi - a, d)) : 0;
    return last > first ? last - first : 0;
}

/*
 * The divisor of each output of a plane: the window's taps inside the padded input
 * [-p, n + p_end) (count_include_pad; a ceil-mode overhang does not count) or inside
 * the input. Without dilation that is the window clipped to the range (PyTorch's
 * rule); with it, ONNX's AveragePool (opset 19) counts the dilated taps the same way.
 */
static void SFX(avg_divisors)(const fc_pool_geom *g, REAL *div)
{
    for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
        ptrdiff_t h0, h1, ph;
        if (g->dh == 1) {
            ph = SFX(win)(oh, g->sh, g->ph, g->ph_end, g->kh, g->h, &h0, &h1);
        } else {
            const ptrdiff_t a = oh * g->sh - g->ph;
            ph = SFX(taps_in)(a, g->dh, g->kh, -g->ph, g->h + g->ph_end);
            h0 = 0;
            h1 = SFX(taps_in)(a, g->dh, g->kh, 0, g->h);
        }
        for (ptrdiff_t ow = 0; ow < g->wo; ++ow) {
            ptrdiff_t w0, w1, pw;
            if (g->dw == 1) {
                pw = SFX(win)(ow, g->sw, g->pw, g->pw_end, g->kw, g->w, &w0, &w1);
            } else {
                const ptrdiff_t b = ow * g->sw - g->pw;
                pw = SFX(taps_in)(b, g->dw, g->kw, -g->pw, g->w + g->pw_end);
                w0 = 0;
                w1 = SFX(taps_in)(b, g->dw, g->kw, 0, g->w);
            }
            div[oh * g->wo + ow] =
                (REAL)(g->count_include_pad ? ph * pw : (h1 - h0) * (w1 - w0));
        }
    }
}

int SFX(fc_avgpool2d_fwd)(const REAL *x, const fc_pool_geom *g, int nthreads, REAL *y)
{
    nthreads = fc_threads_for(nthreads, SFX(pool_work)(g));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
    fc_team_arrive(&tm);
    /* per-output divisors (shape-only), then the plane's phase split */
    int bad = 0;
    const size_t nel = fc_size_mul(1, ohw + SFX(phase_elems)(g, &bad), &bad);
    REAL *div = bad || nel > SIZE_MAX / sizeof(REAL) ? NULL
                                                     : (REAL *)fc_malloc(sizeof(REAL) * nel);
    if (!div) {
#pragma omp atomic write
        failed = 1;
    } else {
        SFX(avg_divisors)(g, div);
    }
    REAL *ph = div ? div + ohw : NULL;
    const ptrdiff_t wph = FC_CEILDIV(g->w, g->sw); /* row pitch of what the taps read */
    const int split = g->sh > 1 || g->sw > 1;
    ptrdiff_t t;
#pragma omp for schedule(static) nowait
    for (t = 0; t < planes; ++t) {
        if (!div) continue;
        const REAL *xp = x + t * hw;
        REAL *yp = y + t * ohw;
        if (SFX(is_2x2s2)(g)) {
            for (ptrdiff_t oh = 0; oh < g->ho; ++oh) {
                const REAL *r0 = xp + 2 * oh * g->w, *r1 = r0 + g->w;
                for (ptrdiff_t ow = 0; ow < g->wo; ++ow)
                    yp[oh * g->wo + ow] =
                        (((r0[2 * ow] + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) / (REAL)4;
            }
            continue;
        }
        /* taps outermost (raster order per output, as one window at a time), outputs
         * innermost; with a stride the taps read the phase split (contiguous rows) */
        if (split) SFX(split_phases)(xp, g, ph);
        const REAL *planes = split ? ph : xp;
        for (ptrdiff_t q = 0; q < ohw; ++q) yp[q] = 0;
        ptrdiff_t i0, i1, j0, j1;
        SFX(tap_range)(g, &i0, &i1, &j0, &j1);
        for (ptrdiff_t i = i0; i < i1; ++i)
            for (ptrdiff_t j = j0; j < j1; ++j) {
                ptrdiff_t r0, r1, lo, hi, off;
                if (!SFX(tap_span)(g, i, j, &r0, &r1, &lo, &hi, &off)) continue;
                SFX(add_tap)(planes + off, wph, 1, r1 - r0, hi - lo, yp + r0 * g->wo + lo, g->wo);
            }
        for (ptrdiff_t q = 0; q < ohw; ++q) yp[q] /= div[q];
    }
    fc_free(div);
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

int SFX(fc_avgpool2d_bwd)(const REAL *gy, const fc_pool_geom *g, int nthreads, REAL *gx)
{
    nthreads = fc_threads_for(nthreads, SFX(pool_work)(g));
    const ptrdiff_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->ho * g->wo;
    int failed = 0;
    fc_team tm;
    fc_team_begin(&tm, nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
    fc_team_arrive(&tm);
    /* divisors (shape-only), grad / divisor, the phase planes grad_x is summed in */
    int bad = 0;
    const ptrdiff_t nph = SFX(phase_elems)(g, &bad);
    const size_t nel = fc_size_mul(1, 2 * ohw + nph, &bad);
    REAL *div = bad || nel > SIZE_MAX / sizeof(REAL) ? NULL
                                                     : (REAL *)fc_malloc(sizeof(REAL) * nel);
    if (!div) {
#pragma omp atomic write
        failed = 1;
    } else {
        SFX(avg_divisors)(g, div);
    }
    REAL *vrow = div ? div + ohw : NULL;
    REAL *ph = div ? div + 2 * ohw : NULL;
    const ptrdiff_t wph = FC_CEILDIV(g->w, g->sw); /* row pitch of what the taps add into */
    const int split = g->sh > 1 || g->sw > 1;
    ptrdiff_t t;
#pragma omp for schedule(static) nowait
    for (t = 0; t < planes; ++t) {
        if (!vrow) continue;
        REAL *gp = gx + t * hw;
        const REAL *yp = gy + t * ohw;
        if (SFX(is_2x2s2)(g)) {
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
        for (ptrdiff_t q = 0; q < ohw; ++q) vrow[q] = yp[q] / div[q];
        /* every tap adds the plane of grad/divisor into grad_x in a fixed order; with a
         * stride into the phase planes (contiguous rows), merged into grad_x at the end */
        REAL *acc = split ? ph : gp;
        memset(acc, 0, sizeof(REAL) * (size_t)(split ? nph : hw));
        ptrdiff_t i0, i1, j0, j1;
        SFX(tap_range)(g, &i0, &i1, &j0, &j1);
        for (ptrdiff_t i = i0; i < i1; ++i)
            for (ptrdiff_t j = j0; j < j1; ++j) {
                ptrdiff_t r0, r1, lo, hi, off;
                if (!SFX(tap_span)(g, i, j, &r0, &r1, &lo, &hi, &off)) continue;
                SFX(add_rows)(vrow + r0 * g->wo + lo, g->wo, r1 - r0, hi - lo, acc + off, wph);
            }
        if (split) SFX(merge_phases)(ph, g, gp);
    }
    fc_free(div);
    fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

