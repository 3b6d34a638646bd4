/* fc_internal.h - shared between the fastconv C sources; not installed. */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fastconv.h"

#ifndef FC_HAVE_OPENMP
#define FC_HAVE_OPENMP 0
#endif
#if FC_HAVE_OPENMP
#include <omp.h>
#define FC_THREAD_ID() omp_get_thread_num()
#else
#define FC_THREAD_ID() 0
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FC_X86_SIMD 1
#else
#define FC_X86_SIMD 0
#endif

#if defined(_MSC_VER)
#define FC_RESTRICT __restrict
#else
#define FC_RESTRICT __restrict__
#endif

/*
 * Auxiliary loops (pool taps, ReLU) whose results are exact on any ISA (selects,
 * additions in a fixed order per element) get AVX-512 / AVX2 clones chosen by
 * the loader (GCC target_clones, an ifunc); the baseline x86-64 build alone
 * would vectorise them with 16-byte SSE2 only.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FC_CLONES
#endif

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FC_CEILDIV(a, b) (((a) + (b) - 1) / (b))
#define FC_ROUNDUP(a, b) (FC_CEILDIV(a, b) * (b))

/*
 * Register-blocked micro-kernel:
 *   C[0:MR, 0:NR] (row stride ldc)  (=  or +=)  sum_k A[k, 0:MR] * B_k[0:NR]
 * A is packed k-major (MR values per k); row k of B is the NR contiguous values
 * at b + koff[k] (unaligned). The offset table lets one kernel read an implicit
 * im2col matrix straight out of a padded input (forward, grad-input) or a
 * packed patch matrix (grad-weight). Each C element is a chain of FMAs in k
 * order, so the result does not depend on how the caller splits the columns.
 */
#define FC_NUM_MR 6 /* kernels per (SIMD level, dtype): MR in fc_mr_values */
typedef void (*fc_ukr_f32)(ptrdiff_t kc, const float *a, const float *b,
                           const ptrdiff_t *koff, float *c, ptrdiff_t ldc, int acc);
typedef void (*fc_ukr_f64)(ptrdiff_t kc, const double *a, const double *b,
                           const ptrdiff_t *koff, double *c, ptrdiff_t ldc, int acc);

/*
 * Dot-product kernel for small grad-weight problems:
 *   out[r * ldo + c] += sum_{i < nimg} sum_{q < len} g[r] [i*gs + q] * s[i*ss + q + off[c]]
 * for r < DMR, c < DNR; len is a multiple of the vector width. The vector
 * accumulators live in registers across all images; lanes are summed once.
 */
typedef void (*fc_dot_f32)(ptrdiff_t len, int nimg, const float *const *g, ptrdiff_t gs,
                           const float *s, ptrdiff_t ss, const ptrdiff_t *off, float *out,
                           ptrdiff_t ldo);
typedef void (*fc_dot_f64)(ptrdiff_t len, int nimg, const double *const *g, ptrdiff_t gs,
                           const double *s, ptrdiff_t ss, const ptrdiff_t *off, double *out,
                           ptrdiff_t ldo);

typedef struct {
    int mr[FC_NUM_MR];        /* ascending rows per kernel; 0 = slot unused */
    int nr[FC_NUM_MR];        /* columns per kernel */
    fc_ukr_f32 ukr[FC_NUM_MR];
    int dmr, dnr, dvl;        /* dot kernel: rows, offsets, vector width */
    fc_dot_f32 dot;
    fc_dot_f32 dot5;          /* the same with 5 offsets (5x5 taps tile exactly) */
} fc_kernels_f32;

typedef struct {
    int mr[FC_NUM_MR];
    int nr[FC_NUM_MR];
    fc_ukr_f64 ukr[FC_NUM_MR];
    int dmr, dnr, dvl;
    fc_dot_f64 dot;
    fc_dot_f64 dot5;
} fc_kernels_f64;

const fc_kernels_f32 *fc_get_kernels_f32(void);
const fc_kernels_f64 *fc_get_kernels_f64(void);

/*
 * Row-A variant of the micro-kernel (dense-layer GEMMs, csrc/fc_gemm.c):
 *   C[0:MR, 0:NR] (=  or +=)  sum_k a[r * lda + k] * B_k[0:NR]
 * A read in place from MR rows of a row-major matrix. The table returned for
 * the current SIMD level is indexed by the same slots as fc_kernels_*.
 */
typedef void (*fc_ukr_rows_f32)(ptrdiff_t kc, const float *a, ptrdiff_t lda, const float *b,
                                const ptrdiff_t *koff, float *c, ptrdiff_t ldc, int acc);
typedef void (*fc_ukr_rows_f64)(ptrdiff_t kc, const double *a, ptrdiff_t lda, const double *b,
                                const ptrdiff_t *koff, double *c, ptrdiff_t ldc, int acc);
const fc_ukr_rows_f32 *fc_get_row_kernels_f32(void);
const fc_ukr_rows_f64 *fc_get_row_kernels_f64(void);
/* A row-A kernel of one vector of columns (mr x nr) for products with few columns,
 * and (fn1, when not NULL) one of mr1 rows x 1 column for a single column. */
typedef struct { int mr, nr; fc_ukr_rows_f32 fn; int mr1; fc_ukr_rows_f32 fn1; } fc_narrow_rows_f32;
typedef struct { int mr, nr; fc_ukr_rows_f64 fn; int mr1; fc_ukr_rows_f64 fn1; } fc_narrow_rows_f64;
fc_narrow_rows_f32 fc_get_narrow_rows_f32(void);
fc_narrow_rows_f64 fc_get_narrow_rows_f64(void);

/* 64-byte aligned scratch; free with fc_free. NULL on failure or n == 0. */
void *fc_malloc(size_t nbytes);
void fc_free(void *p);

#endif /* FC_INTERNAL_H */
