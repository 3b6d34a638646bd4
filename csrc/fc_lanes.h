/*
 * fc_lanes.h - moving NCHW rows of 16 images into "image lanes" and back, for the
 * AVX-512 float32 routes that put one image in each lane of a vector (the
 * forward in fc_conv_fwd.c, grad_input in fc_conv_grad_input.c).
 *
 * A lane copy of a row of `len` values holds, for column t, the 16 images'
 * values as one vector: lanes[(r * pitch + t) * 16 + lane]. The moves are
 * 16 x 16 transposes in registers (a gather per vector cost a third of the
 * route's time). Pure data movement: no arithmetic, so no rounding.
 */
#ifndef FC_LANES_H
#define FC_LANES_H

#if FC_X86_SIMD
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "fc_transpose16.h"

#define FC_LANES 16

/*
 * How many of n images a lanes route takes: whole blocks of 16, and a last
 * partial block from min_tail images on. A block costs the same whatever its
 * images, so below that the rest is faster on the implicit route, which gives
 * the same bits (each route measures its own min_tail).
 */
static inline ptrdiff_t fc_lanes_images(ptrdiff_t n, ptrdiff_t min_tail)
{
    const ptrdiff_t rem = n % FC_LANES;
    return rem >= min_tail ? n : n - rem;
}

/*
 * Whether all n weights are finite. The lanes routes skip the taps that fall on
 * zero padding, where the implicit routes multiply them: the same bits while
 * every weight is finite (0 * w adds a zero), but 0 * inf and 0 * NaN are NaN.
 * A layer with a non-finite weight therefore stays on the implicit route, so an
 * output's bits never depend on which route (batch size, thread count) ran it.
 * Integer test on the exponent bits: it vectorises, and ~3,000 weights cost
 * well under a microsecond.
 */
static inline int fc_lanes_weights_finite(const float *w, ptrdiff_t n)
{
    uint32_t bad = 0;
    for (ptrdiff_t i = 0; i < n; ++i) {
        uint32_t u;
        memcpy(&u, w + i, sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

static inline __mmask16 fc_lanes_mask(ptrdiff_t n)
{
    return n >= FC_LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/*
 * A 2x2 max-pool window's pick, lane by lane, from its four values in window
 * order: the first largest, and a NaN wins once seen (a later larger value
 * does not replace it, a later NaN does) - the pooling kernels' rule, so a
 * fused conv+pool gives the separate calls' bits.
 */
FC_TGT_AVX512 static inline __m512 fc_lanes_max4(const __m512 v[4])
{
    __m512 best = v[0];
    for (int i = 1; i < 4; ++i) {
        const __mmask16 t = _mm512_cmp_ps_mask(v[i], best, _CMP_GT_OQ) |
                            _mm512_cmp_ps_mask(v[i], v[i], _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, t, v[i]);
    }
    return best;
}

/*
 * lanes[(r * pitch + t) * 16 + lane] = src[lane * img + r * len + t - shift] for
 * 0 <= t - shift < len and lane < nb; 0 elsewhere (t < pitch), for r < nrows.
 */
FC_TGT_AVX512 static void fc_lanes_pack(const float *src, ptrdiff_t img, int nb, ptrdiff_t nrows,
                                        ptrdiff_t len, ptrdiff_t shift, ptrdiff_t pitch,
                                        float *lanes)
{
    const __m512 zero = _mm512_setzero_ps();
    for (ptrdiff_t r = 0; r < nrows; ++r) {
        float *out = lanes + r * pitch * FC_LANES;
        for (ptrdiff_t t = 0; t < pitch; ++t)
            if (t < shift || t - shift >= len) _mm512_store_ps(out + t * FC_LANES, zero);
        for (ptrdiff_t x0 = 0; x0 < len; x0 += FC_LANES) {
            const ptrdiff_t cols = FC_MIN((ptrdiff_t)FC_LANES, len - x0);
            const __mmask16 m = fc_lanes_mask(cols);
            __m512 v[16];
            for (int lane = 0; lane < 16; ++lane)
                v[lane] = lane < nb ? _mm512_maskz_loadu_ps(m, src + lane * img + r * len + x0)
                                    : zero;
            fc_transpose16_avx512(v);
            for (ptrdiff_t c = 0; c < cols; ++c) {
                const ptrdiff_t t = x0 + c + shift;
                if (t >= 0 && t < pitch) _mm512_store_ps(out + t * FC_LANES, v[c]);
            }
        }
    }
}

/* dst[lane * img + r * len + t] = lanes[(r * pitch + t) * 16 + lane] for t < len,
 * lane < nb, r < nrows */
FC_TGT_AVX512 static void fc_lanes_unpack(const float *lanes, ptrdiff_t nrows, ptrdiff_t len,
                                          ptrdiff_t pitch, ptrdiff_t img, int nb, float *dst)
{
    for (ptrdiff_t r = 0; r < nrows; ++r) {
        const float *in = lanes + r * pitch * FC_LANES;
        for (ptrdiff_t x0 = 0; x0 < len; x0 += FC_LANES) {
            const ptrdiff_t cols = FC_MIN((ptrdiff_t)FC_LANES, len - x0);
            const __mmask16 m = fc_lanes_mask(cols);
            __m512 v[16];
            for (int c = 0; c < 16; ++c)
                v[c] = c < cols ? _mm512_load_ps(in + (x0 + c) * FC_LANES) : _mm512_setzero_ps();
            fc_transpose16_avx512(v);
            for (int lane = 0; lane < nb; ++lane)
                _mm512_mask_storeu_ps(dst + lane * img + r * len + x0, m, v[lane]);
        }
    }
}

/* One task of a lanes route: part `part` of `parts` of the block of images
 * [n0, n0 + nb), with the thread's scratch buf. */
typedef void (*fc_lanes_task_fn)(const void *plan, ptrdiff_t n0, int nb, ptrdiff_t part,
                                 ptrdiff_t parts, float *buf);

/* fc_lanes_run's jobs as fc_scratch_run's tasks: task t is part t % parts of block t / parts */
typedef struct {
    fc_lanes_task_fn task;
    const void *plan;
    ptrdiff_t n, parts;
} fc_lanes_job;

static void fc_lanes_one(const void *ctx, ptrdiff_t t, float *buf)
{
    const fc_lanes_job *j = (const fc_lanes_job *)ctx;
    const ptrdiff_t n0 = t / j->parts * FC_LANES;
    j->task(j->plan, n0, (int)FC_MIN((ptrdiff_t)FC_LANES, j->n - n0), t % j->parts, j->parts,
            buf);
}

/*
 * What the lanes routes share: the n images cut into blocks of 16, on a team of
 * at most nt threads, each with a scratch of `scratch` bytes. A task is a block
 * while the blocks share out evenly among the threads; otherwise (16 images on
 * 2 threads, or 48) every block is cut into min(nt, max_parts) parts (the
 * route's rows or channels) so each thread gets the same share. A task owns
 * its outputs and an element's arithmetic is the same whichever task runs it,
 * so the split changes no bit. FC_ENOMEM if a scratch could not be had
 * (fc_scratch_run).
 */
static int fc_lanes_run(ptrdiff_t n, int nt, ptrdiff_t max_parts, size_t scratch,
                        fc_lanes_task_fn task, const void *plan)
{
    const ptrdiff_t nblk = FC_CEILDIV(n, FC_LANES);
    const ptrdiff_t parts = nblk % nt == 0 ? 1 : FC_MAX(1, FC_MIN((ptrdiff_t)nt, max_parts));
    const ptrdiff_t ntask = nblk * parts;
    if (nt > ntask) nt = (int)ntask;
    const fc_lanes_job job = {task, plan, n, parts};
    fc_simd_ran(FC_SIMD_AVX512);
    return fc_scratch_run(0, ntask, nt, scratch, fc_lanes_one, &job);
}
#endif /* FC_X86_SIMD */

#endif /* FC_LANES_H */
