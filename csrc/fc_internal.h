/* fc_internal.h - shared between the fastconv C sources; not installed. */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
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

/*
 * Timing of one parallel region for the team controller (csrc/fc_team.c):
 *
 *     fc_team tm;
 *     fc_team_begin(&tm, nt);
 *     #pragma omp parallel num_threads(nt) if (nt > 1)
 *     {
 *         fc_team_arrive(&tm);
 *         ... the work; a worksharing loop here gets `nowait` ...
 *         fc_team_done(&tm);
 *     }
 *     fc_team_end(&tm);
 *
 * Helpers stamp how late they arrived; the caller (thread 0) stamps the end of
 * its own share, so fc_team_end knows how long it then waited at the barrier.
 * The caller also reads its thread's CPU clock at both ends: the region's wall
 * time it was not on a core is time it was descheduled (by the other process,
 * or by its own helper spinning on the only free core), which no stamp inside
 * the region can see. Two clock reads and one atomic per thread, and for the
 * caller of a real team one CPU-clock read (a system call, ~0.4 us) as its
 * share starts plus a second one only when the region lasted longer than
 * FC_LATE_NS: noise against a region's >= 20 us (LeNet-5 training: 15 regions
 * in a 1.4 ms step). Until its share starts, the caller only wakes helpers: the
 * wall time to that point counts as waiting when it exceeds FC_LATE_NS (a woken
 * helper can preempt the caller there).
 */
typedef struct {
    int64_t t0;   /* caller's clock when the region opened, ns; 0 = not timed */
    int64_t start; /* caller's own arrival (its share's start) after t0, ns */
    int64_t cpu0; /* caller's thread CPU clock then, ns; < 0 = not read */
    int64_t late; /* latest helper arrival after t0, ns */
    int64_t work; /* caller's own share: t0 to its done stamp, ns */
    int team;     /* threads the region really ran with */
    int nlate;    /* helpers that arrived more than FC_LATE_NS late */
} fc_team;

/* A helper wake-up on a free core takes microseconds to a few tens of them;
 * a descheduled one is a scheduler time slice late (1-10 ms). */
#define FC_LATE_NS 300000

int64_t fc_team_now(void);
int64_t fc_team_thread_cpu(void); /* calling thread's CPU time, ns; -1 = no such clock */
/* The team for one region inside a call that fc_threads_for already sized:
 * one thread when the region's own work (multiply-adds or elements) is below
 * FC_MIN_PARALLEL_WORK. A call big enough for a team can have a step too small
 * for one (LeNet-5's conv2 at batch 1: a 2 us padded copy of 1,176 floats,
 * whose helper then spun on the core the caller needed). */
static inline int fc_team_for(int nt, double work)
{
    return work < FC_MIN_PARALLEL_WORK ? 1 : nt;
}
void fc_team_begin(fc_team *tm, int nt);
void fc_team_end(fc_team *tm);
int fc_team_was_used(void); /* some region ran with > 1 thread (fork rule) */
void fc_team_atfork_child(void);

static inline void fc_team_arrive(fc_team *tm)
{
#if FC_HAVE_OPENMP
    if (tm->t0 == 0) return;
    if (omp_get_thread_num() == 0) {
        tm->team = omp_get_num_threads();
        if (tm->team > 1) { /* a system call: only for a region that really has a team */
            tm->start = fc_team_now() - tm->t0;
            tm->cpu0 = fc_team_thread_cpu();
        }
        return;
    }
    const int64_t late = fc_team_now() - tm->t0;
#if defined(__GNUC__) || defined(__clang__)
    int64_t seen = __atomic_load_n(&tm->late, __ATOMIC_RELAXED);
    while (late > seen && !__atomic_compare_exchange_n(&tm->late, &seen, late, 1,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    if (late > FC_LATE_NS) __atomic_fetch_add(&tm->nlate, 1, __ATOMIC_RELAXED);
#else
#pragma omp critical(fc_team_late)
    {
        if (late > tm->late) tm->late = late;
        if (late > FC_LATE_NS) ++tm->nlate;
    }
#endif
#else
    (void)tm;
#endif
}

static inline void fc_team_done(fc_team *tm)
{
#if FC_HAVE_OPENMP
    if (tm->t0 != 0 && omp_get_thread_num() == 0) tm->work = fc_team_now() - tm->t0;
#else
    (void)tm;
#endif
}

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
 * One SIMD dispatch for every vector path. fc_simd_dispatch() returns the level
 * in use (fc_runtime.c); the code that runs at a level calls fc_simd_ran(level)
 * (the wrappers below, the table getters, the optimiser and pooling branches),
 * so tests see which variant really ran, not only which was asked for. Micro-kernels come in tables per
 * level (fc_get_kernels_*); a loop written once in C is compiled per level with
 *
 *     FC_SIMD_PROC(name, (params), (args))
 *     {
 *         body
 *     }
 *
 * which defines name_body (always inlined) and the wrappers name_avx512,
 * name_avx2 (the body compiled for those instruction sets: the compiler
 * vectorises it wider) and name_generic (baseline x86-64 / any CPU), and
 * name(params), which calls the one of the current level. The loops given
 * this treatment are exact on any ISA (selects, additions in a fixed order per
 * element; the build never contracts a*b+c), so every level gives the same
 * bits; FC_SIMD_CALL is the dispatch alone, for a path whose generic variant
 * is separate code (the Winograd input transform).
 */
#define FC_CAT_(a, b) a##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#if defined(__GNUC__) || defined(__clang__)
#define FC_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define FC_ALWAYS_INLINE static inline
#endif

/* Read inline on every dispatch (a call per row of a pooling tap would cost
 * a few per cent): the level and the record of fc_runtime.c. */
#if defined(__GNUC__) || defined(__clang__)
#define FC_HIDDEN __attribute__((visibility("hidden"))) /* no GOT load per dispatch */
#else
#define FC_HIDDEN
#endif
extern FC_HIDDEN int fc_g_simd_level; /* -1 until chosen */
extern FC_HIDDEN int fc_g_simd_used;
void fc_simd_note(int level);
#if defined(__GNUC__) || defined(__clang__)
#define FC_LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#else
#define FC_LOAD_RELAXED(p) (*(volatile int *)(p))
#endif
/* the level to run at (fc_simd_level) */
static inline int fc_simd_dispatch(void)
{
    const int lv = FC_LOAD_RELAXED(&fc_g_simd_level);
    return lv >= 0 ? lv : fc_simd_level();
}
/* A vector path of that level is running: noted for tests (set once per level).
 * Inline, with no call: a call would give every small variant a stack frame,
 * a measurable cost for loops run once per row. */
static inline void fc_simd_ran(int level)
{
#if defined(__GNUC__) || defined(__clang__)
    if (__builtin_expect(!(FC_LOAD_RELAXED(&fc_g_simd_used) & (1 << level)), 0))
        __atomic_fetch_or(&fc_g_simd_used, 1 << level, __ATOMIC_RELAXED);
#else
    if (!(fc_g_simd_used & (1 << level))) fc_simd_note(level);
#endif
}

#if FC_X86_SIMD
#define FC_TGT_AVX2 __attribute__((target("avx2")))
#define FC_TGT_AVX512 __attribute__((target("avx512f,avx2")))
#define FC_SIMD_CALL(NAME, ARGS)                                                      \
    do {                                                                              \
        switch (fc_simd_dispatch()) {                                                 \
        case FC_SIMD_AVX512: FC_CAT(NAME, _avx512) ARGS; break;                       \
        case FC_SIMD_AVX2: FC_CAT(NAME, _avx2) ARGS; break;                           \
        default: FC_CAT(NAME, _generic) ARGS; break;                                  \
        }                                                                             \
    } while (0)
#define FC_SIMD_PROC(NAME, PARAMS, ARGS)                                              \
    FC_ALWAYS_INLINE void FC_CAT(NAME, _body) PARAMS;                                 \
    FC_TGT_AVX512 static void FC_CAT(NAME, _avx512) PARAMS                            \
    {                                                                                 \
        fc_simd_ran(FC_SIMD_AVX512);                                                  \
        FC_CAT(NAME, _body) ARGS;                                                     \
    }                                                                                 \
    FC_TGT_AVX2 static void FC_CAT(NAME, _avx2) PARAMS                                \
    {                                                                                 \
        fc_simd_ran(FC_SIMD_AVX2);                                                    \
        FC_CAT(NAME, _body) ARGS;                                                     \
    }                                                                                 \
    static void FC_CAT(NAME, _generic) PARAMS                                         \
    {                                                                                 \
        fc_simd_ran(FC_SIMD_GENERIC);                                                 \
        FC_CAT(NAME, _body) ARGS;                                                     \
    }                                                                                 \
    static inline void NAME PARAMS { FC_SIMD_CALL(NAME, ARGS); }                      \
    FC_ALWAYS_INLINE void FC_CAT(NAME, _body) PARAMS
#else
#define FC_TGT_AVX2
#define FC_TGT_AVX512
#define FC_SIMD_CALL(NAME, ARGS)                                                      \
    do {                                                                              \
        FC_CAT(NAME, _generic) ARGS;                                                  \
    } while (0)
#define FC_SIMD_PROC(NAME, PARAMS, ARGS)                                              \
    FC_ALWAYS_INLINE void FC_CAT(NAME, _body) PARAMS;                                 \
    static void FC_CAT(NAME, _generic) PARAMS                                         \
    {                                                                                 \
        fc_simd_ran(FC_SIMD_GENERIC);                                                 \
        FC_CAT(NAME, _body) ARGS;                                                     \
    }                                                                                 \
    static void NAME PARAMS { FC_SIMD_CALL(NAME, ARGS); }                             \
    FC_ALWAYS_INLINE void FC_CAT(NAME, _body) PARAMS
#endif

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FC_CEILDIV(a, b) (((a) + (b) - 1) / (b))
#define FC_ROUNDUP(a, b) (FC_CEILDIV(a, b) * (b))

/*
 * a * b for a scratch size: sets *bad (and returns 0) if either is negative or
 * the product passes PTRDIFF_MAX, so a size derived from a stride, window or
 * padding can never wrap into a small allocation that is then overrun.
 * functional.py bounds every geometry first; this is the second line.
 */
static inline size_t fc_size_mul(ptrdiff_t a, ptrdiff_t b, int *bad)
{
    ptrdiff_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) {
        *bad = 1;
        return 0;
    }
    return (size_t)r;
}

/* Multiply-adds of a direct convolution pass (all three have the same count):
 * the work fc_threads_for weighs against the cost of waking a team. */
static inline double fc_conv_work(const fc_conv_geom *g)
{
    return (double)g->n * g->k * g->ho * g->wo * (g->c / g->groups) * g->kh * g->kw;
}

/* The forward pass's multiply-adds per unit of fc_threads_for's work: they are
 * vectorised, about five to one. Measured on LeNet-5's conv2 at batch 1 (240,000
 * multiply-adds, ~3 us on one core): a team was 4% slower than one thread on an
 * idle machine, and far slower when its helper had to be woken on a busy one.
 * (The backward passes keep one to one: their tests and routes were measured so.) */
#define FC_CONV_FWD_MACS_PER_WORK 5.0

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
/* t[0:cols] = x[0:kc] . w[0:kc, 0:cols] (row stride ldw: a weight panel's width),
 * one FMA chain per element in k order from zero; cols a multiple of 16
 * (fc_ukernels.c, FC_GEMV_BODY). */
typedef void (*fc_gemv_f32)(ptrdiff_t kc, const float *w, ptrdiff_t ldw, const float *x,
                            ptrdiff_t cols, float *t);
typedef void (*fc_gemv_f64)(ptrdiff_t kc, const double *w, ptrdiff_t ldw, const double *x,
                            ptrdiff_t cols, double *t);
fc_gemv_f32 fc_get_gemv_f32(void);
fc_gemv_f64 fc_get_gemv_f64(void);

/* 64-byte aligned scratch; free with fc_free. NULL on failure or n == 0. */
void *fc_malloc(size_t nbytes);
void fc_free(void *p);
void fc_scratch_atfork_child(void);

/* One task of fc_scratch_run: task t with the running thread's scratch buf. */
typedef void (*fc_scratch_task_fn)(const void *ctx, ptrdiff_t t, float *buf);

/*
 * Tasks [t0, t1) on a team of nt threads (static schedule), each thread with
 * its own scratch of `scratch` bytes, under the team protocol (fc_team_*).
 * A task owns its outputs, so which thread runs it changes no bit.
 * FC_ENOMEM if a thread could not get its scratch (its tasks are skipped).
 */
static int fc_scratch_run(ptrdiff_t t0, ptrdiff_t t1, int nt, size_t scratch,
                          fc_scratch_task_fn task, const void *ctx)
{
    int failed = 0;
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
        for (t = t0; t < t1; ++t)
            if (buf) task(ctx, t, buf);
        fc_free(buf);
        fc_team_done(&tm);
    }
    fc_team_end(&tm);
    return failed ? FC_ENOMEM : FC_OK;
}

#endif /* FC_INTERNAL_H */
