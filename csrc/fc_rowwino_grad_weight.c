/*
 * fc_rowwino_grad_weight.c - grad_weight of a float32 5x5 stride-1 convolution
 * with few channels (LeNet's conv2, 6 -> 16 on 14x14) by row Winograd F(5, 5)
 * (fc_rowwino.h), AVX-512.
 *
 *   gw[k][c][i][j] = sum over n, y, x of gy[n][k][y][x] * xp[n][c][y + i][x + j]
 *
 * Row by row this is a 5-output correlation (the outputs are the taps j). Cut
 * each grad_y row into segments s of 5 columns (5s .. 5s + 4, zero past Wo):
 *
 *   U[p] = (G gy[n][k][y][5s .. 5s + 4])[p]           9 points
 *   V[p] = (B^T xp[n][c][y + i][5s .. 5s + 8])[p]     9 points
 *   D[k][c][i][p] = sum over (n, y, s) of U[p] * V[p]
 *   gw[k][c][i][j] = (A^T D[k][c][i][.])[j]
 *
 * For conv2 that is 9 products per (k, c, i, y, s), 180 per (k, c, i) where the
 * direct sum has 500. The 16 lanes of a vector are 16 images (fc_lanes.h), so
 * a point's products are element-wise FMAs with no broadcast: a register tile
 * of mt output channels x nt (c, i) pairs loads mt U and nt V vectors for
 * mt * nt FMAs, the reduction (y, s) innermost. A block's V (every channel and
 * padded row) is made once and read by every output channel and all 5 kernel
 * rows; a tile's U once per block and read by every (c, i).
 *
 * Bits. A sum's lane l (image l of a block) is one FMA chain from +0 over
 * r = y * S + s in order through a group of 2 blocks (1 for large images;
 * RWG_GROUP); the groups of a chunk (a fixed run of blocks, a function of the
 * batch size only) are added in order, the chunks in chunk order, then A^T
 * (fc_rw_output) lane by lane, then each tap's 16 lanes by one fixed tree (A^T
 * before the lane sums: 5 sums per (k, c, i) to reduce instead of 9; a third
 * of the merge). Which thread ran a task never enters, so every thread count
 * gives the same bits. The bias is
 * the image-lanes route's sum of grad_y (fc_conv_grad_weight.c: the same
 * per-block pixel order, chunks and lane tree), so its bits are those of that
 * route wherever that route took every image.
 *
 * Non-finite values: a NaN or infinity in x reaches the points of B^T's
 * column for it, and through A^T in general all 5 taps j of the weights whose
 * rows read it (the direct routes confine it to the taps whose window covers
 * it; tests/test_winograd_rows_grad_weight.py), as the 2-D Winograd routes
 * spread theirs; one in grad_y reaches every weight of its output channel, as
 * in the direct routes.
 */
#include "fastconv.h"
#include "fc_internal.h"
#include "fc_rowwino.h"

#if FC_X86_SIMD
#include "fc_lanes.h"

#define RWG_MT_MAX 4
#define RWG_NT_MAX 6
/* Chunks of blocks, partials merged in order: the image-lanes route's two,
 * which its bias sums share. */
#define RWG_CHUNKS 2
/* A thread's scratch (one channel's lane copy of x, V of a block, a tile's
 * grad_y and U) and all partials: past these the layer is not few-channel
 * and the direct routes take it. */
#define RWG_MAX_SCRATCH (4 << 20)
/* Blocks whose products one register tile sums in one chain from +0 (then
 * added to the chunk's sums): 2 halves the tile's stores and startup, which
 * with 20 products per point and block (LeNet conv2: 0.101 -> 0.094 ms) were
 * a fifth of it; but only while the two blocks' scratch stays in L2 (16 -> 16
 * on 28x28 with 3.5 MiB of it: 1.6 -> 4.1 ms), else one block. */
#define RWG_GROUP 2
#define RWG_GROUP_MAX_SCRATCH (1 << 20)
#define RWG_MAX_PARTIALS (64 << 20)

typedef struct {
    const float *gy, *x;
    const fc_conv_geom *g;
    int want_bias, mt, nt;   /* register tile: mt output channels x nt (c, i) */
    ptrdiff_t S;             /* segments per row: ceil(wo / 5) */
    ptrdiff_t hp, xpitch;    /* padded input rows; a lane row of x: 5S + 4 columns */
    ptrdiff_t R, vrows;      /* reduction per block: ho * S; V rows per channel: hp * S */
    ptrdiff_t ci, ldp;       /* (c, i) pairs: C * 5; rounded up to nt */
    ptrdiff_t kpad, ktiles;  /* K rounded up to mt; register tiles of K */
    ptrdiff_t nblk, nch, nsplit, ntask;
    ptrdiff_t group;         /* blocks per chain (RWG_GROUP or 1) */
    ptrdiff_t part;          /* floats of one chunk's partials: D, then bias */
    const ptrdiff_t *voff;   /* ldp pairs: offset of (c, i)'s first row in V, floats */
    float *parts;
} rwg_plan;

/* Floats of a thread's scratch: x lanes of one channel, V of `group` blocks,
 * grad_y lanes of one tile and its U for `group` blocks. */
static ptrdiff_t rwg_scratch_floats(const fc_conv_geom *g, ptrdiff_t S, ptrdiff_t hp,
                                    ptrdiff_t group)
{
    const ptrdiff_t xl = hp * (5 * S + 4), v = FC_RW_N * g->c * hp * S;
    const ptrdiff_t gl = RWG_MT_MAX * g->ho * g->wo, u = FC_RW_N * RWG_MT_MAX * g->ho * S;
    return (xl + group * v + gl + group * u) * FC_LANES;
}

/*
 * V of block n0 .. n0 + nb: V[p][c][yp * S + s][lane] = (B^T of padded x
 * columns 5s .. 5s + 8 of row yp)[p], for every padded row yp (zero rows and
 * columns where the input is padded, and past it).
 */
FC_TGT_AVX512 static void rwg_make_v(const rwg_plan *d, ptrdiff_t n0, int nb, float *xl, float *v)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t hwx = g->h * g->w, row = d->xpitch * FC_LANES, S = d->S;
    const ptrdiff_t pstride = g->c * d->vrows * FC_LANES; /* floats from point p to p + 1 */
    memset(xl, 0, sizeof(float) * (size_t)(g->ph * row));
    memset(xl + (g->ph + g->h) * row, 0, sizeof(float) * (size_t)(g->ph_end * row));
    for (ptrdiff_t c = 0; c < g->c; ++c) {
        fc_lanes_pack(d->x + (n0 * g->c + c) * hwx, g->c * hwx, nb, g->h, g->w, g->pw,
                      d->xpitch, xl + g->ph * row);
        float *vc = v + c * d->vrows * FC_LANES;
        for (ptrdiff_t yp = 0; yp < d->hp; ++yp)
            for (ptrdiff_t s = 0; s < S; ++s) {
                const float *src = xl + yp * row + 5 * s * FC_LANES;
                __m512 in[FC_RW_N], out[FC_RW_N];
                for (int m = 0; m < FC_RW_N; ++m) in[m] = _mm512_load_ps(src + m * FC_LANES);
                fc_rw_input_avx512(in, out);
                float *dst = vc + (yp * S + s) * FC_LANES;
                for (int p = 0; p < FC_RW_N; ++p) _mm512_store_ps(dst + p * pstride, out[p]);
            }
    }
}

/*
 * U of output channels k0 .. k0 + rows of the block (mt rows; those past rows
 * are zero): U[p][m][y * S + s][lane] = (G of grad_y columns 5s .. 5s + 4 of
 * row y, zero past wo)[p]; with bias, the rows' per-lane sums of grad_y over
 * (y, x) in order into the chunk's bias partials (stored for the chunk's first
 * block).
 */
FC_TGT_AVX512 static void rwg_make_u(const rwg_plan *d, ptrdiff_t n0, int nb, ptrdiff_t k0,
                                     ptrdiff_t rows, int first, float *gl, float *u,
                                     float *pbias)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t hw = g->ho * g->wo, wo = g->wo, S = d->S;
    const ptrdiff_t pstride = d->mt * d->R * FC_LANES;
    /* the tile's rows are contiguous in grad_y: moved as one run of rows * hw
     * values (no padded columns: a quarter fewer transposes for 10x10 planes) */
    fc_lanes_pack(d->gy + (n0 * g->k + k0) * hw, g->k * hw, nb, 1, rows * hw, 0, rows * hw, gl);
    for (ptrdiff_t m = 0; m < d->mt; ++m) {
        float *um = u + m * d->R * FC_LANES;
        if (m >= rows) {
            for (int p = 0; p < FC_RW_N; ++p)
                memset(um + p * pstride, 0, sizeof(float) * (size_t)(d->R * FC_LANES));
            continue;
        }
        const float *gm = gl + m * hw * FC_LANES;
        for (ptrdiff_t y = 0; y < g->ho; ++y)
            for (ptrdiff_t s = 0; s < S; ++s) {
                const float *src = gm + (y * wo + 5 * s) * FC_LANES;
                const ptrdiff_t r = y * S + s, cols = FC_MIN((ptrdiff_t)FC_RW_R, wo - 5 * s);
                __m512 in[FC_RW_R], out[FC_RW_N];
                for (int j = 0; j < FC_RW_R; ++j)
                    in[j] = j < cols ? _mm512_load_ps(src + j * FC_LANES) : _mm512_setzero_ps();
                fc_rw_filter_avx512(in, out);
                for (int p = 0; p < FC_RW_N; ++p)
                    _mm512_store_ps(um + p * pstride + r * FC_LANES, out[p]);
            }
        if (pbias) {
            __m512 bs = _mm512_setzero_ps();
            for (ptrdiff_t t = 0; t < hw; ++t)
                bs = _mm512_add_ps(bs, _mm512_load_ps(gm + t * FC_LANES));
            float *b = pbias + (k0 + m) * FC_LANES;
            _mm512_store_ps(b, first ? bs : _mm512_add_ps(_mm512_load_ps(b), bs));
        }
    }
}

/* One register tile at one point: U rows (mt, R apart) against nt (c, i) runs of
 * V, for nbk blocks (their U and V ustep and vstep floats apart). */
typedef struct {
    const float *u;        /* U of the tile at point p: row m at u + m * R * 16 */
    const float *v;        /* V at point p */
    const ptrdiff_t *voff; /* the tile's nt (c, i): offsets in v */
    ptrdiff_t R, nbk, ustep, vstep;
    int first;             /* the chunk's first block: sums stored, not added */
    float *out;            /* D of row m, pair t at out + (m * ldo + t) * 9 * 16 */
    ptrdiff_t ldo;
} rwg_args;

FC_ALWAYS_INLINE FC_TGT_AVX512 void rwg_tile_body(const int mt, const int nt, const rwg_args *a)
{
    __m512 acc[RWG_MT_MAX][RWG_NT_MAX];
    const float *vp[RWG_NT_MAX];
    const ptrdiff_t R = a->R;
    for (int t = 0; t < nt; ++t) vp[t] = a->v + a->voff[t];
    for (int m = 0; m < mt; ++m)
        for (int t = 0; t < nt; ++t) acc[m][t] = _mm512_setzero_ps();
    const float *u = a->u;
    for (ptrdiff_t bk = 0; bk < a->nbk; ++bk, u += a->ustep) {
        for (ptrdiff_t r = 0; r < R; ++r) {
            __m512 uv[RWG_MT_MAX];
            for (int m = 0; m < mt; ++m) uv[m] = _mm512_load_ps(u + (m * R + r) * FC_LANES);
            for (int t = 0; t < nt; ++t) {
                const __m512 xv = _mm512_load_ps(vp[t] + r * FC_LANES);
                for (int m = 0; m < mt; ++m) acc[m][t] = _mm512_fmadd_ps(uv[m], xv, acc[m][t]);
            }
        }
        for (int t = 0; t < nt; ++t) vp[t] += a->vstep;
    }
    for (int m = 0; m < mt; ++m)
        for (int t = 0; t < nt; ++t) {
            float *o = a->out + (m * a->ldo + t) * FC_RW_N * FC_LANES;
            _mm512_store_ps(o, a->first ? acc[m][t] : _mm512_add_ps(_mm512_load_ps(o), acc[m][t]));
        }
}

typedef void (*rwg_tile_fn)(const rwg_args *);
#define RWG_TILE(MT, NT)                                                                    \
    FC_TGT_AVX512 static void rwg_tile_##MT##x##NT(const rwg_args *a)                       \
    {                                                                                       \
        rwg_tile_body(MT, NT, a);                                                           \
    }
RWG_TILE(3, 5)
RWG_TILE(3, 6)
RWG_TILE(4, 5)
RWG_TILE(4, 6)

static rwg_tile_fn rwg_tile(int mt, int nt)
{
    if (mt == 3) return nt == 5 ? rwg_tile_3x5 : rwg_tile_3x6;
    return nt == 5 ? rwg_tile_4x5 : rwg_tile_4x6;
}

/* Task t = (chunk, range of register tiles of K): every block of the chunk,
 * into the chunk's partials (the task's own rows of them). */
FC_TGT_AVX512 static void rwg_task(const rwg_plan *d, ptrdiff_t t, float *buf)
{
    const fc_conv_geom *g = d->g;
    const ptrdiff_t ch = t / d->nsplit, sp = t % d->nsplit;
    const ptrdiff_t tl0 = sp * d->ktiles / d->nsplit, tl1 = (sp + 1) * d->ktiles / d->nsplit;
    const ptrdiff_t b0 = ch * d->nblk / d->nch, b1 = (ch + 1) * d->nblk / d->nch;
    const ptrdiff_t mt = d->mt, nt = d->nt;
    float *xl = buf;
    const ptrdiff_t vblock = FC_RW_N * g->c * d->vrows * FC_LANES;
    const ptrdiff_t ublock = FC_RW_N * mt * d->R * FC_LANES;
    float *v = xl + d->hp * d->xpitch * FC_LANES;
    float *gl = v + d->group * vblock;
    float *u = gl + RWG_MT_MAX * g->ho * g->wo * FC_LANES;
    float *pc = d->parts + ch * d->part;
    float *pbias = d->want_bias ? pc + d->kpad * d->ldp * FC_RW_N * FC_LANES : NULL;
    const ptrdiff_t vpoint = g->c * d->vrows * FC_LANES, upoint = mt * d->R * FC_LANES;
    const rwg_tile_fn tile = rwg_tile(d->mt, d->nt);
    /* groups of d->group blocks from the chunk's first (a function of the
     * shape only) */
    for (ptrdiff_t bg = b0; bg < b1; bg += d->group) {
        const ptrdiff_t nbk = FC_MIN(d->group, b1 - bg);
        for (ptrdiff_t q = 0; q < nbk; ++q) {
            const ptrdiff_t n0 = (bg + q) * FC_LANES;
            rwg_make_v(d, n0, (int)FC_MIN((ptrdiff_t)FC_LANES, g->n - n0), xl, v + q * vblock);
        }
        for (ptrdiff_t tl = tl0; tl < tl1; ++tl) {
            const ptrdiff_t k0 = tl * mt, rows = FC_MIN(mt, g->k - k0);
            for (ptrdiff_t q = 0; q < nbk; ++q) {
                const ptrdiff_t n0 = (bg + q) * FC_LANES;
                rwg_make_u(d, n0, (int)FC_MIN((ptrdiff_t)FC_LANES, g->n - n0), k0, rows,
                           bg + q == b0, gl, u + q * ublock, pbias);
            }
            rwg_args a;
            a.R = d->R; a.first = bg == b0; a.ldo = d->ldp;
            a.nbk = nbk; a.ustep = ublock; a.vstep = vblock;
            for (int p = 0; p < FC_RW_N; ++p) {
                a.u = u + p * upoint;
                a.v = v + p * vpoint;
                for (ptrdiff_t t0 = 0; t0 < d->ldp; t0 += nt) {
                    a.voff = d->voff + t0;
                    a.out = pc + ((k0 * d->ldp + t0) * FC_RW_N + p) * FC_LANES;
                    tile(&a);
                }
            }
        }
    }
}

/* n <= 16 sums from their partial vectors (chunk ch's at src + i * step + ch * part):
 * the chunks added in order, then each sum's 16 lanes by one fixed tree (the
 * image-lanes route's gwl_reduce16, for vectors `step` floats apart). */
FC_TGT_AVX512 static void rwg_reduce16(const float *src, ptrdiff_t step, ptrdiff_t part,
                                       ptrdiff_t nch, int n, float *dst)
{
    __m512 v[16];
    for (int i = 0; i < 16; ++i) {
        if (i >= n) {
            v[i] = _mm512_setzero_ps();
            continue;
        }
        v[i] = _mm512_load_ps(src + i * step);
        for (ptrdiff_t ch = 1; ch < nch; ++ch)
            v[i] = _mm512_add_ps(v[i], _mm512_load_ps(src + ch * part + i * step));
    }
    fc_transpose16_avx512(v);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) v[i] = _mm512_add_ps(v[i], v[i + w]);
    _mm512_mask_storeu_ps(dst, fc_lanes_mask(n), v[0]);
}

/* Row k of gw (k < K) or the bias (k = K). A row's sums: per (c, i), its 9
 * points summed over the chunks in order, A^T lane by lane (fc_rw_output),
 * then each tap's 16 lanes by the fixed tree; the 5 taps of (c, i) are gw's
 * (c, i, 0 .. 4), so 16 of them at a time go straight to gw. */
FC_TGT_AVX512 static void rwg_merge_row(const rwg_plan *d, ptrdiff_t k, float *gw, float *gb)
{
    const fc_conv_geom *g = d->g;
    if (k == g->k) {
        const float *pbias = d->parts + d->kpad * d->ldp * FC_RW_N * FC_LANES;
        for (ptrdiff_t k0 = 0; k0 < g->k; k0 += 16)
            rwg_reduce16(pbias + k0 * FC_LANES, FC_LANES, d->part, d->nch,
                         (int)FC_MIN((ptrdiff_t)16, g->k - k0), gb + k0);
        return;
    }
    const float *row = d->parts + k * d->ldp * FC_RW_N * FC_LANES;
    float *gwk = gw + k * d->ci * FC_RW_M;
    _Alignas(64) float taps[16 * FC_RW_M * FC_LANES];
    for (ptrdiff_t q0 = 0; q0 < d->ci; q0 += 16) {
        const ptrdiff_t nq = FC_MIN((ptrdiff_t)16, d->ci - q0);
        for (ptrdiff_t q = 0; q < nq; ++q) {
            const float *src = row + (q0 + q) * FC_RW_N * FC_LANES;
            __m512 m[FC_RW_N], y[FC_RW_M];
            for (int p = 0; p < FC_RW_N; ++p) {
                m[p] = _mm512_load_ps(src + p * FC_LANES);
                for (ptrdiff_t ch = 1; ch < d->nch; ++ch)
                    m[p] = _mm512_add_ps(m[p], _mm512_load_ps(src + ch * d->part + p * FC_LANES));
            }
            fc_rw_output_avx512(m, y);
            for (int j = 0; j < FC_RW_M; ++j)
                _mm512_store_ps(taps + (q * FC_RW_M + j) * FC_LANES, y[j]);
        }
        for (ptrdiff_t o0 = 0; o0 < nq * FC_RW_M; o0 += 16)
            rwg_reduce16(taps + o0 * FC_LANES, FC_LANES, 0, 1,
                         (int)FC_MIN((ptrdiff_t)16, nq * FC_RW_M - o0), gwk + q0 * FC_RW_M + o0);
    }
}

static void rwg_task_run(const void *d, ptrdiff_t t, float *buf)
{
    rwg_task((const rwg_plan *)d, t, buf);
}

static void rwg_merge(const rwg_plan *d, int nt, float *gw, float *gb)
{
    const ptrdiff_t rows = d->g->k + (gb != NULL);
    /* a team only where each thread has a few thousand sums to reduce */
    if (rows * d->ci * FC_RW_N < 4096 * (ptrdiff_t)nt) nt = 1;
    ptrdiff_t k;
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        fc_team_arrive(&tm);
#pragma omp for schedule(static) nowait
        for (k = 0; k < rows; ++k) rwg_merge_row(d, k, gw, gb);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
}

/* The plan's sizes, with no allocation; 0 if the layer does not fit the route. */
static int rwg_plan_sizes(const fc_conv_geom *g, int nthreads, rwg_plan *d)
{
    if (fc_simd_dispatch() != FC_SIMD_AVX512) return 0;
    if (g->kh != 5 || g->kw != 5 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 ||
        g->groups != 1)
        return 0;
    if (g->n < 1 || g->c < 1 || g->k < 1 || g->ho < 1 || g->wo < 1) return 0;
    if (g->ph < 0 || g->pw < 0 || g->ph_end < 0 || g->pw_end < 0) return 0;
    d->hp = g->h + g->ph + g->ph_end;
    /* stride 1: the padded input is exactly the output plus the 4 extra taps */
    if (d->hp != g->ho + 4 || g->w + g->pw + g->pw_end != g->wo + 4) return 0;
    d->g = g;
    d->S = FC_CEILDIV(g->wo, (ptrdiff_t)FC_RW_M);
    d->xpitch = 5 * d->S + 4;
    d->R = g->ho * d->S;
    d->vrows = d->hp * d->S;
    d->ci = g->c * 5;
    /* the tiles that pad the fewest rows (6 channels: 3, not 4), then pairs */
    d->mt = FC_ROUNDUP(g->k, (ptrdiff_t)3) < FC_ROUNDUP(g->k, (ptrdiff_t)4) ? 3 : 4;
    d->nt = FC_ROUNDUP(d->ci, (ptrdiff_t)5) < FC_ROUNDUP(d->ci, (ptrdiff_t)6) ? 5 : 6;
    d->kpad = FC_ROUNDUP(g->k, (ptrdiff_t)d->mt);
    d->ldp = FC_ROUNDUP(d->ci, (ptrdiff_t)d->nt);
    d->ktiles = d->kpad / d->mt;
    d->nblk = FC_CEILDIV(g->n, (ptrdiff_t)FC_LANES);
    d->nch = FC_MIN(d->nblk, (ptrdiff_t)RWG_CHUNKS);
    /* more tasks than chunks only to feed every thread: a tile's sums do not
     * depend on which task ran it */
    d->nsplit = FC_MIN(d->ktiles, FC_CEILDIV((ptrdiff_t)FC_MAX(nthreads, 1), d->nch));
    d->ntask = d->nch * d->nsplit;
    d->part = (d->kpad * d->ldp * FC_RW_N + g->k) * FC_LANES;
    if ((double)rwg_scratch_floats(g, d->S, d->hp, 1) * sizeof(float) > RWG_MAX_SCRATCH) return 0;
    d->group = (double)rwg_scratch_floats(g, d->S, d->hp, RWG_GROUP) * sizeof(float) <=
                       RWG_GROUP_MAX_SCRATCH
                   ? RWG_GROUP
                   : 1;
    if ((double)d->nch * (double)d->part * sizeof(float) > RWG_MAX_PARTIALS) return 0;
    return 1;
}

static int rwg_run(const float *gy, const float *x, const rwg_plan *plan, int nt, float *gw,
                   float *gb)
{
    rwg_plan d = *plan;
    const fc_conv_geom *g = d.g;
    d.gy = gy; d.x = x; d.want_bias = gb != NULL;
    if (nt > d.ntask) nt = (int)d.ntask;
    int rc = FC_OK;
    ptrdiff_t *voff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)d.ldp);
    d.parts = (float *)fc_malloc(sizeof(float) * (size_t)(d.nch * d.part));
    if (!voff || !d.parts) { rc = FC_ENOMEM; goto done; }
    for (ptrdiff_t c = 0, q = 0; c < g->c; ++c)
        for (ptrdiff_t i = 0; i < 5; ++i, ++q) voff[q] = (c * d.vrows + i * d.S) * FC_LANES;
    /* pairs past C * 5 read the last pair again; their sums are never read */
    for (ptrdiff_t q = d.ci; q < d.ldp; ++q) voff[q] = voff[d.ci - 1];
    d.voff = voff;

    fc_simd_ran(FC_SIMD_AVX512);
    const size_t scratch = sizeof(float) * (size_t)rwg_scratch_floats(g, d.S, d.hp, d.group);
    if (fc_scratch_run(0, d.ntask, nt, scratch, rwg_task_run, &d) != FC_OK) {
        rc = FC_ENOMEM;
        goto done;
    }
    rwg_merge(&d, nt, gw, gb);
done:
    free(voff);
    fc_free(d.parts);
    return rc;
}
#endif /* FC_X86_SIMD */

int fc_conv2d_grad_weight_rowwino_fits(const fc_conv_geom *g)
{
#if FC_X86_SIMD
    rwg_plan d;
    return rwg_plan_sizes(g, 1, &d);
#else
    (void)g;
    return 0;
#endif
}

int fc_conv2d_grad_weight_rowwino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                      int nthreads, float *gw, float *gb)
{
#if FC_X86_SIMD
    /* the team the controller allows (its cap on a busy machine), as every pass sizes
     * its team; the direct routes below do the same for themselves */
    const int nt = fc_threads_for(nthreads, fc_conv_work(g));
    rwg_plan d;
    if (rwg_plan_sizes(g, nt, &d)) return rwg_run(gy, x, &d, nt, gw, gb);
#endif
    /* no AVX-512, or a layer the route does not take: the direct routes, same contract */
    return fc_conv2d_grad_weight_f32(gy, x, g, nthreads, gw, gb);
}
