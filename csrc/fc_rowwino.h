/*
 * fc_rowwino.h - "row Winograd" F(5, 5): a 5x5 convolution done as 5 row
 * convolutions, each with one-dimensional Winograd along the width, for
 * float32 layers with few channels (LeNet's conv2 is 6 -> 16). Shared by the
 * row-Winograd passes (forward, grad_input, grad_weight).
 *
 * Why one dimension. The 2-D F(2x2, 5x5) of fc_winograd_common.h cuts the
 * multiplies per output 2.78x, but pays for it in transforms: per 2x2 output
 * tile, a 6x6 input transform per input channel and a 6x6 -> 2x2 output
 * transform per output channel. With C = 6 input channels its point GEMMs
 * reduce over 6 values only, and the output transform costs ~2/3 of the
 * products; it loses to the direct kernel (forward 0.268 vs 0.148 ms on
 * 64x6x14x14 -> 16). In one dimension the five kernel rows go into the
 * reduction instead: each point's product is a GEMM
 *
 *     M[p][k][y][t] = sum over (c, i) of U[p][k][c][i] * V[p][c][y + i][t]
 *
 * reducing over C * 5 values (30 for LeNet's conv2), an input row segment's
 * transform is used by every output channel and all 5 kernel rows, and an
 * output tile's transform is amortised over C * 5 products per point.
 *
 * F(5, 5): 5 outputs of a 5-tap correlation from a 9-value input segment with
 * 9 multiplies instead of 25 (2.78x fewer, the same as F(2x2, 5x5)):
 *
 *     y[0..4] = A^T [ (G g) (.) (B^T d) ]        (.) = element-wise
 *
 * for taps g[0..4] and inputs d[0..8]; output tile t of a row covers columns
 * 5t .. 5t + 4 and reads input columns 5t .. 5t + 8. Toom-Cook with the points
 * 0, 1, -1, 2, -2, 1/2, -1/2, -3/2 and infinity: A^T = E5^T, G = E5,
 * B^T = E9^-T, where Ed is the 9 x d matrix evaluating a polynomial of d
 * coefficients at the points (the row for infinity takes the leading one).
 * The C literals below are those fractions; each is a quotient of two exact
 * floats, so the compiler rounds it once, to the nearest float.
 *
 * Rounding (float32 data uniform in [-1, 1], sums over 30 rows, against a
 * float64 direct correlation): median error 1.5e-6 of the largest output,
 * ~10x the direct kernel's, below F(4x4, 3x3)'s. The 8th point was chosen
 * among 3, -3, 3/2, -3/2, 1/3, -1/3, 2/3, 1/4, -1/4 and 4: all give the same
 * median, -3/2 and 2/3 the smallest worst case (1e-5).
 *
 * Non-finite values: a NaN or infinity in an input segment reaches the 5
 * outputs of its tile (the direct kernel confines it to the outputs whose
 * window covers it), as with the 2-D Winograd routes.
 *
 * The transforms below skip zero entries: the loops are unrolled over these
 * constant tables, so each zero test is resolved at compile time. Their order
 * of operations is fixed by the code, so results do not depend on the caller.
 */
#ifndef FC_ROWWINO_H
#define FC_ROWWINO_H

#include "fc_internal.h"

#define FC_RW_M 5 /* outputs per tile */
#define FC_RW_R 5 /* taps */
#define FC_RW_N 9 /* points = input values per tile */

/* clang-format off */
static const float fc_rw_bt[FC_RW_N][FC_RW_N] = {
    {1, 2.0f / 3, -21.0f / 4, -7.0f / 2, 21.0f / 4, 7.0f / 2, -1, -2.0f / 3, 0},
    {0, -2.0f / 15, -2.0f / 9, 43.0f / 90, 17.0f / 18, 11.0f / 45, -2.0f / 9, -4.0f / 45, 0},
    {0, 2.0f / 3, -2.0f / 9, -59.0f / 18, 17.0f / 18, 23.0f / 9, -2.0f / 9, -4.0f / 9, 0},
    {0, 1.0f / 420, 1.0f / 360, -1.0f / 90, -1.0f / 72, 1.0f / 180, 1.0f / 90, 1.0f / 315, 0},
    {0, 1.0f / 60, 1.0f / 360, -4.0f / 45, -1.0f / 72, 17.0f / 180, 1.0f / 90, -1.0f / 45, 0},
    {0, 16.0f / 15, 128.0f / 45, 4.0f / 45, -32.0f / 9, -68.0f / 45, 32.0f / 45, 16.0f / 45, 0},
    {0, -32.0f / 15, 128.0f / 45, 248.0f / 45, -32.0f / 9, -184.0f / 45, 32.0f / 45, 32.0f / 45, 0},
    {0, -16.0f / 105, 0, 4.0f / 5, 0, -4.0f / 5, 0, 16.0f / 105, 0},
    {0, -3.0f / 2, -1, 63.0f / 8, 21.0f / 4, -63.0f / 8, -21.0f / 4, 3.0f / 2, 1},
};
static const float fc_rw_g[FC_RW_N][FC_RW_R] = {
    {1, 0, 0, 0, 0},
    {1, 1, 1, 1, 1},
    {1, -1, 1, -1, 1},
    {1, 2, 4, 8, 16},
    {1, -2, 4, -8, 16},
    {1, 1.0f / 2, 1.0f / 4, 1.0f / 8, 1.0f / 16},
    {1, -1.0f / 2, 1.0f / 4, -1.0f / 8, 1.0f / 16},
    {1, -3.0f / 2, 9.0f / 4, -27.0f / 8, 81.0f / 16},
    {0, 0, 0, 0, 1},
};
static const float fc_rw_at[FC_RW_M][FC_RW_N] = {
    {1, 1, 1, 1, 1, 1, 1, 1, 0},
    {0, 1, -1, 2, -2, 1.0f / 2, -1.0f / 2, -3.0f / 2, 0},
    {0, 1, 1, 4, 4, 1.0f / 4, 1.0f / 4, 9.0f / 4, 0},
    {0, 1, -1, 8, -8, 1.0f / 8, -1.0f / 8, -27.0f / 8, 0},
    {0, 1, 1, 16, 16, 1.0f / 16, 1.0f / 16, 81.0f / 16, 1},
};
/* clang-format on */

/* u[p] = sum_j G[p][j] g[j] for 5 scalar taps g (a weight row), in double and
 * rounded once, as the 2-D routes transform their weights. */
static inline void fc_rw_filter(const float *g, ptrdiff_t g_step, float u[FC_RW_N])
{
    for (int p = 0; p < FC_RW_N; ++p) {
        double s = 0.0;
        for (int j = 0; j < FC_RW_R; ++j) s += (double)fc_rw_g[p][j] * (double)g[j * g_step];
        u[p] = (float)s;
    }
}

#if FC_X86_SIMD
#include <immintrin.h>

/* out[p] = sum_j m[p][j] in[j] over the nonzero m[p][j], left to right; one
 * function per table so that the tests of m resolve at compile time. */
#define FC_RW_APPLY(M, ROWS, COLS, in, out)                                      \
    do {                                                                         \
        _Pragma("GCC unroll 9") for (int p_ = 0; p_ < (ROWS); ++p_)              \
        {                                                                        \
            __m512 s_ = _mm512_setzero_ps();                                     \
            _Pragma("GCC unroll 9") for (int j_ = 0; j_ < (COLS); ++j_) if (M[p_][j_] != 0.0f) \
                s_ = _mm512_fmadd_ps(_mm512_set1_ps(M[p_][j_]), (in)[j_], s_);  \
            (out)[p_] = s_;                                                      \
        }                                                                        \
    } while (0)

/* v = B^T d: 9 input vectors (16 lanes each, e.g. 16 images) to 9 points */
FC_TGT_AVX512 static inline void fc_rw_input_avx512(const __m512 d[FC_RW_N], __m512 v[FC_RW_N])
{
    FC_RW_APPLY(fc_rw_bt, FC_RW_N, FC_RW_N, d, v);
}

/* y = A^T m: 9 point vectors to 5 outputs */
FC_TGT_AVX512 static inline void fc_rw_output_avx512(const __m512 m[FC_RW_N], __m512 y[FC_RW_M])
{
    FC_RW_APPLY(fc_rw_at, FC_RW_M, FC_RW_N, m, y);
}

/* u = G g: 5 tap vectors to 9 points (grad_weight transforms grad_y rows so) */
FC_TGT_AVX512 static inline void fc_rw_filter_avx512(const __m512 g[FC_RW_R], __m512 u[FC_RW_N])
{
    FC_RW_APPLY(fc_rw_g, FC_RW_N, FC_RW_R, g, u);
}
#endif /* FC_X86_SIMD */

#endif /* FC_ROWWINO_H */
