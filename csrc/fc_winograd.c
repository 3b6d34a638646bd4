/*
 * fc_winograd.c - Winograd F(2x2, 5x5) and F(4x4, 3x3) forward and grad_input,
 * float32 (the method, and what the passes share: fc_winograd_common.h). The
 * kernel size (g->kh, 5 or 3) picks the output tile size mt (2 or 4).
 *
 * wino_conv is plan -> per-block task -> no merge: a block is whole tile rows,
 * a task transforms its input tiles into V, runs the 36 GEMMs into M and
 * transforms M straight into y; blocks own their outputs, so the thread count
 * never changes a bit.
 */
#include "fc_winograd_common.h"

/* The plan of one wino_conv call and the buffers every block reads. */
typedef struct {
    const fc_kernels_f32 *kk;
    const float *xp;          /* padded input: n * cin planes of hp x wp, plus slack */
    const float *ap;          /* U packed in panels of mr rows (wino_pack) */
    const ptrdiff_t *koff;    /* V row of each input channel */
    const float *bias;        /* or NULL */
    float *y;
    ptrdiff_t cin, m, ho, wo; /* channels in / out, output size */
    ptrdiff_t th, tw, trows;  /* tile rows per image, tiles per row, tile rows in all */
    int mt;                   /* outputs per tile side: 2 (5x5 kernel) or 4 (3x3) */
    ptrdiff_t wp, plane;      /* padded input row and plane */
    int slot, relu;
    int pool;                 /* y is the 2x2/2 max-pool of the output: (n, m, ho/2, wo/2) */
    ptrdiff_t mr, nr, mpad;   /* micro-kernel and output channels padded to mr */
    ptrdiff_t rpb, nblk;      /* tile rows per block, blocks */
    ptrdiff_t nparts;         /* tasks per block: output channel panels cut in nparts */
    ptrdiff_t blk_cols;       /* GEMM columns per block */
    ptrdiff_t vp_pitch;       /* V row pitch: room for wino_in_row's whole-vector stores */
} wino_fwd;

/* wino_out_block for a fused pool: each whole tile is a window and gives one
 * pooled value; a tile cut by an odd bottom or right edge is in no window. */
static void wino_pool_block(const wino_fwd *f, ptrdiff_t s0, ptrdiff_t s1, const float *mb,
                            ptrdiff_t k0, ptrdiff_t k1)
{
    const ptrdiff_t th = f->th, tw = f->tw, hp = f->ho / 2, wp = f->wo / 2;
    for (ptrdiff_t k = k0; k < k1; ++k) {
        const float bv = f->bias ? f->bias[k] : 0.0f;
        for (ptrdiff_t s = s0; s < s1;) {
            const ptrdiff_t r = s % th;
            float *yrow = r < hp ? f->y + ((s / th) * f->m + k) * hp * wp + r * wp : NULL;
            const float *mk = mb + k * NP * f->blk_cols + wino_tile_col(s - s0, tw, f->mt);
            if (2 * tw <= RL && s + 1 < s1) { /* narrow tile rows in pairs, as wino_out_block */
                const ptrdiff_t r2 = (s + 1) % th;
                float *yrow2 = r2 < hp ? f->y + (((s + 1) / th) * f->m + k) * hp * wp + r2 * wp
                                       : NULL;
                if (yrow)
                    wino_pool_row(mk, f->blk_cols, bv, f->relu, (int)tw, (int)wp, yrow, yrow2);
                else if (yrow2) /* the second row's lanes start at tw */
                    wino_pool_row(mk + tw, f->blk_cols, bv, f->relu, (int)tw, (int)wp, yrow2,
                                  NULL);
                s += 2;
                continue;
            }
            for (ptrdiff_t q0 = 0; yrow && q0 < wp; q0 += RL)
                wino_pool_row(mk + q0, f->blk_cols, bv, f->relu, RL,
                              (int)FC_MIN((ptrdiff_t)RL, wp - q0), yrow + q0, NULL);
            ++s;
        }
    }
}

/* wino_out_block for F(4x4, 3x3) tiles, plain or pooled: a pooled tile gives
 * 2x2 pooled values (rows and columns of them beyond ho/2, wo/2 are cut off,
 * so an odd bottom or right output row is in no window). */
static void wino_out_block4(const wino_fwd *f, ptrdiff_t s0, ptrdiff_t s1, const float *mb,
                            ptrdiff_t k0, ptrdiff_t k1)
{
    const ptrdiff_t th = f->th, tw = f->tw, per = f->pool ? 2 : 4;
    const ptrdiff_t oh = f->pool ? f->ho / 2 : f->ho, ow = f->pool ? f->wo / 2 : f->wo;
    for (ptrdiff_t k = k0; k < k1; ++k) {
        const float bv = f->bias ? f->bias[k] : 0.0f;
        float *yk = f->y + k * oh * ow;
        for (ptrdiff_t s = s0; s < s1;) {
            const ptrdiff_t r = s % th;
            const int nrow = (int)FC_MAX((ptrdiff_t)0, FC_MIN(per, oh - per * r));
            float *yrow = nrow ? yk + (s / th) * f->m * oh * ow + per * r * ow : yk;
            const float *mk = mb + k * NP * f->blk_cols + wino_tile_col(s - s0, tw, f->mt);
            if (2 * tw <= RL && s + 1 < s1) { /* narrow tile rows in pairs */
                const ptrdiff_t r2 = (s + 1) % th;
                const int nrow2 = (int)FC_MAX((ptrdiff_t)0, FC_MIN(per, oh - per * r2));
                float *yrow2 = nrow2 ? yk + ((s + 1) / th) * f->m * oh * ow + per * r2 * ow : NULL;
                wino_out_row4(mk, f->blk_cols, bv, f->relu, f->pool, (int)tw, nrow, (int)ow, ow,
                              yrow, nrow2, yrow2);
                s += 2;
                continue;
            }
            for (ptrdiff_t q0 = 0; nrow && q0 < tw && per * q0 < ow; q0 += RL)
                wino_out_row4(mk + q0, f->blk_cols, bv, f->relu, f->pool,
                              (int)FC_MIN((ptrdiff_t)RL, tw - q0), nrow,
                              (int)FC_MIN(per * RL, ow - per * q0), ow, yrow + per * q0, 0, NULL);
            ++s;
        }
    }
}

/* Output transform of a block's tile rows [s0, s1), output channels [k0, k1),
 * from M straight into y. */
static void wino_out_block(const wino_fwd *f, ptrdiff_t s0, ptrdiff_t s1, const float *mb,
                           ptrdiff_t k0, ptrdiff_t k1)
{
    const ptrdiff_t th = f->th, tw = f->tw, ho = f->ho, wo = f->wo;
    if (f->mt == 4) {
        wino_out_block4(f, s0, s1, mb, k0, k1);
        return;
    }
    if (f->pool) {
        wino_pool_block(f, s0, s1, mb, k0, k1);
        return;
    }
    for (ptrdiff_t k = k0; k < k1; ++k) {
        const float bv = f->bias ? f->bias[k] : 0.0f;
        for (ptrdiff_t s = s0; s < s1;) {
            const ptrdiff_t r = s % th;
            float *yrow = f->y + ((s / th) * f->m + k) * ho * wo + 2 * r * wo;
            const int nrow = (int)FC_MIN((ptrdiff_t)2, ho - 2 * r);
            const float *mk = mb + k * NP * f->blk_cols + wino_tile_col(s - s0, tw, f->mt);
            if (2 * tw <= RL && s + 1 < s1) { /* narrow tile rows in pairs */
                const ptrdiff_t r2 = (s + 1) % th;
                float *yrow2 = f->y + (((s + 1) / th) * f->m + k) * ho * wo + 2 * r2 * wo;
                wino_out_row(mk, f->blk_cols, bv, f->relu, (int)tw, nrow, (int)wo, wo, yrow,
                             (int)FC_MIN((ptrdiff_t)2, ho - 2 * r2), yrow2);
                s += 2;
                continue;
            }
            for (ptrdiff_t q0 = 0; q0 < tw; q0 += RL) {
                const int ncol = (int)FC_MIN((ptrdiff_t)(2 * RL), wo - 2 * q0);
                wino_out_row(mk + q0, f->blk_cols, bv, f->relu,
                             (int)FC_MIN((ptrdiff_t)RL, tw - q0), nrow, ncol, wo, yrow + 2 * q0,
                             0, NULL);
            }
            ++s;
        }
    }
}

/* One task: part `part` of block b (its share of the output channel panels),
 * with this thread's V (vb) and M (mb) buffers. Every part transforms the
 * block's input; each output element is made by one part, the same way. */
static void wino_fwd_block(const wino_fwd *f, ptrdiff_t b, ptrdiff_t part, float *vb, float *mb)
{
    const fc_kernels_f32 *kk = f->kk;
    const ptrdiff_t s0 = b * f->rpb, s1 = FC_MIN(f->trows, s0 + f->rpb);
    const ptrdiff_t npan = f->mpad / f->mr;
    const ptrdiff_t r_lo = part * npan / f->nparts * f->mr;
    const ptrdiff_t r_hi = (part + 1) * npan / f->nparts * f->mr;
    wino_in_block(f->xp, f->cin, f->th, f->tw, f->mt, f->wp, f->plane, s0, s1, vb, f->vp_pitch);
    /* 36 GEMMs: M[p] (mpad x blk_cols) = U[p] . V[p]; M point p of output channel k
     * at mb[(k * NP + p) * blk_cols + col] */
    for (ptrdiff_t p = 0; p < NP; ++p) {
        const float *vp = vb + p * f->vp_pitch;
        for (ptrdiff_t r0 = r_lo; r0 < r_hi; r0 += f->mr) {
            const float *a = f->ap + (p * f->mpad + r0) * f->cin;
            float *cp = mb + (r0 * NP + p) * f->blk_cols;
            for (ptrdiff_t j = 0; j < f->blk_cols; j += f->nr)
                kk->ukr[f->slot](f->cin, a, vp + j, f->koff, cp + j, NP * f->blk_cols, 0);
        }
    }
    wino_out_block(f, s0, s1, mb, r_lo, FC_MIN(r_hi, f->m));
}

/*
 * U packed ahead of time (fc_winograd_pack_f32): the GEMMs read U in panels of
 * mr output channels, and packing them is ~6 us of the MNIST CNN's conv2 at
 * batch 1 (U comes from L3 after the dense layer's pass), the same on every
 * call while the weights do not change. The packing follows U in the caller's
 * buffer, after a header that records how it was packed: mr and the padded row
 * count depend on the SIMD level in force (tests switch it), so a call whose
 * plan packs differently packs U again itself, as the plain forward does.
 */
#define WINO_HDR 16 /* floats: the header, and 64-byte alignment of the panels */
#define WINO_MAGIC 0x57504b31 /* "WPK1" */

/* The kernel slot and tile rows per block of a forward's GEMMs (wino_fwd_plan),
 * for tiles of mt x mt outputs. */
static void wino_layout(const fc_kernels_f32 *kk, ptrdiff_t n, ptrdiff_t cin, ptrdiff_t m,
                        ptrdiff_t ho, ptrdiff_t wo, int mt, int *slot, ptrdiff_t *rpb)
{
    wino_fwd_plan(kk, m, cin, FC_CEILDIV(wo, mt), mt, n * FC_CEILDIV(ho, mt), slot, rpb);
}

/* The panels of a packing made for (mr, mpad, m, cin), or NULL if it was made
 * for another layout (or there is none). */
static const float *wino_packed_panels(const float *packed, ptrdiff_t mr, ptrdiff_t mpad,
                                       ptrdiff_t m, ptrdiff_t cin)
{
    if (!packed) return NULL;
    int64_t h[5];
    memcpy(h, packed, sizeof h);
    return h[0] == WINO_MAGIC && h[1] == mr && h[2] == mpad && h[3] == m && h[4] == cin
               ? packed + WINO_HDR : NULL;
}

/*
 * y (n, m, ho, wo) = conv(x (n, cin, h, w), padding top/left) with a 5x5
 * (mt = 2) or 3x3 (mt = 4) kernel, from the transformed weights u (36, m, cin)
 * (see wino_weight_transform), or from their packing when `packed` (a header
 * and panels, or NULL) fits this call.
 */
static int wino_conv_pool(const float *x, ptrdiff_t n, ptrdiff_t cin, ptrdiff_t h,
                          ptrdiff_t w, ptrdiff_t top, ptrdiff_t left, ptrdiff_t m, ptrdiff_t ho,
                          ptrdiff_t wo, int mt, const float *u, const float *packed,
                          const float *bias, int relu, int pool, int nt, float *y /* OUT */)
{
    /* plan */
    wino_fwd f;
    f.kk = fc_get_kernels_f32();
    f.cin = cin; f.m = m; f.ho = ho; f.wo = wo; f.bias = bias; f.relu = relu; f.y = y;
    f.pool = pool; f.mt = mt;
    f.th = FC_CEILDIV(ho, mt); f.tw = FC_CEILDIV(wo, mt);
    f.trows = n * f.th;
    /* the last tile's 6-wide patch ends 6 - mt past its outputs */
    const ptrdiff_t hp = mt * f.th + 6 - mt;
    f.wp = mt * f.tw + 6 - mt; f.plane = hp * f.wp;
    const ptrdiff_t slack = wino_in_slack(mt); /* the input transform reads past the last patch */
    wino_layout(f.kk, n, cin, m, ho, wo, mt, &f.slot, &f.rpb);
    f.mr = f.kk->mr[f.slot]; f.nr = f.kk->nr[f.slot];
    f.mpad = FC_ROUNDUP(m, f.mr);
    f.blk_cols = FC_ROUNDUP(wino_block_cols(f.rpb, f.tw, mt), f.nr);
    f.vp_pitch = f.blk_cols + 2 * WL;
    f.nblk = FC_CEILDIV(f.trows, f.rpb);
    /*
     * Fewer blocks than threads can share evenly (a batch of one: 1-2 blocks):
     * cut each block's output channels too, so a second thread has work. Which
     * task computes an output changes none of its arithmetic.
     */
    f.nparts = 1;
    if (nt > 1 && f.nblk < 2 * (ptrdiff_t)nt)
        f.nparts = FC_MIN((ptrdiff_t)nt, f.mpad / f.mr);
    const ptrdiff_t ntask = f.nblk * f.nparts;
    int rc = FC_OK, failed = 0;

    const float *panels = wino_packed_panels(packed, f.mr, f.mpad, m, cin);
    float *ap = panels ? NULL : (float *)fc_malloc(sizeof(float) * (size_t)(NP * f.mpad * cin));
    float *xp = (float *)fc_malloc(sizeof(float) * (size_t)(n * cin * f.plane + slack));
    ptrdiff_t *koff = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (size_t)cin);
    if ((!panels && !ap) || !xp || !koff) { rc = FC_ENOMEM; goto done; }
    if (!panels) wino_pack(u, m, cin, f.mr, f.mpad, ap);
    for (ptrdiff_t c = 0; c < cin; ++c) koff[c] = c * NP * f.vp_pitch;
    memset(xp + n * cin * f.plane, 0, sizeof(float) * (size_t)slack);
    /* a region of its own only for a large copy: at batch 1 (MNIST CNN conv2: 10k
     * floats, ~2 us) a team's wake-up costs more than it saves, and every region
     * is one more chance to wait for a helper that is off its core */
    wino_pad(x, n, cin, h, w, top, left, hp, f.wp,
             fc_team_for(nt, (double)(n * cin) * (double)f.plane), xp);
    f.ap = panels ? panels : ap; f.xp = xp; f.koff = koff;

    /* per-block tasks; each block owns its outputs, so there is nothing to merge */
    const size_t v_elems = (size_t)(NP * cin * f.vp_pitch);
    fc_team tm;
    fc_team_begin(&tm, nt);
#pragma omp parallel num_threads(nt) if (nt > 1 && ntask > 1)
    {
        fc_team_arrive(&tm);
        float *vb = (float *)fc_malloc(sizeof(float) * v_elems);
        /* + WL: wino_out_row reads whole lane arrays past the last tile */
        float *mb = (float *)fc_malloc(sizeof(float) * (size_t)(NP * f.mpad * f.blk_cols + WL));
        if (!vb || !mb) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* columns past the block's tiles are computed, never stored: keep them
             * finite. wino_in_block writes every column below wino_block_cols(its
             * rows): only the columns from the smallest block's end to blk_cols
             * may be read before any block wrote them (the whole of V was 0.4 MB
             * of stores per call at batch 1). */
            const ptrdiff_t from = wino_block_cols(f.trows - (f.nblk - 1) * f.rpb, f.tw, mt);
            if (from < f.blk_cols)
                for (ptrdiff_t r = 0; r < NP * cin; ++r)
                    memset(vb + r * f.vp_pitch + from, 0,
                           sizeof(float) * (size_t)(f.blk_cols - from));
        }
        ptrdiff_t t;
        /* part-major: a thread's share of tasks spans the blocks, not one big block */
#pragma omp for schedule(static) nowait
        for (t = 0; t < ntask; ++t)
            if (vb && mb) wino_fwd_block(&f, t % f.nblk, t / f.nblk, vb, mb);
        fc_free(vb);
        fc_free(mb);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    if (failed) rc = FC_ENOMEM;
done:
    fc_free(ap);
    fc_free(xp);
    free(koff);
    return rc;
}

static int wino_conv(const float *x, ptrdiff_t n, ptrdiff_t cin, ptrdiff_t h, ptrdiff_t w,
                     ptrdiff_t top, ptrdiff_t left, ptrdiff_t m, ptrdiff_t ho, ptrdiff_t wo,
                     int mt, const float *u, const float *bias, int relu, int nt,
                     float *y /* OUT */)
{
    return wino_conv_pool(x, n, cin, h, w, top, left, m, ho, wo, mt, u, NULL, bias, relu, 0, nt,
                          y);
}

static int wino_fwd_from_w(const float *x, const float *w, const float *bias,
                           const fc_conv_geom *g, int relu, int pool, int nthreads, float *y)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    float *u = (float *)fc_malloc(sizeof(float) * (size_t)(NP * g->k * g->c));
    if (!u) return FC_ENOMEM;
    wino_weight_transform(w, g->k, g->c, (int)g->kh, 0, nthreads, u);
    int rc = wino_conv_pool(x, g->n, g->c, g->h, g->w, g->ph, g->pw, g->k, g->ho, g->wo,
                            wino_mt(g->kh), u, NULL, bias, relu, pool, nthreads, y);
    fc_free(u);
    return rc;
}

int fc_conv2d_fwd_wino_f32(const float *x, const float *w, const float *bias,
                           const fc_conv_geom *g, int relu, int nthreads, float *y)
{
    return wino_fwd_from_w(x, w, bias, g, relu, 0, nthreads, y);
}

int fc_conv2d_fwd_wino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                    const fc_conv_geom *g, int relu, int nthreads, float *yp)
{
    return wino_fwd_from_w(x, w, bias, g, relu, 1, nthreads, yp);
}

/* U for fc_conv2d_fwd_wino_pre_f32: what fc_conv2d_fwd_wino_f32 computes on every call. */
int fc_winograd_weights_f32(const float *w, ptrdiff_t k, ptrdiff_t c, ptrdiff_t kr,
                            int nthreads, float *u)
{
    if (k <= 0 || c <= 0) return FC_OK;
    nthreads = fc_threads_for(nthreads, (double)NP * (double)k * (double)c * (double)(kr * kr));
    wino_weight_transform(w, k, c, (int)kr, 0, nthreads, u);
    return FC_OK;
}

int fc_conv2d_fwd_wino_pre_f32(const float *x, const float *u, const float *bias,
                               const fc_conv_geom *g, int relu, int nthreads, float *y)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    return wino_conv(x, g->n, g->c, g->h, g->w, g->ph, g->pw, g->k, g->ho, g->wo,
                     wino_mt(g->kh), u, bias, relu, nthreads, y);
}

int fc_conv2d_fwd_wino_pre_maxpool2_f32(const float *x, const float *u, const float *bias,
                                        const fc_conv_geom *g, int relu, int nthreads,
                                        float *yp)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    return wino_conv_pool(x, g->n, g->c, g->h, g->w, g->ph, g->pw, g->k, g->ho, g->wo,
                          wino_mt(g->kh), u, NULL, bias, relu, 1, nthreads, yp);
}

ptrdiff_t fc_winograd_packed_len_f32(const fc_conv_geom *g)
{
    const fc_kernels_f32 *kk = fc_get_kernels_f32();
    ptrdiff_t most = 0; /* the largest packing of any slot: room for whichever is chosen */
    for (int s = 0; s < FC_NUM_MR; ++s)
        if (kk->mr[s] > 0) most = FC_MAX(most, FC_ROUNDUP(g->k, (ptrdiff_t)kk->mr[s]));
    return NP * g->k * g->c + WINO_HDR + NP * most * g->c;
}

int fc_winograd_pack_f32(const fc_conv_geom *g, float *up, ptrdiff_t len)
{
    const ptrdiff_t nu = NP * g->k * g->c;
    if (g->k <= 0 || g->c <= 0 || len < nu + WINO_HDR) return FC_OK;
    const fc_kernels_f32 *kk = fc_get_kernels_f32();
    int slot;
    ptrdiff_t rpb;
    wino_layout(kk, g->n, g->c, g->k, g->ho, g->wo, wino_mt(g->kh), &slot, &rpb);
    const ptrdiff_t mr = kk->mr[slot], mpad = FC_ROUNDUP(g->k, mr);
    float *hdr = up + nu;
    memset(hdr, 0, sizeof(float) * WINO_HDR); /* no packing until it is all written */
    /* sized at another SIMD level (switched meanwhile): no packing, the forward
     * packs U itself */
    if (len < nu + WINO_HDR + NP * mpad * g->c) return FC_OK;
    const int64_t h[5] = {WINO_MAGIC, mr, mpad, g->k, g->c};
    memcpy(hdr, h, sizeof h);
    wino_pack(up, g->k, g->c, mr, mpad, hdr + WINO_HDR);
    return FC_OK;
}

static int wino_fwd_packed(const float *x, const float *up, const float *bias,
                           const fc_conv_geom *g, int relu, int pool, int nthreads, float *y)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    return wino_conv_pool(x, g->n, g->c, g->h, g->w, g->ph, g->pw, g->k, g->ho, g->wo,
                          wino_mt(g->kh), up, up + NP * g->k * g->c, bias, relu, pool, nthreads,
                          y);
}

int fc_conv2d_fwd_wino_packed_f32(const float *x, const float *up, const float *bias,
                                  const fc_conv_geom *g, int relu, int nthreads, float *y)
{
    return wino_fwd_packed(x, up, bias, g, relu, 0, nthreads, y);
}

int fc_conv2d_fwd_wino_packed_maxpool2_f32(const float *x, const float *up, const float *bias,
                                           const fc_conv_geom *g, int relu, int nthreads,
                                           float *yp)
{
    return wino_fwd_packed(x, up, bias, g, relu, 1, nthreads, yp);
}

/* grad_x of a stride-1 layer with an r x r kernel (5 or 3) and padding p is the
 * convolution of grad_y with the weights flipped and channel-transposed, padding
 * r - 1 - p. */
int fc_conv2d_grad_input_wino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                  int nthreads, float *gx)
{
    nthreads = fc_threads_for(nthreads, wino_work(g));
    float *u = (float *)fc_malloc(sizeof(float) * (size_t)(NP * g->k * g->c));
    if (!u) return FC_ENOMEM;
    const ptrdiff_t r = g->kh;
    wino_weight_transform(w, g->c, g->k, (int)r, 1, nthreads, u);
    int rc = wino_conv(gy, g->n, g->k, g->ho, g->wo, r - 1 - g->ph, r - 1 - g->pw, g->c, g->h,
                       g->w, wino_mt(r), u, NULL, 0, nthreads, gx);
    fc_free(u);
    return rc;
}
