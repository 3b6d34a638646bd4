/*
 * fastconv.h - the C kernels behind fastconv (public header).
 *
 * Conventions
 *   - NCHW activations, OIHW weights (O = out channels, I = in channels / groups),
 *     all arrays C-contiguous. The caller validates shapes; nothing here checks.
 *   - Each kernel comes as an _f32 / _f64 pair. Arguments: const inputs first,
 *     then the geometry and thread count, outputs last (marked OUT).
 *   - Every offset and size is ptrdiff_t: tensors pass 2**31 elements.
 *   - Results are bitwise identical for any nthreads (fixed work partition,
 *     fixed reduction order), for a given SIMD level.
 *   - Kernels return 0 on success, FC_ENOMEM when a scratch allocation failed,
 *     FC_EINDEX when max-pool indices were out of range (nothing written for them).
 *
 * Glossary (the words used in C names and comments; docs/design.md maps the
 * public functions to these files)
 *   fwd           forward pass.
 *   bwd           the whole backward of an op (pooling, ReLU, the dense layer).
 *   grad_input    gradient with respect to the input (x); grad_weight: to the
 *                 weight (and bias). Conv's backward is these two passes
 *                 (Cython: conv2d_grad_input / conv2d_grad_weight).
 *   x, y, w, b    input, output, weight, bias; gx, gy, gw, gb their gradients.
 *   n c h w       batch, channels, height, width of the input; k = output
 *                 channels; kh kw kernel; ho wo output; sh sw stride; ph pw
 *                 padding before (top, left), ph_end pw_end after (bottom,
 *                 right); dh dw dilation; G / groups; cg, mg channels per group.
 *   route         one algorithm for a pass: direct implicit GEMM, col2im, dot
 *                 (grad_weight), packed (grad_weight), Winograd ("wino").
 *   job / task    a job is one implicit GEMM (output rows x a column grid); a
 *                 task is the unit of parallel work (an image x column block).
 *   mr nr kc      micro-kernel rows, columns, reduction block; slot = one
 *                 kernel of a table (fc_kernels_*); panel = MR packed rows of A.
 *   chunk         a fixed run of images or pixel blocks with its own partial
 *                 sums, merged in chunk order (the thread count never matters).
 *   scratch       temporary memory from fc_malloc (cached, fc_scratch.c);
 *                 "pool" only ever means pooling.
 *   level         SIMD level (generic / avx2 / avx512), one for the process.
 */
#ifndef FASTCONV_H
#define FASTCONV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_OK 0
#define FC_ENOMEM (-1)
#define FC_EINDEX (-2)

/* SIMD levels, chosen at run time (fc_simd_level) */
#define FC_SIMD_GENERIC 0
#define FC_SIMD_AVX2 1
#define FC_SIMD_AVX512 2

typedef struct {
    ptrdiff_t n, c, h, w;      /* input  (N, C, H, W) */
    ptrdiff_t k, kh, kw;       /* weight (K, C/groups, kh, kw) */
    ptrdiff_t ho, wo;          /* output (N, K, ho, wo) */
    ptrdiff_t sh, sw;          /* stride   >= 1 */
    ptrdiff_t ph, pw;          /* padding  >= 0 before: top, left */
    ptrdiff_t ph_end, pw_end;  /* padding  >= 0 after: bottom, right (TensorFlow 'same'
                                * with an even kernel or a stride puts more here) */
    ptrdiff_t dh, dw;          /* dilation >= 1 */
    ptrdiff_t groups;          /* divides c and k */
} fc_conv_geom;

typedef struct {
    ptrdiff_t n, c, h, w;      /* input (N, C, H, W) */
    ptrdiff_t kh, kw;          /* window */
    ptrdiff_t ho, wo;          /* output */
    ptrdiff_t sh, sw;          /* stride */
    ptrdiff_t ph, pw;          /* padding top / left (< the dilated window) */
    ptrdiff_t ph_end, pw_end;  /* padding bottom / right; a ceil-mode window may
                                * also run past it (it is clipped there) */
    ptrdiff_t dh, dw;          /* dilation >= 1 */
    int count_include_pad;     /* avg pool only */
} fc_pool_geom;

/* ---- convolution ---------------------------------------------------------- */
/* y = conv(x, w) + bias; bias may be NULL; relu != 0 applies max(., 0) after. */
int fc_conv2d_fwd_f32(const float *x, const float *w, const float *bias,
                      const fc_conv_geom *g, int relu, int nthreads, float *y /* OUT */);
int fc_conv2d_fwd_f64(const double *x, const double *w, const double *bias,
                      const fc_conv_geom *g, int relu, int nthreads, double *y /* OUT */);
/* The 2x2 max-pool (stride 2, no padding, floor) of that y, y never stored:
 * yp of shape (N, K, ho / 2, wo / 2), bitwise fc_maxpool2d_fwd of fc_conv2d_fwd's y. */
int fc_conv2d_fwd_maxpool2_f32(const float *x, const float *w, const float *bias,
                               const fc_conv_geom *g, int relu, int nthreads,
                               float *yp /* OUT */);
int fc_conv2d_fwd_maxpool2_f64(const double *x, const double *w, const double *bias,
                               const fc_conv_geom *g, int relu, int nthreads,
                               double *yp /* OUT */);

/* gx = d(loss)/dx given gy = d(loss)/dy (shape of y). */
int fc_conv2d_grad_input_f32(const float *gy, const float *w, const fc_conv_geom *g,
                             int nthreads, float *gx /* OUT */);
int fc_conv2d_grad_input_f64(const double *gy, const double *w, const fc_conv_geom *g,
                             int nthreads, double *gx /* OUT */);

/* gw (and gb when not NULL) from gy and x. gw is overwritten, not accumulated. */
int fc_conv2d_grad_weight_f32(const float *gy, const float *x, const fc_conv_geom *g,
                              int nthreads, float *gw /* OUT */, float *gb /* OUT or NULL */);
int fc_conv2d_grad_weight_f64(const double *gy, const double *x, const fc_conv_geom *g,
                              int nthreads, double *gw /* OUT */, double *gb /* OUT or NULL */);

/*
 * Winograd versions of the three passes (csrc/fc_winograd.c), float32 only:
 * F(2x2, 5x5) for 5x5 kernels, F(4x4, 3x3) for 3x3 kernels. Same contract as
 * above, for stride 1, dilation 1, groups 1; grad-input also needs padding
 * <= kh - 1. Fewer multiplies, different rounding: results differ from the
 * direct kernels by about 1e-5 of the output scale (docs/design.md).
 */
int fc_conv2d_fwd_wino_f32(const float *x, const float *w, const float *bias,
                           const fc_conv_geom *g, int relu, int nthreads, float *y /* OUT */);
int fc_conv2d_grad_input_wino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                  int nthreads, float *gx /* OUT */);
/* The forward split in two, for callers that keep the weights: u (36, k, c) =
 * the transformed w (k, c, kr, kr), kr = 5 or 3, then the forward from u.
 * Bitwise fc_conv2d_fwd_wino_f32 (which does both on every call). */
int fc_winograd_weights_f32(const float *w, ptrdiff_t k, ptrdiff_t c, ptrdiff_t kr,
                            int nthreads, float *u /* OUT */);
int fc_conv2d_fwd_wino_pre_f32(const float *x, const float *u, const float *bias,
                               const fc_conv_geom *g, int relu, int nthreads, float *y /* OUT */);
/* The two above followed by a 2x2/2 max-pool (floor), in one pass: yp of shape
 * (N, K, ho / 2, wo / 2), bitwise fc_maxpool2d_fwd of their y (each Winograd
 * output tile is one pooling window). */
int fc_conv2d_fwd_wino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                    const fc_conv_geom *g, int relu, int nthreads,
                                    float *yp /* OUT */);
int fc_conv2d_fwd_wino_pre_maxpool2_f32(const float *x, const float *u, const float *bias,
                                        const fc_conv_geom *g, int relu, int nthreads,
                                        float *yp /* OUT */);
/* The _pre forwards from up: U (36, k, c) followed by its packing for the GEMMs
 * (fc_winograd_pack_f32 writes it after U; up holds fc_winograd_packed_len_f32
 * floats), which saves packing U on every call. A packing made for another
 * SIMD level's kernels (or not made: len too small) is detected, and U packed
 * on the call. Bitwise the _pre ones. */
ptrdiff_t fc_winograd_packed_len_f32(const fc_conv_geom *g);
int fc_winograd_pack_f32(const fc_conv_geom *g, float *up /* IN: U; OUT: its packing */,
                         ptrdiff_t len /* floats of up */);
int fc_conv2d_fwd_wino_packed_f32(const float *x, const float *up, const float *bias,
                                  const fc_conv_geom *g, int relu, int nthreads,
                                  float *y /* OUT */);
int fc_conv2d_fwd_wino_packed_maxpool2_f32(const float *x, const float *up, const float *bias,
                                           const fc_conv_geom *g, int relu, int nthreads,
                                           float *yp /* OUT */);
int fc_conv2d_grad_weight_wino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                   int nthreads, float *gw /* OUT */, float *gb /* OUT or NULL */);
/*
 * grad_weight by row Winograd F(5, 5) (csrc/fc_rowwino_grad_weight.c), float32,
 * for 5x5 stride-1 layers with few channels: same contract as
 * fc_conv2d_grad_weight_f32 (which it calls for a layer it does not take, or
 * without AVX-512). Rounds differently from the direct routes.
 */
int fc_conv2d_grad_weight_rowwino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                      int nthreads, float *gw /* OUT */,
                                      float *gb /* OUT or NULL */);
/* 1 if that route runs this layer at the current SIMD level (AVX-512, the
 * shape, its scratch and partial sums within bounds), else 0. */
int fc_conv2d_grad_weight_rowwino_fits(const fc_conv_geom *g);

/*
 * Row-Winograd F(5, 5) forward and grad_input (csrc/fc_rowwino.c, fc_rowwino.h):
 * float32, 5x5, stride 1, dilation 1, groups 1, padding <= 4 every side, for
 * layers with few channels. Same contract as fc_conv2d_fwd_f32 /
 * fc_conv2d_grad_input_f32; different rounding (~1e-5 of the output scale).
 * Below AVX-512 at the current SIMD level they run the direct kernels.
 */
int fc_conv2d_fwd_rowwino_f32(const float *x, const float *w, const float *bias,
                              const fc_conv_geom *g, int relu, int nthreads, float *y /* OUT */);
int fc_conv2d_grad_input_rowwino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                     int nthreads, float *gx /* OUT */);
/* The forward followed by a 2x2/2 max-pool (floor), in one pass: yp of shape
 * (N, K, ho / 2, wo / 2), bitwise fc_maxpool2d_fwd of its y. */
int fc_conv2d_fwd_rowwino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                       const fc_conv_geom *g, int relu, int nthreads,
                                       float *yp /* OUT */);

/* ---- pooling -------------------------------------------------------------- */
/* idx may be NULL (no indices wanted). Indices are h * W + w in the input plane. */
int fc_maxpool2d_fwd_f32(const float *x, const fc_pool_geom *g, int nthreads,
                         float *y /* OUT */, int64_t *idx /* OUT or NULL */);
int fc_maxpool2d_fwd_f64(const double *x, const fc_pool_geom *g, int nthreads,
                         double *y /* OUT */, int64_t *idx /* OUT or NULL */);
/* gx is overwritten. Returns FC_EINDEX if any index is outside [0, H*W). */
int fc_maxpool2d_bwd_f32(const float *gy, const int64_t *idx, const fc_pool_geom *g,
                         int nthreads, float *gx /* OUT */);
int fc_maxpool2d_bwd_f64(const double *gy, const int64_t *idx, const fc_pool_geom *g,
                         int nthreads, double *gx /* OUT */);
int fc_avgpool2d_fwd_f32(const float *x, const fc_pool_geom *g, int nthreads, float *y /* OUT */);
int fc_avgpool2d_fwd_f64(const double *x, const fc_pool_geom *g, int nthreads, double *y /* OUT */);
int fc_avgpool2d_bwd_f32(const float *gy, const fc_pool_geom *g, int nthreads, float *gx /* OUT */);
int fc_avgpool2d_bwd_f64(const double *gy, const fc_pool_geom *g, int nthreads, double *gx /* OUT */);

/* ---- element-wise ------------------------------------------------------------ */
/* y = max(x, 0); gx = gy where y > 0 else 0 (y is the ReLU output); NaN propagates
 * (y = NaN for x = NaN, and gy passes where y is NaN, as PyTorch does). In place is fine. */
int fc_relu_fwd_f32(const float *x, ptrdiff_t n, int nthreads, float *y /* OUT */);
int fc_relu_fwd_f64(const double *x, ptrdiff_t n, int nthreads, double *y /* OUT */);
int fc_relu_bwd_f32(const float *gy, const float *y, ptrdiff_t n, int nthreads, float *gx /* OUT */);
int fc_relu_bwd_f64(const double *gy, const double *y, ptrdiff_t n, int nthreads,
                    double *gx /* OUT */);

/* ---- dense (matrix product) ---------------------------------------------- */
#define FC_BIAS_NONE 0
#define FC_BIAS_COLS 1 /* C[i, j] += bias[j], bias of length n */
#define FC_BIAS_ROWS 2 /* C[i, j] += bias[i], bias of length m */
/*
 * C (= or +=) op(A) op(B) + bias, with op(A) m x k and op(B) k x n; C is m x n,
 * row-major with row stride ldc. A is read as a[i * lda + p] (transa == 0) or
 * a[p * lda + i] (transa == 1); B as b[p * ldb + j] (transb == 0) or
 * b[j * ldb + p]. accumulate != 0 adds into C (each reduction block of the
 * product in turn), else C is overwritten. bias may be NULL. C must not
 * overlap A, B or bias. The dense layer uses (0, 1) forward, (0, 0) for the
 * input gradient and (1, 0) for the weight gradient.
 */
int fc_gemm_f32(int transa, int transb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                const float *bias, int bias_mode, int accumulate, int nthreads,
                float *c /* OUT */, ptrdiff_t ldc);
int fc_gemm_f64(int transa, int transb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                const double *a, ptrdiff_t lda, const double *b, ptrdiff_t ldb,
                const double *bias, int bias_mode, int accumulate, int nthreads,
                double *c /* OUT */, ptrdiff_t ldc);
/*
 * The dense forward y = x W^T (+ bias), x (n, nin), y (n, nout), from a k-major
 * copy of W (nout, nin): wt[q * ldw + i] = W[i, q], with ldw >= nout rounded up
 * to FC_KMAJOR_PAD and zeros in the columns past nout. Bitwise the output of
 * fc_gemm(0, 1, n, nout, nin, x, nin, W, nin, bias, FC_BIAS_COLS, 0, ...), faster
 * for a few samples (it reads rows of wt whole); the caller keeps wt up to date.
 */
#define FC_KMAJOR_PAD 128
int fc_linear_fwd_kmajor_f32(const float *x, const float *wt, ptrdiff_t ldw, const float *bias,
                             ptrdiff_t n, ptrdiff_t nin, ptrdiff_t nout, int nthreads,
                             float *y /* OUT */);
int fc_linear_fwd_kmajor_f64(const double *x, const double *wt, ptrdiff_t ldw,
                             const double *bias, ptrdiff_t n, ptrdiff_t nin, ptrdiff_t nout,
                             int nthreads, double *y /* OUT */);
/*
 * The dense forward of one row, y = x W^T (+ bias), x (nin,), y (nout,), from
 * W (nout, nin) cut into panels of FC_KMAJOR_PAD outputs, each stored k-major:
 * wp[(p * nin + q) * FC_KMAJOR_PAD + i] = W[p * FC_KMAJOR_PAD + i, q] for the
 * ceil(nout / FC_KMAJOR_PAD) panels p, zeros past nout. Each panel is one
 * contiguous stream; bitwise fc_gemm(0, 1, 1, nout, nin, x, nin, W, nin, bias,
 * FC_BIAS_COLS, 0, ...). The caller keeps wp up to date.
 */
int fc_linear_fwd_panels_f32(const float *x, const float *wp, const float *bias, ptrdiff_t nin,
                             ptrdiff_t nout, int nthreads, float *y /* OUT */);
int fc_linear_fwd_panels_f64(const double *x, const double *wp, const double *bias,
                             ptrdiff_t nin, ptrdiff_t nout, int nthreads, double *y /* OUT */);
/*
 * The dense layer's backward in one parallel region: for gy (n, out), x (n, in),
 * w (out, in), gx = gy w, gw (=|+=) gy^T x, gb (=|+=) column sums of gy (rows in
 * order); any output may be NULL (not computed). Same results as fc_gemm /
 * fc_colsum called one after the other.
 */
int fc_linear_bwd_f32(const float *gy, const float *x, const float *w, ptrdiff_t n,
                      ptrdiff_t in, ptrdiff_t out, int accumulate, int nthreads,
                      float *gx /* OUT or NULL */, float *gw /* OUT or NULL */,
                      float *gb /* OUT or NULL */);
int fc_linear_bwd_f64(const double *gy, const double *x, const double *w, ptrdiff_t n,
                      ptrdiff_t in, ptrdiff_t out, int accumulate, int nthreads,
                      double *gx /* OUT or NULL */, double *gw /* OUT or NULL */,
                      double *gb /* OUT or NULL */);
/* out[j] (= or +=) sum over i = 0, 1, ..., m-1 of a[i * lda + j]: a bias gradient. */
int fc_colsum_f32(const float *a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t lda, int accumulate,
                  int nthreads, float *out /* OUT */);
int fc_colsum_f64(const double *a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t lda, int accumulate,
                  int nthreads, double *out /* OUT */);

/* ---- optimiser updates (fc_optim.c) ----------------------------------------- */
/*
 * One step of fastconv.optim's SGD / Adagrad / RMSprop / Adam over a list of
 * parameters, in one pass per parameter, bitwise equal to optim.py's NumPy path
 * (same operations, order and per-operation rounding; see fc_optim.c).
 * Hyper-parameters are doubles, rounded to the dtype as NumPy rounds a Python
 * float operand. The arrays of one tensor are C-contiguous with n elements and
 * must not overlap each other.
 */
#define FC_OPTIM_SGD 0
#define FC_OPTIM_ADAGRAD 1
#define FC_OPTIM_RMSPROP 2
#define FC_OPTIM_ADAM 3

typedef struct {
    int kind;                  /* FC_OPTIM_* */
    double lr;
    double weight_decay, l1;   /* penalties, applied to tensors with regularize != 0 */
    double momentum;           /* SGD, RMSprop; 0 = none */
    int nesterov;              /* SGD */
    double eps;                /* Adagrad, RMSprop, Adam */
    double alpha;              /* RMSprop */
    double beta1, beta2;       /* Adam */
} fc_optim_hyper;

/* slot1 / slot2 by kind: SGD momentum_buffer / -; Adagrad sum / -;
 * RMSprop square_avg / momentum_buffer (momentum != 0); Adam exp_avg / exp_avg_sq.
 * Unused slots may be NULL. */
#define FC_DEF_OPTIM_TENSOR(REAL, SFX)                                                  \
    typedef struct {                                                                    \
        ptrdiff_t n;                                                                    \
        const REAL *grad;                                                               \
        int regularize;            /* apply weight_decay / l1 to this tensor */         \
        int first;                 /* SGD with momentum: buffer = grad (first step) */  \
        double step_size;          /* Adam: lr / (1 - beta1**t) */                      \
        double bias_correction2;   /* Adam: sqrt(1 - beta2**t) */                       \
        REAL *w;                   /* INOUT: the parameter */                           \
        REAL *slot1, *slot2;       /* INOUT: optimiser state */                         \
    } fc_optim_tensor_##SFX;
FC_DEF_OPTIM_TENSOR(float, f32)
FC_DEF_OPTIM_TENSOR(double, f64)
#undef FC_DEF_OPTIM_TENSOR

int fc_optim_step_f32(const fc_optim_hyper *h, const fc_optim_tensor_f32 *t, ptrdiff_t ntensors,
                      int nthreads);
int fc_optim_step_f64(const fc_optim_hyper *h, const fc_optim_tensor_f64 *t, ptrdiff_t ntensors,
                      int nthreads);

/* ---- threads ---------------------------------------------------------------- */
/*
 * The most threads any kernel runs with. GNU libgomp builds a team by
 * alloca-ing one start record per new thread on the caller's stack and aborts
 * the process when it cannot create a thread: a team of 100000 overflows the
 * stack (SIGSEGV), one of 2**31-1 aborts. Every request is clamped to this
 * (and to omp_get_thread_limit()); fastconv.set_num_threads refuses more. 256
 * threads of 8 MiB stacks stay within common process and memory limits, and no
 * kernel here gains from more.
 */
#define FC_MAX_TEAM 256
int fc_thread_limit(void);             /* min(FC_MAX_TEAM, omp_get_thread_limit()) */

/*
 * The thread count a kernel will really use for a request: at most
 * fc_thread_limit(), fewer while the team controller (csrc/fc_team.c) backs off
 * because helpers were descheduled. In a process forked after its parent ran a
 * parallel region, GNU libgomp's thread pool is gone and a new parallel region
 * would hang; there every kernel runs on one thread.
 */
int fc_threads(int requested);
/* Same, but one thread when `work` (multiply-adds or elements) is below
 * FC_MIN_PARALLEL_WORK, too small to pay for waking a team: results do not
 * depend on the thread count anyway. About 20 us of single-thread work: below
 * it, a team's wake-up and barrier cost more than they save (and far more on an
 * oversubscribed machine). */
#define FC_MIN_PARALLEL_WORK 2e5
int fc_threads_for(int requested, double work);
/* Register the fork handler; called once when the extension is imported. */
void fc_init(void);
int fc_forked_child(void);             /* 1 in such a forked child */

/* What the team controller knows (fastconv.info()["team"]). */
typedef struct {
    int cap;                  /* team cap while backing off; 0 = none */
    int64_t cap_left_ns;      /* until the cap lapses and a region probes the full team */
    int64_t backoff_ns;       /* length of the last back-off (the next one doubles it) */
    int last_team;            /* largest team a region of the last kernel call ran with */
    int64_t parallel_regions; /* regions run with > 1 thread */
    int64_t late_regions;     /* ... whose caller waited for a late helper */
    int64_t backoffs;         /* times the controller capped the team */
    int64_t scout_late;       /* ... of them because the scout found no free core */
    int64_t wait_ns;          /* callers' waits (late helpers, or off their core), summed */
    int64_t descheduled;      /* regions whose caller was off its core > FC_LATE_NS */
    int64_t stalled;          /* late regions in which no thread of ours waited for a CPU */
} fc_team_stats;
void fc_team_get_stats(fc_team_stats *s);
/* Adaptive (1, the default): late helpers cap the team for a while. 0: every
 * kernel gets the team it asks for (benchmarks of a fixed thread count, tests);
 * regions are still timed and counted. */
void fc_team_set_adaptive(int on);
int fc_team_adaptive(void);
/* For tests: forget all history, with back-offs starting at `backoff_ns` (<= 0:
 * the default 16 ms); make the next `regions` parallel regions (or answers of
 * the scout) look as if the caller (scout) had waited `wait_ns` for a core,
 * whatever it really waited. */
void fc_team_reset(int64_t backoff_ns, int strikes);
void fc_team_simulate_late(int64_t wait_ns, int regions, int64_t after_ns);
/* For tests: would the controller judge a region late, given its timings (ns:
 * opening to end barrier, the caller's own share, the latest helper arrival,
 * the caller's time off its core)? */
int fc_team_region_late(int64_t total_ns, int64_t work_ns, int64_t late_ns, int64_t off_ns);
/* For tests: the scout's reading of the run queue (every core has a runnable
 * thread besides it: 1), forced to `full` until the next reset; < 0: real. */
void fc_team_simulate_full(int full);
int fc_team_cores_full(void); /* the real reading now */
/* For tests: whether a late region's threads waited for a CPU (1: contention, 0:
 * a stall of their own), forced until the next reset; < 0: the real run delay
 * (a simulated wait counts as contention). */
void fc_team_simulate_sched(int waited);
/* The controller's own run-delay reading (it becomes the baseline, as at a late
 * region): 1 with *grown_ns the process's run delay since the last reading,
 * 0 when that reading is older than the strike window, -1 without statistics. */
int fc_team_run_delay(int64_t *grown_ns);

/*
 * Route overrides, for tests only (fastconv._kernels.set_route_override): force a
 * driver's choice that is otherwise made from the problem's shape. Nothing reads
 * the environment for these. `which` is one of FC_OVERRIDE_*; on = 0 clears it.
 */
enum {
    FC_OVERRIDE_GEMM_KC,          /* reduction block of the dense GEMM */
    FC_OVERRIDE_GEMM_TASKS,       /* tasks per dense product */
    FC_OVERRIDE_GEMM_SLOT,        /* force a micro-kernel slot */
    FC_OVERRIDE_GEMM_PACKA,       /* 0: read A in place */
    FC_OVERRIDE_GEMM_PACKB,       /* 0: read B in place */
    FC_OVERRIDE_DW_DOT_MAX,       /* grad_weight: dot route up to this many weights per group */
    FC_OVERRIDE_DX_COL2IM_MAX_C,  /* grad_input: col2im route up to this many channels per group */
    FC_OVERRIDE_DX_LANES_MAX_C,   /* grad_input: image-lanes route up to this many channels (0: off) */
    FC_OVERRIDE_FWD_LANES_MAX_C,  /* forward: image-lanes route up to this many channels (0: off) */
    FC_OVERRIDE_DW_DOT_ROWS,      /* grad_weight dot route: 4 keeps the table's 4-row tiles */
    FC_OVERRIDE_DX_PHASE_ROWS,    /* grad_input, groups 1: 0 runs each phase's own tasks (run_jobs) */
    FC_OVERRIDE_DW_DIRECT_ROWS,   /* grad_weight packed route: 0 reads patches from im2col copies */
    FC_OVERRIDE_DW_LANES,         /* grad_weight image-lanes route: 0 never, 1 whenever it fits */
    FC_OVERRIDE_COUNT
};
int fc_set_route_override(int which, long value, int on); /* 0, or -1 for a bad `which` */
/* The drivers' own route cut-offs (the defaults the overrides replace). */
#define FC_DW_DOT_MAX 4096     /* grad_weight: dot route up to this many weights per group
                                * (measured on bench shapes a, b, c) */
#define FC_DX_COL2IM_MAX_C 4   /* grad_input: col2im route up to this many input channels per
                                * group (and >= 16 output channels; c: 2.35 -> 1.56 ms) */
long fc_route_override(int which, long dflt);              /* the forced value, else dflt */

/* Large scratch blocks are cached between calls (csrc/fc_scratch.c). */
void fc_scratch_release(void);           /* free every cached block */
size_t fc_scratch_bytes(void);           /* bytes the cache holds now */

/* ---- run-time facts ------------------------------------------------------- */
int fc_simd_level(void);               /* the level in use */
int fc_simd_supported(void);           /* the best level this CPU + build can run */
int fc_set_simd_level(int level);      /* clamp to supported; returns the level set */
const char *fc_simd_name(int level);
/* For tests: a bit mask of the levels (1 << FC_SIMD_*) at which vector paths ran
 * since the last reset; reset != 0 clears it after reading. */
int fc_simd_levels_used(int reset);
int fc_openmp_enabled(void);
int fc_max_threads(void);              /* omp_get_max_threads(), or 1 */
void fc_set_max_threads(int n);        /* omp_set_num_threads() */
const char *fc_compiler(void);

#ifdef __cplusplus
}
#endif
#endif /* FASTCONV_H */
