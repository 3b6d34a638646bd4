/*
 * fc_ukernels.c - register-blocked micro-kernels, their tables per SIMD level.
 *
 * The build never uses -march=native: every SIMD kernel carries its own target
 * attribute, and the tables below are chosen by the one SIMD level
 * (fc_simd_dispatch, fc_runtime.c).
 *
 * One kernel family per (level, dtype): MR rows x NV vectors, sized so that the
 * MR*NV accumulators plus the NV B-vectors and one broadcast fit the register
 * file (32 zmm / 16 ymm). Small MR variants exist because conv layers often
 * have few output (or, for grad-input, input) channels: a LeNet conv1 has 6,
 * its grad-input 1; padding those to 8 rows would waste most of the FMAs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_internal.h"

#if FC_X86_SIMD
#include <immintrin.h>

#include "fc_transpose16.h"
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define FC_UNROLL _Pragma("GCC unroll 8")
#elif defined(__clang__)
#define FC_UNROLL _Pragma("unroll")
#else
#define FC_UNROLL
#endif


/*
 * The kernel body, shared by every level and dtype. VT is the vector type, VL
 * its lane count; LOADU/STOREU/SET1/FMADD/ADD/ZERO the operations on it.
 */
#define FC_UKR_BODY(T, VT, VL, MR, NV, LOADU, STOREU, SET1, FMADD, ADD, ZERO)      \
    {                                                                               \
        VT acc_[MR][NV];                                                            \
        FC_UNROLL for (int r = 0; r < MR; ++r)                                      \
            FC_UNROLL for (int v = 0; v < NV; ++v) acc_[r][v] = ZERO;               \
        for (ptrdiff_t k = 0; k < kc; ++k) {                                        \
            const T *bk = b + koff[k];                                              \
            VT bv_[NV];                                                             \
            FC_UNROLL for (int v = 0; v < NV; ++v) bv_[v] = LOADU(bk + v * VL);     \
            FC_UNROLL for (int r = 0; r < MR; ++r) {                                \
                VT ar = SET1(a[r]);                                                 \
                FC_UNROLL for (int v = 0; v < NV; ++v)                              \
                    acc_[r][v] = FMADD(ar, bv_[v], acc_[r][v]);                     \
            }                                                                       \
            a += MR;                                                                \
        }                                                                           \
        if (acc) {                                                                  \
            FC_UNROLL for (int r = 0; r < MR; ++r)                                  \
                FC_UNROLL for (int v = 0; v < NV; ++v) {                            \
                    T *cp = c + r * ldc + v * VL;                                   \
                    STOREU(cp, ADD(LOADU(cp), acc_[r][v]));                         \
                }                                                                   \
        } else {                                                                    \
            FC_UNROLL for (int r = 0; r < MR; ++r)                                  \
                FC_UNROLL for (int v = 0; v < NV; ++v)                              \
                    STOREU(c + r * ldc + v * VL, acc_[r][v]);                       \
        }                                                                           \
    }

#define FC_UKR_SIG(NAME, T)                                                           \
    static void NAME(ptrdiff_t kc, const T *FC_RESTRICT a, const T *FC_RESTRICT b,    \
                     const ptrdiff_t *FC_RESTRICT koff, T *FC_RESTRICT c, ptrdiff_t ldc, \
                     int acc)

/*
 * The same kernel with A read in place from MR rows of a row-major matrix,
 * A[r, k] = a[r * lda + k], instead of from a packed panel. The dense layer's
 * forward multiplies by its weight W (out x in) along W's contiguous axis:
 * packing W into k-major panels would cost a transposing copy of the whole
 * weight on every call, about as much time as the multiply itself; broadcasts
 * straight from MR rows of W are load-port operations that cost nothing extra.
 */
#define FC_UKR_ROWS_BODY(T, VT, VL, MR, NV, LOADU, STOREU, SET1, FMADD, ADD, ZERO) \
    {                                                                               \
        VT acc_[MR][NV];                                                            \
        const T *ar_[MR];                                                           \
        FC_UNROLL for (int r = 0; r < MR; ++r) ar_[r] = a + r * lda;                \
        FC_UNROLL for (int r = 0; r < MR; ++r)                                      \
            FC_UNROLL for (int v = 0; v < NV; ++v) acc_[r][v] = ZERO;               \
        for (ptrdiff_t k = 0; k < kc; ++k) {                                        \
            const T *bk = b + koff[k];                                              \
            VT bv_[NV];                                                             \
            FC_UNROLL for (int v = 0; v < NV; ++v) bv_[v] = LOADU(bk + v * VL);     \
            FC_UNROLL for (int r = 0; r < MR; ++r) {                                \
                VT ar = SET1(ar_[r][k]);                                            \
                FC_UNROLL for (int v = 0; v < NV; ++v)                              \
                    acc_[r][v] = FMADD(ar, bv_[v], acc_[r][v]);                     \
            }                                                                       \
        }                                                                           \
        if (acc) {                                                                  \
            FC_UNROLL for (int r = 0; r < MR; ++r)                                  \
                FC_UNROLL for (int v = 0; v < NV; ++v) {                            \
                    T *cp = c + r * ldc + v * VL;                                   \
                    STOREU(cp, ADD(LOADU(cp), acc_[r][v]));                         \
                }                                                                   \
        } else {                                                                    \
            FC_UNROLL for (int r = 0; r < MR; ++r)                                  \
                FC_UNROLL for (int v = 0; v < NV; ++v)                              \
                    STOREU(c + r * ldc + v * VL, acc_[r][v]);                       \
        }                                                                           \
    }

#define FC_UKR_ROWS_SIG(NAME, T)                                                      \
    static void NAME(ptrdiff_t kc, const T *FC_RESTRICT a, ptrdiff_t lda,             \
                     const T *FC_RESTRICT b, const ptrdiff_t *FC_RESTRICT koff,       \
                     T *FC_RESTRICT c, ptrdiff_t ldc, int acc)

/* Dot kernel body: DMR x DNR vector accumulators, summed to scalars with HSUM. */
#define FC_DOT_BODY(T, VT, VL, DMR, DNR, LOADU, FMADD, ZERO, HSUM)                  \
    {                                                                               \
        VT acc_[DMR][DNR];                                                          \
        FC_UNROLL for (int r = 0; r < DMR; ++r)                                     \
            FC_UNROLL for (int c = 0; c < DNR; ++c) acc_[r][c] = ZERO;              \
        for (int im = 0; im < nimg; ++im) {                                         \
            const T *gp_[DMR];                                                      \
            const T *sp_[DNR];                                                      \
            FC_UNROLL for (int r = 0; r < DMR; ++r) gp_[r] = g[r] + im * gs;        \
            FC_UNROLL for (int c = 0; c < DNR; ++c) sp_[c] = s + im * ss + off[c];  \
            for (ptrdiff_t q = 0; q < len; q += VL) {                               \
                VT gv_[DMR];                                                        \
                FC_UNROLL for (int r = 0; r < DMR; ++r) gv_[r] = LOADU(gp_[r] + q); \
                FC_UNROLL for (int c = 0; c < DNR; ++c) {                           \
                    VT sv = LOADU(sp_[c] + q);                                      \
                    FC_UNROLL for (int r = 0; r < DMR; ++r)                         \
                        acc_[r][c] = FMADD(gv_[r], sv, acc_[r][c]);                 \
                }                                                                   \
            }                                                                       \
        }                                                                           \
        FC_UNROLL for (int r = 0; r < DMR; ++r)                                     \
            FC_UNROLL for (int c = 0; c < DNR; ++c) out[r * ldo + c] += HSUM(acc_[r][c]); \
    }

#define FC_DOT_SIG(NAME, T)                                                         \
    static void NAME(ptrdiff_t len, int nimg, const T *const *g, ptrdiff_t gs,      \
                     const T *s, ptrdiff_t ss, const ptrdiff_t *off, T *out, ptrdiff_t ldo)

/*
 * Single-row kernel over a panel of a panelled weight (fc_linear_fwd_panels):
 * t[0:cols] = sum over q < kc of x[q] * w[q * ldw + j], each element one FMA
 * chain in q order from zero (the chain of every kernel above, for the product
 * x W^T with w = a panel of W^T). A register tile of eight vectors runs down
 * the panel: its rows are adjacent in memory (ldw = the panel width), so the
 * whole panel streams in order, the prefetchers' best case, with no partial
 * sums loaded and stored per row. (Down a plain k-major copy, rows a page
 * apart, the same tile missed the TLB and the prefetchers: 1.7x slower; eight
 * whole rows at a time with the sums in L1 was 1.3x slower than this.) cols
 * is a multiple of the vector length.
 */
#define FC_GEMV_BODY(T, VT, VL, LOADU, STOREU, SET1, FMADD, ZERO)                 \
    {                                                                               \
        ptrdiff_t j = 0;                                                            \
        for (; j + 8 * (VL) <= cols; j += 8 * (VL)) {                               \
            VT a0 = ZERO, a1 = ZERO, a2 = ZERO, a3 = ZERO;                          \
            VT a4 = ZERO, a5 = ZERO, a6 = ZERO, a7 = ZERO;                          \
            const T *r = w + j;                                                     \
            for (ptrdiff_t q = 0; q < kc; ++q, r += ldw) {                          \
                const VT xq = SET1(x[q]);                                           \
                a0 = FMADD(xq, LOADU(r), a0);                                       \
                a1 = FMADD(xq, LOADU(r + (VL)), a1);                                \
                a2 = FMADD(xq, LOADU(r + 2 * (VL)), a2);                            \
                a3 = FMADD(xq, LOADU(r + 3 * (VL)), a3);                            \
                a4 = FMADD(xq, LOADU(r + 4 * (VL)), a4);                            \
                a5 = FMADD(xq, LOADU(r + 5 * (VL)), a5);                            \
                a6 = FMADD(xq, LOADU(r + 6 * (VL)), a6);                            \
                a7 = FMADD(xq, LOADU(r + 7 * (VL)), a7);                            \
            }                                                                       \
            STOREU(t + j, a0);                                                      \
            STOREU(t + j + (VL), a1);                                               \
            STOREU(t + j + 2 * (VL), a2);                                           \
            STOREU(t + j + 3 * (VL), a3);                                           \
            STOREU(t + j + 4 * (VL), a4);                                           \
            STOREU(t + j + 5 * (VL), a5);                                           \
            STOREU(t + j + 6 * (VL), a6);                                           \
            STOREU(t + j + 7 * (VL), a7);                                           \
        }                                                                           \
        for (; j < cols; j += (VL)) { /* a last panel's few columns */              \
            VT a = ZERO;                                                            \
            const T *r = w + j;                                                     \
            for (ptrdiff_t q = 0; q < kc; ++q, r += ldw) a = FMADD(SET1(x[q]), LOADU(r), a); \
            STOREU(t + j, a);                                                       \
        }                                                                           \
    }

#define FC_GEMV_SIG(NAME, T)                                                         \
    static void NAME(ptrdiff_t kc, const T *FC_RESTRICT w, ptrdiff_t ldw,            \
                     const T *FC_RESTRICT x, ptrdiff_t cols, T *FC_RESTRICT t)

/* ---- generic C (any CPU; the compiler may auto-vectorise the v loop) ---- */
#define G_LOADU(p) (*(p))
#define G_STOREU(p, v) (*(p) = (v))
#define G_SET1(x) (x)
#define G_FMADD(a, b, c) ((a) * (b) + (c))
#define G_ADD(a, b) ((a) + (b))

#define FC_DEF_GENERIC(NAME, T, MR, NV)                                            \
    FC_UKR_SIG(NAME, T)                                                             \
    FC_UKR_BODY(T, T, 1, MR, NV, G_LOADU, G_STOREU, G_SET1, G_FMADD, G_ADD, (T)0)

FC_DEF_GENERIC(ukr_gen_f32_1, float, 1, 16)
FC_DEF_GENERIC(ukr_gen_f32_2, float, 2, 16)
FC_DEF_GENERIC(ukr_gen_f32_4, float, 4, 8)
FC_DEF_GENERIC(ukr_gen_f64_1, double, 1, 8)
FC_DEF_GENERIC(ukr_gen_f64_2, double, 2, 8)
FC_DEF_GENERIC(ukr_gen_f64_4, double, 4, 4)
#define FC_DEF_GENERIC_ROWS(NAME, T, MR, NV)                                       \
    FC_UKR_ROWS_SIG(NAME, T)                                                        \
    FC_UKR_ROWS_BODY(T, T, 1, MR, NV, G_LOADU, G_STOREU, G_SET1, G_FMADD, G_ADD, (T)0)
FC_DEF_GENERIC_ROWS(rkr_gen_f32_1, float, 1, 16)
FC_DEF_GENERIC_ROWS(rkr_gen_f32_2, float, 2, 16)
FC_DEF_GENERIC_ROWS(rkr_gen_f32_4, float, 4, 8)
FC_DEF_GENERIC_ROWS(rkr_gen_f64_1, double, 1, 8)
FC_DEF_GENERIC_ROWS(rkr_gen_f64_2, double, 2, 8)
FC_DEF_GENERIC_ROWS(rkr_gen_f64_4, double, 4, 4)
FC_DEF_GENERIC_ROWS(nkr_gen_f32, float, 4, 4)
FC_DEF_GENERIC_ROWS(nkr_gen_f64, double, 4, 4)
FC_GEMV_SIG(gemv_gen_f32, float) FC_GEMV_BODY(float, float, 1, G_LOADU, G_STOREU, G_SET1, G_FMADD, 0.0f)
FC_GEMV_SIG(gemv_gen_f64, double) FC_GEMV_BODY(double, double, 1, G_LOADU, G_STOREU, G_SET1, G_FMADD, 0.0)
#define G_HSUM(v) (v)
FC_DOT_SIG(dot_gen_f32, float) FC_DOT_BODY(float, float, 1, 2, 4, G_LOADU, G_FMADD, 0.0f, G_HSUM)
FC_DOT_SIG(dot5_gen_f32, float) FC_DOT_BODY(float, float, 1, 2, 5, G_LOADU, G_FMADD, 0.0f, G_HSUM)
FC_DOT_SIG(dot_gen_f64, double) FC_DOT_BODY(double, double, 1, 2, 4, G_LOADU, G_FMADD, 0.0, G_HSUM)
FC_DOT_SIG(dot5_gen_f64, double) FC_DOT_BODY(double, double, 1, 2, 5, G_LOADU, G_FMADD, 0.0, G_HSUM)

#if FC_X86_SIMD
/* ---- AVX2 + FMA: 16 ymm registers, <= 12 accumulators ---- */
#define A2_TGT __attribute__((target("avx2,fma")))
#define FC_DEF_AVX2_F32(NAME, MR, NV)                                                  \
    A2_TGT FC_UKR_SIG(NAME, float)                                                      \
    FC_UKR_BODY(float, __m256, 8, MR, NV, _mm256_loadu_ps, _mm256_storeu_ps,            \
                _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps())
#define FC_DEF_AVX2_F64(NAME, MR, NV)                                                  \
    A2_TGT FC_UKR_SIG(NAME, double)                                                     \
    FC_UKR_BODY(double, __m256d, 4, MR, NV, _mm256_loadu_pd, _mm256_storeu_pd,          \
                _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd, _mm256_setzero_pd())
FC_DEF_AVX2_F32(ukr_avx2_f32_1, 1, 4)
FC_DEF_AVX2_F32(ukr_avx2_f32_2, 2, 4)
FC_DEF_AVX2_F32(ukr_avx2_f32_3, 3, 4)
FC_DEF_AVX2_F32(ukr_avx2_f32_4, 4, 3)
FC_DEF_AVX2_F32(ukr_avx2_f32_6, 6, 2)
FC_DEF_AVX2_F64(ukr_avx2_f64_1, 1, 4)
FC_DEF_AVX2_F64(ukr_avx2_f64_2, 2, 4)
FC_DEF_AVX2_F64(ukr_avx2_f64_3, 3, 4)
FC_DEF_AVX2_F64(ukr_avx2_f64_4, 4, 3)
FC_DEF_AVX2_F64(ukr_avx2_f64_6, 6, 2)
#define FC_DEF_AVX2_ROWS_F32(NAME, MR, NV)                                             \
    A2_TGT FC_UKR_ROWS_SIG(NAME, float)                                                 \
    FC_UKR_ROWS_BODY(float, __m256, 8, MR, NV, _mm256_loadu_ps, _mm256_storeu_ps,       \
                     _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps())
#define FC_DEF_AVX2_ROWS_F64(NAME, MR, NV)                                             \
    A2_TGT FC_UKR_ROWS_SIG(NAME, double)                                                \
    FC_UKR_ROWS_BODY(double, __m256d, 4, MR, NV, _mm256_loadu_pd, _mm256_storeu_pd,     \
                     _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd, _mm256_setzero_pd())
FC_DEF_AVX2_ROWS_F32(rkr_avx2_f32_1, 1, 4)
FC_DEF_AVX2_ROWS_F32(rkr_avx2_f32_2, 2, 4)
FC_DEF_AVX2_ROWS_F32(rkr_avx2_f32_3, 3, 4)
FC_DEF_AVX2_ROWS_F32(rkr_avx2_f32_4, 4, 3)
FC_DEF_AVX2_ROWS_F32(rkr_avx2_f32_6, 6, 2)
FC_DEF_AVX2_ROWS_F64(rkr_avx2_f64_1, 1, 4)
FC_DEF_AVX2_ROWS_F64(rkr_avx2_f64_2, 2, 4)
FC_DEF_AVX2_ROWS_F64(rkr_avx2_f64_3, 3, 4)
FC_DEF_AVX2_ROWS_F64(rkr_avx2_f64_4, 4, 3)
FC_DEF_AVX2_ROWS_F64(rkr_avx2_f64_6, 6, 2)
FC_DEF_AVX2_ROWS_F32(nkr_avx2_f32, 8, 1)
FC_DEF_AVX2_ROWS_F64(nkr_avx2_f64, 8, 1)
A2_TGT FC_GEMV_SIG(gemv_avx2_f32, float)
FC_GEMV_BODY(float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
             _mm256_fmadd_ps, _mm256_setzero_ps())
A2_TGT FC_GEMV_SIG(gemv_avx2_f64, double)
FC_GEMV_BODY(double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd,
             _mm256_fmadd_pd, _mm256_setzero_pd())
A2_TGT static inline float hsum_avx2_f32(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}
A2_TGT static inline double hsum_avx2_f64(__m256d v)
{
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    a = _mm_add_sd(a, _mm_unpackhi_pd(a, a));
    return _mm_cvtsd_f64(a);
}
A2_TGT FC_DOT_SIG(dot_avx2_f32, float)
FC_DOT_BODY(float, __m256, 8, 3, 4, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps(),
            hsum_avx2_f32)
A2_TGT FC_DOT_SIG(dot_avx2_f64, double)
FC_DOT_BODY(double, __m256d, 4, 3, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_setzero_pd(),
            hsum_avx2_f64)
A2_TGT FC_DOT_SIG(dot5_avx2_f32, float)
FC_DOT_BODY(float, __m256, 8, 3, 5, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps(),
            hsum_avx2_f32)
A2_TGT FC_DOT_SIG(dot5_avx2_f64, double)
FC_DOT_BODY(double, __m256d, 4, 3, 5, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_setzero_pd(),
            hsum_avx2_f64)

/* ---- AVX-512F: 32 zmm registers, <= 24 accumulators ---- */
#define A5_TGT __attribute__((target("avx512f,avx2,fma")))
#define FC_DEF_AVX512_F32(NAME, MR, NV)                                                \
    A5_TGT FC_UKR_SIG(NAME, float)                                                      \
    FC_UKR_BODY(float, __m512, 16, MR, NV, _mm512_loadu_ps, _mm512_storeu_ps,           \
                _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps())
#define FC_DEF_AVX512_F64(NAME, MR, NV)                                                \
    A5_TGT FC_UKR_SIG(NAME, double)                                                     \
    FC_UKR_BODY(double, __m512d, 8, MR, NV, _mm512_loadu_pd, _mm512_storeu_pd,          \
                _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, _mm512_setzero_pd())
FC_DEF_AVX512_F32(ukr_avx512_f32_1, 1, 8)
FC_DEF_AVX512_F32(ukr_avx512_f32_2, 2, 8)
FC_DEF_AVX512_F32(ukr_avx512_f32_3, 3, 8)
FC_DEF_AVX512_F32(ukr_avx512_f32_4, 4, 6)
FC_DEF_AVX512_F32(ukr_avx512_f32_6, 6, 4)
FC_DEF_AVX512_F32(ukr_avx512_f32_8, 8, 3)
FC_DEF_AVX512_F64(ukr_avx512_f64_1, 1, 8)
FC_DEF_AVX512_F64(ukr_avx512_f64_2, 2, 8)
FC_DEF_AVX512_F64(ukr_avx512_f64_3, 3, 8)
FC_DEF_AVX512_F64(ukr_avx512_f64_4, 4, 6)
FC_DEF_AVX512_F64(ukr_avx512_f64_6, 6, 4)
FC_DEF_AVX512_F64(ukr_avx512_f64_8, 8, 3)
#define FC_DEF_AVX512_ROWS_F32(NAME, MR, NV)                                           \
    A5_TGT FC_UKR_ROWS_SIG(NAME, float)                                                 \
    FC_UKR_ROWS_BODY(float, __m512, 16, MR, NV, _mm512_loadu_ps, _mm512_storeu_ps,      \
                     _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps())
#define FC_DEF_AVX512_ROWS_F64(NAME, MR, NV)                                           \
    A5_TGT FC_UKR_ROWS_SIG(NAME, double)                                                \
    FC_UKR_ROWS_BODY(double, __m512d, 8, MR, NV, _mm512_loadu_pd, _mm512_storeu_pd,     \
                     _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, _mm512_setzero_pd())
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_1, 1, 8)
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_2, 2, 8)
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_3, 3, 8)
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_4, 4, 6)
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_6, 6, 4)
FC_DEF_AVX512_ROWS_F32(rkr_avx512_f32_8, 8, 3)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_1, 1, 8)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_2, 2, 8)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_3, 3, 8)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_4, 4, 6)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_6, 6, 4)
FC_DEF_AVX512_ROWS_F64(rkr_avx512_f64_8, 8, 3)
FC_DEF_AVX512_ROWS_F32(nkr_avx512_f32, 8, 1)
FC_DEF_AVX512_ROWS_F64(nkr_avx512_f64, 8, 1)

A5_TGT FC_GEMV_SIG(gemv_avx512_f32, float)
FC_GEMV_BODY(float, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
             _mm512_fmadd_ps, _mm512_setzero_ps())
A5_TGT FC_GEMV_SIG(gemv_avx512_f64, double)
FC_GEMV_BODY(double, __m512d, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd,
             _mm512_fmadd_pd, _mm512_setzero_pd())

/*
 * The row-A kernel for ONE column (16 rows x 1): the forward of a single
 * sample. The one-vector kernels broadcast each weight and use one lane in
 * 16; here 16 weights rows x 16 k are loaded whole and transposed in
 * registers, so the lanes are 16 rows. Each element is still one FMA chain in
 * k order from zero, then stored or added: the bits of every other kernel.
 */
A5_TGT static void tkr_avx512_f32(ptrdiff_t kc, const float *FC_RESTRICT a, ptrdiff_t lda,
                                  const float *FC_RESTRICT b, const ptrdiff_t *FC_RESTRICT koff,
                                  float *FC_RESTRICT c, ptrdiff_t ldc, int acc)
{
    __m512 s = _mm512_setzero_ps();
    for (ptrdiff_t q0 = 0; q0 < kc; q0 += 16) {
        const int kr = (int)FC_MIN((ptrdiff_t)16, kc - q0);
        const __mmask16 m = (__mmask16)((1u << kr) - 1u);
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(m, a + i * lda + q0);
        fc_transpose16_avx512(r);
        for (int q = 0; q < kr; ++q)
            s = _mm512_fmadd_ps(r[q], _mm512_set1_ps(b[koff[q0 + q]]), s);
    }
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                              11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)ldc));
    if (acc) s = _mm512_add_ps(_mm512_i32gather_ps(rows, c, 4), s);
    _mm512_i32scatter_ps(c, rows, s, 4);
}
A5_TGT FC_DOT_SIG(dot_avx512_f32, float)
FC_DOT_BODY(float, __m512, 16, 4, 6, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_setzero_ps(),
            _mm512_reduce_add_ps)
A5_TGT FC_DOT_SIG(dot_avx512_f64, double)
FC_DOT_BODY(double, __m512d, 8, 4, 6, _mm512_loadu_pd, _mm512_fmadd_pd, _mm512_setzero_pd(),
            _mm512_reduce_add_pd)
A5_TGT FC_DOT_SIG(dot5_avx512_f32, float)
FC_DOT_BODY(float, __m512, 16, 4, 5, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_setzero_ps(),
            _mm512_reduce_add_ps)
A5_TGT FC_DOT_SIG(dot5_avx512_f64, double)
FC_DOT_BODY(double, __m512d, 8, 4, 5, _mm512_loadu_pd, _mm512_fmadd_pd, _mm512_setzero_pd(),
            _mm512_reduce_add_pd)
#endif /* FC_X86_SIMD */

static const fc_kernels_f32 K_GEN_F32 = {
    {1, 2, 4, 0, 0, 0}, {16, 16, 8, 0, 0, 0},
    {ukr_gen_f32_1, ukr_gen_f32_2, ukr_gen_f32_4, 0, 0, 0}, 2, 4, 1, dot_gen_f32, dot5_gen_f32};
static const fc_kernels_f64 K_GEN_F64 = {
    {1, 2, 4, 0, 0, 0}, {8, 8, 4, 0, 0, 0},
    {ukr_gen_f64_1, ukr_gen_f64_2, ukr_gen_f64_4, 0, 0, 0}, 2, 4, 1, dot_gen_f64, dot5_gen_f64};
#if FC_X86_SIMD
static const fc_kernels_f32 K_AVX2_F32 = {
    {1, 2, 3, 4, 6, 0}, {32, 32, 32, 24, 16, 0},
    {ukr_avx2_f32_1, ukr_avx2_f32_2, ukr_avx2_f32_3, ukr_avx2_f32_4, ukr_avx2_f32_6, 0},
    3, 4, 8, dot_avx2_f32, dot5_avx2_f32};
static const fc_kernels_f64 K_AVX2_F64 = {
    {1, 2, 3, 4, 6, 0}, {16, 16, 16, 12, 8, 0},
    {ukr_avx2_f64_1, ukr_avx2_f64_2, ukr_avx2_f64_3, ukr_avx2_f64_4, ukr_avx2_f64_6, 0},
    3, 4, 4, dot_avx2_f64, dot5_avx2_f64};
static const fc_kernels_f32 K_AVX512_F32 = {
    {1, 2, 3, 4, 6, 8}, {128, 128, 128, 96, 64, 48},
    {ukr_avx512_f32_1, ukr_avx512_f32_2, ukr_avx512_f32_3, ukr_avx512_f32_4,
     ukr_avx512_f32_6, ukr_avx512_f32_8},
    4, 6, 16, dot_avx512_f32, dot5_avx512_f32};
static const fc_kernels_f64 K_AVX512_F64 = {
    {1, 2, 3, 4, 6, 8}, {64, 64, 64, 48, 32, 24},
    {ukr_avx512_f64_1, ukr_avx512_f64_2, ukr_avx512_f64_3, ukr_avx512_f64_4,
     ukr_avx512_f64_6, ukr_avx512_f64_8},
    4, 6, 8, dot_avx512_f64, dot5_avx512_f64};
#endif

const fc_kernels_f32 *fc_get_kernels_f32(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return &K_AVX512_F32;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return &K_AVX2_F32;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return &K_GEN_F32;
}

const fc_kernels_f64 *fc_get_kernels_f64(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return &K_AVX512_F64;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return &K_AVX2_F64;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return &K_GEN_F64;
}

/* Row-A kernels, slot for slot with the packed kernels of the same level. */
static const fc_ukr_rows_f32 R_GEN_F32[FC_NUM_MR] = {rkr_gen_f32_1, rkr_gen_f32_2, rkr_gen_f32_4,
                                                     0, 0, 0};
static const fc_ukr_rows_f64 R_GEN_F64[FC_NUM_MR] = {rkr_gen_f64_1, rkr_gen_f64_2, rkr_gen_f64_4,
                                                     0, 0, 0};
#if FC_X86_SIMD
static const fc_ukr_rows_f32 R_AVX2_F32[FC_NUM_MR] = {
    rkr_avx2_f32_1, rkr_avx2_f32_2, rkr_avx2_f32_3, rkr_avx2_f32_4, rkr_avx2_f32_6, 0};
static const fc_ukr_rows_f64 R_AVX2_F64[FC_NUM_MR] = {
    rkr_avx2_f64_1, rkr_avx2_f64_2, rkr_avx2_f64_3, rkr_avx2_f64_4, rkr_avx2_f64_6, 0};
static const fc_ukr_rows_f32 R_AVX512_F32[FC_NUM_MR] = {
    rkr_avx512_f32_1, rkr_avx512_f32_2, rkr_avx512_f32_3, rkr_avx512_f32_4, rkr_avx512_f32_6,
    rkr_avx512_f32_8};
static const fc_ukr_rows_f64 R_AVX512_F64[FC_NUM_MR] = {
    rkr_avx512_f64_1, rkr_avx512_f64_2, rkr_avx512_f64_3, rkr_avx512_f64_4, rkr_avx512_f64_6,
    rkr_avx512_f64_8};
#endif

const fc_ukr_rows_f32 *fc_get_row_kernels_f32(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return R_AVX512_F32;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return R_AVX2_F32;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return R_GEN_F32;
}

const fc_ukr_rows_f64 *fc_get_row_kernels_f64(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return R_AVX512_F64;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return R_AVX2_F64;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return R_GEN_F64;
}

/*
 * Narrow row-A kernels: one vector of columns, for dense-layer products with
 * only a few columns (the forward of a batch of a few samples), where the
 * slots above would pad the batch to 48-128 columns. Same FMA chain per
 * element as every other kernel, so the choice does not change a bit.
 */
fc_narrow_rows_f32 fc_get_narrow_rows_f32(void)
{
    fc_narrow_rows_f32 nk = {4, 4, nkr_gen_f32, 0, NULL};
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512:
        fc_simd_ran(FC_SIMD_AVX512);
        nk.mr = 8; nk.nr = 16; nk.fn = nkr_avx512_f32;
        nk.mr1 = 16; nk.fn1 = tkr_avx512_f32;
        break;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); nk.mr = 8; nk.nr = 8; nk.fn = nkr_avx2_f32; break;
    default: fc_simd_ran(FC_SIMD_GENERIC); break;
    }
#else
    fc_simd_ran(FC_SIMD_GENERIC);
#endif
    return nk;
}

fc_narrow_rows_f64 fc_get_narrow_rows_f64(void)
{
    fc_narrow_rows_f64 nk = {4, 4, nkr_gen_f64, 0, NULL};
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); nk.mr = 8; nk.nr = 8; nk.fn = nkr_avx512_f64; break;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); nk.mr = 8; nk.nr = 4; nk.fn = nkr_avx2_f64; break;
    default: fc_simd_ran(FC_SIMD_GENERIC); break;
    }
#else
    fc_simd_ran(FC_SIMD_GENERIC);
#endif
    return nk;
}

/* The single-row panel kernel of the current SIMD level (FC_GEMV_BODY). */
fc_gemv_f32 fc_get_gemv_f32(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return gemv_avx512_f32;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return gemv_avx2_f32;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return gemv_gen_f32;
}

fc_gemv_f64 fc_get_gemv_f64(void)
{
#if FC_X86_SIMD
    switch (fc_simd_dispatch()) {
    case FC_SIMD_AVX512: fc_simd_ran(FC_SIMD_AVX512); return gemv_avx512_f64;
    case FC_SIMD_AVX2: fc_simd_ran(FC_SIMD_AVX2); return gemv_avx2_f64;
    default: break;
    }
#endif
    fc_simd_ran(FC_SIMD_GENERIC);
    return gemv_gen_f64;
}
