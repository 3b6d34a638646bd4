# Declarations of csrc/fastconv.h, line for line. Every prototype is nogil.
from libc.stdint cimport int64_t

cdef extern from "fastconv.h" nogil:
    int FC_OK
    int FC_ENOMEM
    int FC_EINDEX
    int FC_SIMD_GENERIC
    int FC_SIMD_AVX2
    int FC_SIMD_AVX512
    double FC_MIN_PARALLEL_WORK
    int FC_DW_DOT_MAX
    int FC_DX_COL2IM_MAX_C

    ctypedef struct fc_conv_geom:
        Py_ssize_t n, c, h, w
        Py_ssize_t k, kh, kw
        Py_ssize_t ho, wo
        Py_ssize_t sh, sw
        Py_ssize_t ph, pw
        Py_ssize_t ph_end, pw_end
        Py_ssize_t dh, dw
        Py_ssize_t groups

    ctypedef struct fc_pool_geom:
        Py_ssize_t n, c, h, w
        Py_ssize_t kh, kw
        Py_ssize_t ho, wo
        Py_ssize_t sh, sw
        Py_ssize_t ph, pw
        Py_ssize_t ph_end, pw_end
        Py_ssize_t dh, dw
        int count_include_pad

    int fc_conv2d_fwd_f32(const float *x, const float *w, const float *bias,
                          const fc_conv_geom *g, int relu, int nthreads, float *y)
    int fc_conv2d_fwd_f64(const double *x, const double *w, const double *bias,
                          const fc_conv_geom *g, int relu, int nthreads, double *y)
    int fc_conv2d_fwd_maxpool2_f32(const float *x, const float *w, const float *bias,
                                   const fc_conv_geom *g, int relu, int nthreads, float *yp)
    int fc_conv2d_fwd_maxpool2_f64(const double *x, const double *w, const double *bias,
                                   const fc_conv_geom *g, int relu, int nthreads, double *yp)
    int fc_conv2d_grad_input_f32(const float *gy, const float *w, const fc_conv_geom *g,
                               int nthreads, float *gx)
    int fc_conv2d_grad_input_f64(const double *gy, const double *w, const fc_conv_geom *g,
                               int nthreads, double *gx)
    int fc_conv2d_grad_weight_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                 int nthreads, float *gw, float *gb)
    int fc_conv2d_grad_weight_f64(const double *gy, const double *x, const fc_conv_geom *g,
                                 int nthreads, double *gw, double *gb)

    int fc_conv2d_fwd_wino_f32(const float *x, const float *w, const float *bias,
                               const fc_conv_geom *g, int relu, int nthreads, float *y)
    int fc_winograd_weights_f32(const float *w, Py_ssize_t k, Py_ssize_t c, Py_ssize_t kr,
                                int nthreads, float *u)
    int fc_conv2d_fwd_wino_pre_f32(const float *x, const float *u, const float *bias,
                                   const fc_conv_geom *g, int relu, int nthreads, float *y)
    int fc_conv2d_fwd_wino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                        const fc_conv_geom *g, int relu, int nthreads,
                                        float *yp)
    int fc_conv2d_fwd_wino_pre_maxpool2_f32(const float *x, const float *u, const float *bias,
                                            const fc_conv_geom *g, int relu, int nthreads,
                                            float *yp)
    Py_ssize_t fc_winograd_packed_len_f32(const fc_conv_geom *g)
    int fc_winograd_pack_f32(const fc_conv_geom *g, float *up, Py_ssize_t len)
    int fc_conv2d_fwd_wino_packed_f32(const float *x, const float *up, const float *bias,
                                      const fc_conv_geom *g, int relu, int nthreads, float *y)
    int fc_conv2d_fwd_wino_packed_maxpool2_f32(const float *x, const float *up,
                                               const float *bias, const fc_conv_geom *g,
                                               int relu, int nthreads, float *yp)
    int fc_conv2d_grad_input_wino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                    int nthreads, float *gx)
    int fc_conv2d_grad_weight_wino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                      int nthreads, float *gw, float *gb)
    int fc_conv2d_fwd_rowwino_f32(const float *x, const float *w, const float *bias,
                                  const fc_conv_geom *g, int relu, int nthreads, float *y)
    int fc_conv2d_grad_input_rowwino_f32(const float *gy, const float *w, const fc_conv_geom *g,
                                         int nthreads, float *gx)
    int fc_conv2d_fwd_rowwino_maxpool2_f32(const float *x, const float *w, const float *bias,
                                           const fc_conv_geom *g, int relu, int nthreads,
                                           float *yp)
    int fc_conv2d_grad_weight_rowwino_f32(const float *gy, const float *x, const fc_conv_geom *g,
                                          int nthreads, float *gw, float *gb)
    int fc_conv2d_grad_weight_rowwino_fits(const fc_conv_geom *g)

    int fc_maxpool2d_fwd_f32(const float *x, const fc_pool_geom *g, int nthreads,
                             float *y, int64_t *idx)
    int fc_maxpool2d_fwd_f64(const double *x, const fc_pool_geom *g, int nthreads,
                             double *y, int64_t *idx)
    int fc_maxpool2d_bwd_f32(const float *gy, const int64_t *idx, const fc_pool_geom *g,
                             int nthreads, float *gx)
    int fc_maxpool2d_bwd_f64(const double *gy, const int64_t *idx, const fc_pool_geom *g,
                             int nthreads, double *gx)
    int fc_avgpool2d_fwd_f32(const float *x, const fc_pool_geom *g, int nthreads, float *y)
    int fc_avgpool2d_fwd_f64(const double *x, const fc_pool_geom *g, int nthreads, double *y)
    int fc_avgpool2d_bwd_f32(const float *gy, const fc_pool_geom *g, int nthreads, float *gx)
    int fc_avgpool2d_bwd_f64(const double *gy, const fc_pool_geom *g, int nthreads, double *gx)

    int fc_relu_fwd_f32(const float *x, Py_ssize_t n, int nthreads, float *y)
    int fc_relu_fwd_f64(const double *x, Py_ssize_t n, int nthreads, double *y)
    int fc_relu_bwd_f32(const float *gy, const float *y, Py_ssize_t n, int nthreads, float *gx)
    int fc_relu_bwd_f64(const double *gy, const double *y, Py_ssize_t n, int nthreads,
                        double *gx)

    int FC_BIAS_NONE
    int FC_BIAS_COLS
    int FC_BIAS_ROWS
    int fc_gemm_f32(int transa, int transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                    const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                    const float *bias, int bias_mode, int accumulate, int nthreads,
                    float *c, Py_ssize_t ldc)
    int fc_gemm_f64(int transa, int transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                    const double *a, Py_ssize_t lda, const double *b, Py_ssize_t ldb,
                    const double *bias, int bias_mode, int accumulate, int nthreads,
                    double *c, Py_ssize_t ldc)
    int FC_KMAJOR_PAD
    int fc_linear_fwd_kmajor_f32(const float *x, const float *wt, Py_ssize_t ldw,
                                 const float *bias, Py_ssize_t n, Py_ssize_t nin,
                                 Py_ssize_t nout, int nthreads, float *y)
    int fc_linear_fwd_kmajor_f64(const double *x, const double *wt, Py_ssize_t ldw,
                                 const double *bias, Py_ssize_t n, Py_ssize_t nin,
                                 Py_ssize_t nout, int nthreads, double *y)
    int fc_linear_fwd_panels_f32(const float *x, const float *wp, const float *bias,
                                 Py_ssize_t nin, Py_ssize_t nout, int nthreads, float *y)
    int fc_linear_fwd_panels_f64(const double *x, const double *wp, const double *bias,
                                 Py_ssize_t nin, Py_ssize_t nout, int nthreads, double *y)
    int fc_linear_bwd_f32(const float *gy, const float *x, const float *w, Py_ssize_t n,
                          Py_ssize_t in_, Py_ssize_t out, int accumulate, int nthreads,
                          float *gx, float *gw, float *gb)
    int fc_linear_bwd_f64(const double *gy, const double *x, const double *w, Py_ssize_t n,
                          Py_ssize_t in_, Py_ssize_t out, int accumulate, int nthreads,
                          double *gx, double *gw, double *gb)
    int fc_colsum_f32(const float *a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t lda,
                      int accumulate, int nthreads, float *out)
    int fc_colsum_f64(const double *a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t lda,
                      int accumulate, int nthreads, double *out)

    int FC_OPTIM_SGD
    int FC_OPTIM_ADAGRAD
    int FC_OPTIM_RMSPROP
    int FC_OPTIM_ADAM

    ctypedef struct fc_optim_hyper:
        int kind
        double lr
        double weight_decay, l1
        double momentum
        int nesterov
        double eps
        double alpha
        double beta1, beta2

    ctypedef struct fc_optim_tensor_f32:
        Py_ssize_t n
        const float *grad
        int regularize
        int first
        double step_size
        double bias_correction2
        float *w
        float *slot1
        float *slot2

    ctypedef struct fc_optim_tensor_f64:
        Py_ssize_t n
        const double *grad
        int regularize
        int first
        double step_size
        double bias_correction2
        double *w
        double *slot1
        double *slot2

    int fc_optim_step_f32(const fc_optim_hyper *h, const fc_optim_tensor_f32 *t,
                          Py_ssize_t ntensors, int nthreads)
    int fc_optim_step_f64(const fc_optim_hyper *h, const fc_optim_tensor_f64 *t,
                          Py_ssize_t ntensors, int nthreads)

    int FC_MAX_TEAM
    int fc_thread_limit()
    int fc_threads(int requested)
    int fc_threads_for(int requested, double work)
    void fc_init()
    int fc_forked_child()

    ctypedef struct fc_team_stats:
        int cap
        int64_t cap_left_ns
        int64_t backoff_ns
        int last_team
        int64_t parallel_regions
        int64_t late_regions
        int64_t backoffs
        int64_t scout_late
        int64_t wait_ns
        int64_t descheduled
        int64_t stalled
    void fc_team_get_stats(fc_team_stats *s)
    void fc_team_set_adaptive(int on)
    int fc_team_adaptive()
    void fc_team_reset(int64_t backoff_ns, int strikes)
    int fc_team_region_late(int64_t total_ns, int64_t work_ns, int64_t late_ns, int64_t off_ns)
    void fc_team_simulate_full(int full)
    int fc_team_cores_full()
    void fc_team_simulate_sched(int waited)
    int fc_team_run_delay(int64_t *grown_ns)
    void fc_team_simulate_late(int64_t wait_ns, int regions, int64_t after_ns)
    int fc_set_route_override(int which, long value, int on)
    void fc_scratch_release()
    size_t fc_scratch_bytes()

    int fc_simd_level()
    int fc_simd_supported()
    int fc_set_simd_level(int level)
    const char *fc_simd_name(int level)
    int fc_simd_levels_used(int reset)
    int fc_openmp_enabled()
    int fc_max_threads()
    void fc_set_max_threads(int n)
    const char *fc_compiler()
