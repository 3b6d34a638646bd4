/*
 * fc_rowwino.c - the row-Winograd F(5, 5) forward and grad_input (float32,
 * AVX-512) for 5x5 stride-1 layers with few channels; fc_rowwino.h has the
 * matrices and why one dimension.
 *
 * One convolution core, rw_conv, serves both passes: grad_input is the
 * forward of gy padded (4 - pt, 4 - pb, 4 - pl, 4 - pr) with the weights
 * swapped (k <-> c) and turned 180 degrees. For output row y, tile t (columns
 * 5t .. 5t + 4) and point p:
 *
 *     V[c][row][t][p] = (B^T d)[p],  d = padded input row `row`, columns 5t .. 5t + 8
 *     U[k][c][i][p]   = (G w[k][c][i][0..4])[p]
 *     M[k][y][t][p]   = sum over c, then i of U[k][c][i][p] * V[c][y + i][t][p]
 *     y[k][y][5t + q] = (A^T M[k][y][t][.])[q] + bias[k], then ReLU if asked
 *
 * Batch independence. Every element of every image gets the same sequence of
 * operations whatever the batch, its block or the thread count: M is one FMA
 * chain from +0 over (c, i) in that order, all 5 rows always (padding rows
 * hold V = +0, what the transform of a zero row gives), and the transforms
 * are fc_rowwino.h's, lane by lane. Two paths share that sequence:
 *   - whole blocks of 16 images, one image per vector lane (rw_block): the
 *     products are a register-blocked GEMM per point, RW_MR output channels
 *     x RW_NR positions (y, t) of accumulators over the (c, i) reduction;
 *   - the remaining n % 16 images (and batch 1) one at a time with the output
 *     channels in the lanes (rw_image): an FMA is commutative in its two
 *     factors and both paths round it once, so the bits are rw_block's
 *     (tests/test_winograd_rows.py checks batch 1 .. 64 against batch 64).
 */
#include "fc_internal.h"
#include "fc_rowwino.h"

#if FC_X86_SIMD
#include "fc_lanes.h"

#define RW_L 16  /* lanes */
#define RW_MR 4  /* output channels per register block */
#define RW_NR 5  /* positions (y, t) per register block: 20 accumulators */

typedef struct {
    const float *x;      /* (n, c, h, w) input */
    const float *up;     /* U as up[(p * c * 5 + c * 5 + i) * kp + k], zero for k >= k */
    const float *bias;   /* (k,) or NULL */
    float *y;            /* (n, k, ho, wo) output */
    ptrdiff_t n, c, h, w, k, kp, pt, pl, ho, wo;
    ptrdiff_t T;         /* tiles per row, ceil(wo / 5) */
    ptrdiff_t hp;        /* padded input rows read: ho + 4 */
    ptrdiff_t wt;        /* padded input columns read: 5T + 4 */
    ptrdiff_t npos;      /* positions (y, t): ho * T */
    int relu;
} rw_plan;

/* Floats of a block task's scratch: lane copy of x, V (+ RW_NR positions of
 * slack read by the last register block), the M block, the lane outputs. */
static size_t rw_block_floats(const rw_plan *d)
{
    const size_t xt = (size_t)(d->c * d->h * d->wt) * RW_L;
    const size_t v = (size_t)(FC_RW_N * d->c * d->hp * d->T + RW_NR + 4 * d->T) * RW_L;
    const size_t m = (size_t)(RW_MR * RW_NR * FC_RW_N) * RW_L;
    const size_t yt = (size_t)(d->k * d->ho * 5 * d->T) * RW_L;
    return xt + v + m + yt;
}

/* acc[MR][NR] over the (c, i) reduction of one point p, written to mb[(kk * RW_NR + j)
 * * 9 + p] (a lane vector each). vp: V of point p at the block's first position;
 * u: U of point p at the block's first channel. */
FC_TGT_AVX512 static void rw_gemm_block(const rw_plan *d, const float *vp, const float *u,
                                        int p, float *mb)
{
    __m512 acc[RW_MR][RW_NR];
    for (int kk = 0; kk < RW_MR; ++kk)
        for (int j = 0; j < RW_NR; ++j) acc[kk][j] = _mm512_setzero_ps();
    const ptrdiff_t plane = d->hp * d->T * RW_L; /* one channel's V of one point */
    for (ptrdiff_t c = 0; c < d->c; ++c) {
        for (ptrdiff_t i = 0; i < FC_RW_R; ++i) {
            const float *v = vp + c * plane + i * d->T * RW_L;
            const float *uk = u + (c * FC_RW_R + i) * d->kp;
            __m512 vv[RW_NR];
            for (int j = 0; j < RW_NR; ++j) vv[j] = _mm512_load_ps(v + j * RW_L);
            for (int kk = 0; kk < RW_MR; ++kk) {
                const __m512 ub = _mm512_set1_ps(uk[kk]);
                for (int j = 0; j < RW_NR; ++j) acc[kk][j] = _mm512_fmadd_ps(ub, vv[j], acc[kk][j]);
            }
        }
    }
    for (int kk = 0; kk < RW_MR; ++kk)
        for (int j = 0; j < RW_NR; ++j)
            _mm512_store_ps(mb + ((kk * RW_NR + j) * FC_RW_N + p) * RW_L, acc[kk][j]);
}

/* + bias, then the ReLU select (s <= 0 ? 0 : s, so NaN stays NaN): the lanes
 * forward's write-out. b is the bias in every lane (block) or per lane (image). */
FC_TGT_AVX512 static inline __m512 rw_finish(__m512 s, __m512 b, int relu)
{
    s = _mm512_add_ps(s, b);
    if (relu)
        s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_LE_OQ), s,
                                 _mm512_setzero_ps());
    return s;
}

/* fc_lanes_run's task: output channels of part `part` of `parts` (in register
 * blocks of RW_MR) of images [n0, n0 + 16). */
FC_TGT_AVX512 static void rw_block(const void *plan, ptrdiff_t n0, int nb, ptrdiff_t part,
                                   ptrdiff_t parts, float *buf)
{
    const rw_plan *d = (const rw_plan *)plan;
    const ptrdiff_t T = d->T, we = 5 * T, chw = d->c * d->h * d->w;
    const ptrdiff_t nkb = FC_CEILDIV(d->k, (ptrdiff_t)RW_MR);
    const ptrdiff_t k0 = part * nkb / parts * RW_MR;
    const ptrdiff_t k1 = FC_MIN(d->k, (part + 1) * nkb / parts * RW_MR);
    float *xt = buf;
    float *vb = xt + d->c * d->h * d->wt * RW_L;
    const ptrdiff_t vlen = FC_RW_N * d->c * d->hp * T;
    float *mb = vb + (vlen + RW_NR + 4 * T) * RW_L;
    float *yt = mb + RW_MR * RW_NR * FC_RW_N * RW_L;

    /* x into lanes, the left padding as zero columns; columns past the input
     * (right padding, the last tile's extra columns) are zero too */
    fc_lanes_pack(d->x + n0 * chw, chw, nb, d->c * d->h, d->w, d->pl, d->wt, xt);
    /* V, point-major: vb[((p * c + c) * hp + row) * T + t]; a block's positions
     * (y, t) = y * T + t are then consecutive vectors for every (c, i) */
    for (ptrdiff_t c = 0; c < d->c; ++c)
        for (ptrdiff_t row = 0; row < d->hp; ++row) {
            const ptrdiff_t r = row - d->pt;
            for (ptrdiff_t t = 0; t < T; ++t) {
                __m512 v[FC_RW_N];
                if (r < 0 || r >= d->h) {
                    for (int p = 0; p < FC_RW_N; ++p) v[p] = _mm512_setzero_ps();
                } else {
                    const float *src = xt + ((c * d->h + r) * d->wt + 5 * t) * RW_L;
                    __m512 in[FC_RW_N];
                    for (int j = 0; j < FC_RW_N; ++j) in[j] = _mm512_load_ps(src + j * RW_L);
                    fc_rw_input_avx512(in, v);
                }
                for (int p = 0; p < FC_RW_N; ++p)
                    _mm512_store_ps(vb + (((p * d->c + c) * d->hp + row) * T + t) * RW_L, v[p]);
            }
        }
    /* the slack the last position block reads (its results are dropped): finite */
    for (ptrdiff_t s = vlen; s < vlen + RW_NR + 4 * T; ++s)
        _mm512_store_ps(vb + s * RW_L, _mm512_setzero_ps());

    const ptrdiff_t cstep = FC_RW_R * d->c * d->kp; /* U of one point */
    for (ptrdiff_t kb = k0; kb < k1; kb += RW_MR) {
        for (ptrdiff_t pos0 = 0; pos0 < d->npos; pos0 += RW_NR) {
            for (int p = 0; p < FC_RW_N; ++p)
                rw_gemm_block(d, vb + (p * d->c * d->hp * T + pos0) * RW_L,
                              d->up + p * cstep + kb, p, mb);
            for (int kk = 0; kk < RW_MR && kb + kk < k1; ++kk) {
                const ptrdiff_t k = kb + kk;
                const __m512 bv = _mm512_set1_ps(d->bias ? d->bias[k] : 0.0f);
                for (int j = 0; j < RW_NR && pos0 + j < d->npos; ++j) {
                    const ptrdiff_t y = (pos0 + j) / T, t = (pos0 + j) % T;
                    __m512 m[FC_RW_N], o[FC_RW_M];
                    for (int p = 0; p < FC_RW_N; ++p)
                        m[p] = _mm512_load_ps(mb + ((kk * RW_NR + j) * FC_RW_N + p) * RW_L);
                    fc_rw_output_avx512(m, o);
                    float *dst = yt + ((k * d->ho + y) * we + 5 * t) * RW_L;
                    for (int q = 0; q < FC_RW_M; ++q)
                        _mm512_store_ps(dst + q * RW_L, rw_finish(o[q], bv, d->relu));
                }
            }
        }
    }
    fc_lanes_unpack(yt + k0 * d->ho * we * RW_L, (k1 - k0) * d->ho, d->wo, we,
                    d->k * d->ho * d->wo, nb, d->y + (n0 * d->k + k0) * d->ho * d->wo);
}

/* Floats of an image task's scratch: V of one image, (c, hp, T, 9), and 16
 * lanes x 9 of staging. */
static size_t rw_image_floats(const rw_plan *d)
{
    return (size_t)(d->c * d->hp * d->T * FC_RW_N) + FC_RW_N * RW_L + RW_L;
}

/*
 * One image, the output channels in the lanes: the same V (lanes are tiles of
 * a row here), the same FMA chains (U a vector of channels, V broadcast), the
 * same output transform and write-out per channel. The lanes past k (and past
 * the tiles of a row) compute on zeros and are not stored.
 */
FC_TGT_AVX512 static void rw_image(const rw_plan *d, ptrdiff_t img, float *buf)
{
    const ptrdiff_t T = d->T, hw = d->h * d->w;
    const float *x = d->x + img * d->c * hw;
    float *y = d->y + img * d->k * d->ho * d->wo;
    float *vs = buf; /* vs[((c * hp + row) * T + t) * 9 + p] */
    float *stage = buf + d->c * d->hp * T * FC_RW_N;
    stage = (float *)(((uintptr_t)stage + 63) & ~(uintptr_t)63);

    for (ptrdiff_t c = 0; c < d->c; ++c)
        for (ptrdiff_t row = 0; row < d->hp; ++row) {
            const ptrdiff_t r = row - d->pt;
            float *vrow = vs + (c * d->hp + row) * T * FC_RW_N;
            if (r < 0 || r >= d->h) {
                for (ptrdiff_t s = 0; s < T * FC_RW_N; ++s) vrow[s] = 0.0f;
                continue;
            }
            const float *src = x + c * hw + r * d->w;
            for (ptrdiff_t t0 = 0; t0 < T; t0 += RW_L) {
                const int nt = (int)FC_MIN((ptrdiff_t)RW_L, T - t0);
                /* d[j] lane l = padded column 5 (t0 + l) + j, i.e. input column
                 * 5 (t0 + l) + j - pl, zero outside the input */
                __m512 in[FC_RW_N], v[FC_RW_N];
                for (int j = 0; j < FC_RW_N; ++j) {
                    float col[RW_L];
                    for (int l = 0; l < RW_L; ++l) {
                        const ptrdiff_t xc = 5 * (t0 + l) + j - d->pl;
                        col[l] = l < nt && xc >= 0 && xc < d->w ? src[xc] : 0.0f;
                    }
                    in[j] = _mm512_loadu_ps(col);
                }
                fc_rw_input_avx512(in, v);
                for (int p = 0; p < FC_RW_N; ++p) _mm512_store_ps(stage + p * RW_L, v[p]);
                for (int l = 0; l < nt; ++l)
                    for (int p = 0; p < FC_RW_N; ++p)
                        vrow[(t0 + l) * FC_RW_N + p] = stage[p * RW_L + l];
            }
        }

    const ptrdiff_t cstep = FC_RW_R * d->c * d->kp;
    for (ptrdiff_t kb = 0; kb < d->k; kb += RW_L) {
        const int nk = (int)FC_MIN((ptrdiff_t)RW_L, d->k - kb);
        const __mmask16 km = fc_lanes_mask(nk);
        const __m512 bv = d->bias ? _mm512_maskz_loadu_ps(km, d->bias + kb) : _mm512_setzero_ps();
        for (ptrdiff_t pos = 0; pos < d->npos; ++pos) {
            const ptrdiff_t yy = pos / T, t = pos % T;
            __m512 m[FC_RW_N], o[FC_RW_M];
            for (int p = 0; p < FC_RW_N; ++p) m[p] = _mm512_setzero_ps();
            for (ptrdiff_t c = 0; c < d->c; ++c)
                for (ptrdiff_t i = 0; i < FC_RW_R; ++i) {
                    const float *v = vs + ((c * d->hp + yy + i) * T + t) * FC_RW_N;
                    const float *u = d->up + (c * FC_RW_R + i) * d->kp + kb;
                    for (int p = 0; p < FC_RW_N; ++p)
                        m[p] = _mm512_fmadd_ps(_mm512_set1_ps(v[p]),
                                               _mm512_load_ps(u + p * cstep), m[p]);
                }
            fc_rw_output_avx512(m, o);
            for (int q = 0; q < FC_RW_M; ++q) {
                const ptrdiff_t col = 5 * t + q;
                if (col >= d->wo) break;
                _mm512_store_ps(stage, rw_finish(o[q], bv, d->relu));
                for (int l = 0; l < nk; ++l)
                    y[((kb + l) * d->ho + yy) * d->wo + col] = stage[l];
            }
        }
    }
}

/* The images past the last whole block, one task each. */
static int rw_images(const rw_plan *d, ptrdiff_t i0, int nt)
{
    const ptrdiff_t ni = d->n - i0;
    if (ni <= 0) return FC_OK;
    nt = (int)FC_MIN((ptrdiff_t)nt, ni);
    const size_t scratch = sizeof(float) * rw_image_floats(d);
    int failed = 0;
    fc_simd_ran(FC_SIMD_AVX512);
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        fc_team_arrive(&tm);
        float *buf = (float *)fc_malloc(scratch);
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t t;
#pragma omp for schedule(static) nowait
        for (t = i0; t < d->n; ++t)
            if (buf) rw_image(d, t, buf);
        fc_free(buf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The convolution of the plan's x with U: whole blocks of 16 in image lanes,
 * then the rest one image at a time. */
static int rw_conv(rw_plan *d, int nt)
{
    d->T = FC_CEILDIV(d->wo, (ptrdiff_t)FC_RW_M);
    d->hp = d->ho + FC_RW_R - 1;
    d->wt = 5 * d->T + FC_RW_R - 1;
    d->npos = d->ho * d->T;
    const ptrdiff_t nfull = d->n / RW_L * RW_L;
    int rc = FC_OK;
    if (nfull > 0)
        rc = fc_lanes_run(nfull, nt, FC_CEILDIV(d->k, (ptrdiff_t)RW_MR),
                          sizeof(float) * rw_block_floats(d), rw_block, d);
    if (rc == FC_OK) rc = rw_images(d, nfull, fc_team_for(nt, (double)(d->n - nfull) *
                                                                 (double)(d->k * d->ho * d->wo *
                                                                          d->c * 25)));
    return rc;
}

/* up[(p * c * 5 + c * 5 + i) * kp + k] = (G g)[p] for the taps g of output
 * channel k, input channel c, row i: w[k][c][i][0..4] (forward), or for
 * grad_input (flip) w[c][k][4 - i][4 .. 0] with the roles of k and c swapped. */
static float *rw_weights(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t *kp_out)
{
    const ptrdiff_t kp = FC_ROUNDUP(k, (ptrdiff_t)RW_L);
    float *up = (float *)fc_malloc(sizeof(float) * (size_t)(FC_RW_N * c * FC_RW_R * kp));
    if (!up) return NULL;
    for (ptrdiff_t s = 0; s < FC_RW_N * c * FC_RW_R * kp; ++s) up[s] = 0.0f;
    for (ptrdiff_t kk = 0; kk < k; ++kk)
        for (ptrdiff_t cc = 0; cc < c; ++cc)
            for (ptrdiff_t i = 0; i < FC_RW_R; ++i) {
                float u[FC_RW_N];
                if (flip)
                    fc_rw_filter(w + ((cc * k + kk) * 25 + (4 - i) * 5 + 4), -1, u);
                else
                    fc_rw_filter(w + ((kk * c + cc) * 25 + i * 5), 1, u);
                for (int p = 0; p < FC_RW_N; ++p)
                    up[((p * c + cc) * FC_RW_R + i) * kp + kk] = u[p];
            }
    *kp_out = kp;
    return up;
}
#endif /* FC_X86_SIMD */

int fc_conv2d_fwd_rowwino_f32(const float *x, const float *w, const float *bias,
                              const fc_conv_geom *g, int relu, int nthreads, float *y)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() < FC_SIMD_AVX512) return FC_EINVAL;
    if (g->n <= 0 || g->k <= 0 || g->ho <= 0 || g->wo <= 0) return FC_OK;
    nthreads = fc_threads_for(nthreads, fc_conv_work(g) / FC_CONV_FWD_MACS_PER_WORK);
    rw_plan d;
    d.up = rw_weights(w, g->k, g->c, 0, &d.kp);
    if (!d.up) return FC_ENOMEM;
    d.x = x; d.bias = bias; d.y = y; d.relu = relu;
    d.n = g->n; d.c = g->c; d.h = g->h; d.w = g->w; d.k = g->k;
    d.pt = g->ph; d.pl = g->pw; d.ho = g->ho; d.wo = g->wo;
    const int rc = rw_conv(&d, nthreads);
    fc_free((void *)d.up);
    return rc;
#else
    (void)x; (void)w; (void)bias; (void)g; (void)relu; (void)nthreads; (void)y;
    return FC_EINVAL;
#endif
}

int fc_conv2d_grad_input_rowwino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                     int nthreads, float *gx)
{
#if FC_X86_SIMD
    if (fc_simd_dispatch() < FC_SIMD_AVX512) return FC_EINVAL;
    if (g->n <= 0 || g->c <= 0 || g->h <= 0 || g->w <= 0) return FC_OK;
    nthreads = fc_threads_for(nthreads, fc_conv_work(g));
    rw_plan d;
    d.up = rw_weights(w, g->c, g->k, 1, &d.kp);
    if (!d.up) return FC_ENOMEM;
    /* gx = the forward of gy padded (4 - pt, ., 4 - pl, .), k and c swapped */
    d.x = gy; d.bias = NULL; d.y = gx; d.relu = 0;
    d.n = g->n; d.c = g->k; d.h = g->ho; d.w = g->wo; d.k = g->c;
    d.pt = FC_RW_R - 1 - g->ph; d.pl = FC_RW_R - 1 - g->pw; d.ho = g->h; d.wo = g->w;
    const int rc = rw_conv(&d, nthreads);
    fc_free((void *)d.up);
    return rc;
#else
    (void)gy; (void)w; (void)g; (void)nthreads; (void)gx;
    return FC_EINVAL;
#endif
}
