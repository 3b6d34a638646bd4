# cython: language_level=3
"""Cython bridge to the C kernels in csrc/.

Converts typed memoryviews to pointers, picks the float or double kernel and
releases the GIL; it makes no decisions. Shapes, dtypes, contiguity, output
allocation and the thread count are settled by fastconv.functional first.
Geometry arrives as a tuple of ints in the field order of fc_conv_geom /
fc_pool_geom.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_REFCNT
cimport numpy as cnp

from fastconv._kernels cimport *

fc_init()  # fork handler: a child forked after a parallel region runs serially

# Constants of the C layer, for the Python layer to read instead of re-declaring them.
SIMD_LEVELS = {"generic": FC_SIMD_GENERIC, "avx2": FC_SIMD_AVX2, "avx512": FC_SIMD_AVX512}
PARALLEL_MIN_WORK = FC_MIN_PARALLEL_WORK  # below this much work a kernel runs on one thread
MAX_TEAM = FC_MAX_TEAM                    # the most threads any kernel runs with
DW_DOT_MAX = FC_DW_DOT_MAX                # default of set_route_override("dw_dot_max")
DX_COL2IM_MAX_C = FC_DX_COL2IM_MAX_C      # default of set_route_override("dx_col2im_max_c")
KMAJOR_PAD = FC_KMAJOR_PAD                # linear_forward_kmajor: wt's row length is a multiple;
                                          # linear_forward_panels: the panel width

cnp.import_array()


cdef fc_conv_geom _conv_geom(tuple t):
    cdef fc_conv_geom g
    (g.n, g.c, g.h, g.w, g.k, g.kh, g.kw, g.ho, g.wo,
     g.sh, g.sw, g.ph, g.pw, g.ph_end, g.pw_end, g.dh, g.dw, g.groups) = t
    return g


cdef fc_pool_geom _pool_geom(tuple t, bint count_include_pad):
    cdef fc_pool_geom g
    (g.n, g.c, g.h, g.w, g.kh, g.kw, g.ho, g.wo, g.sh, g.sw, g.ph, g.pw,
     g.ph_end, g.pw_end, g.dh, g.dw) = t
    g.count_include_pad = count_include_pad
    return g


cdef int _check(int rc) except -1:
    if rc == FC_ENOMEM:
        raise MemoryError("fastconv: could not allocate kernel scratch memory")
    return rc


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] bias, tuple geom, bint relu, int nthreads,
                   floating[:, :, :, ::1] y):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef const floating *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        if floating is float:
            rc = fc_conv2d_fwd_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, relu, nthreads,
                                   &y[0, 0, 0, 0])
        else:
            rc = fc_conv2d_fwd_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, relu, nthreads,
                                   &y[0, 0, 0, 0])
    _check(rc)


def conv2d_grad_input(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] w,
                         tuple geom, int nthreads, floating[:, :, :, ::1] gx):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_conv2d_grad_input_f32(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &g, nthreads,
                                        &gx[0, 0, 0, 0])
        else:
            rc = fc_conv2d_grad_input_f64(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &g, nthreads,
                                        &gx[0, 0, 0, 0])
    _check(rc)


def conv2d_grad_weight(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                           tuple geom, int nthreads, floating[:, :, :, ::1] gw,
                           floating[::1] gb):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef floating *gbp = NULL
    cdef int rc
    if gb is not None:
        gbp = &gb[0]
    with nogil:
        if floating is float:
            rc = fc_conv2d_grad_weight_f32(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads,
                                          &gw[0, 0, 0, 0], gbp)
        else:
            rc = fc_conv2d_grad_weight_f64(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads,
                                          &gw[0, 0, 0, 0], gbp)
    _check(rc)



def conv2d_forward_winograd(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w,
                            const float[::1] bias, tuple geom, bint relu, int nthreads,
                            float[:, :, :, ::1] y):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef const float *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        rc = fc_conv2d_fwd_wino_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, relu, nthreads,
                                    &y[0, 0, 0, 0])
    _check(rc)


def winograd_weights(const float[:, :, :, ::1] w, int nthreads, float[:, :, ::1] u):
    """u (36, k, c) = the Winograd transform of w (k, c, 5, 5) or (k, c, 3, 3), for
    conv2d_forward_winograd_pre."""
    cdef int rc
    if w.shape[2] != w.shape[3] or w.shape[2] not in (3, 5):
        # the C transform knows these two sizes only; another would be read as 5x5
        raise ValueError(f"winograd_weights: expects 5x5 or 3x3 weights, got "
                         f"{w.shape[2]}x{w.shape[3]}")
    with nogil:
        rc = fc_winograd_weights_f32(&w[0, 0, 0, 0], w.shape[0], w.shape[1], w.shape[2],
                                     nthreads, &u[0, 0, 0])
    _check(rc)


def conv2d_forward_winograd_pre(const float[:, :, :, ::1] x, const float[:, :, ::1] u,
                                const float[::1] bias, tuple geom, bint relu, int nthreads,
                                float[:, :, :, ::1] y):
    """conv2d_forward_winograd with the weights transformed beforehand (winograd_weights)."""
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef const float *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        rc = fc_conv2d_fwd_wino_pre_f32(&x[0, 0, 0, 0], &u[0, 0, 0], bp, &g, relu, nthreads,
                                        &y[0, 0, 0, 0])
    _check(rc)



def winograd_packed_len(tuple geom):
    """Floats of U (36, k, c) followed by its packing for the forward's GEMMs
    (winograd_pack), for the conv geometry ``geom``."""
    cdef fc_conv_geom g = _conv_geom(geom)
    return fc_winograd_packed_len_f32(&g)


def winograd_pack(float[::1] up, tuple geom):
    """Write the packing of U, held in up's first 36 * k * c floats, after it
    (up has winograd_packed_len(geom) floats; fewer: no packing, the forward
    packs U on each call); the plan's OP_WINO* variant 1 reads it."""
    cdef fc_conv_geom g = _conv_geom(geom)
    if up.shape[0] == 0:
        return
    with nogil:
        fc_winograd_pack_f32(&g, &up[0], up.shape[0])

def conv2d_grad_input_winograd(const float[:, :, :, ::1] gy, const float[:, :, :, ::1] w,
                                  tuple geom, int nthreads, float[:, :, :, ::1] gx):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef int rc
    with nogil:
        rc = fc_conv2d_grad_input_wino_f32(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &g, nthreads,
                                         &gx[0, 0, 0, 0])
    _check(rc)


def conv2d_grad_weight_winograd(const float[:, :, :, ::1] gy,
                                    const float[:, :, :, ::1] x, tuple geom, int nthreads,
                                    float[:, :, :, ::1] gw, float[::1] gb):
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef float *gbp = NULL
    cdef int rc
    if gb is not None:
        gbp = &gb[0]
    with nogil:
        rc = fc_conv2d_grad_weight_wino_f32(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads,
                                           &gw[0, 0, 0, 0], gbp)
    _check(rc)

def conv2d_forward_winograd_rows(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w,
                                 const float[::1] bias, tuple geom, bint relu, int nthreads,
                                 float[:, :, :, ::1] y):
    """Row-Winograd F(5, 5) forward (csrc/fc_rowwino.c); conv2d_forward's arguments."""
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef const float *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        rc = fc_conv2d_fwd_rowwino_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, relu, nthreads,
                                       &y[0, 0, 0, 0])
    _check(rc)


def conv2d_grad_input_winograd_rows(const float[:, :, :, ::1] gy, const float[:, :, :, ::1] w,
                                    tuple geom, int nthreads, float[:, :, :, ::1] gx):
    """Row-Winograd F(5, 5) grad_input; conv2d_grad_input's arguments."""
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef int rc
    with nogil:
        rc = fc_conv2d_grad_input_rowwino_f32(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &g, nthreads,
                                              &gx[0, 0, 0, 0])
    _check(rc)


def winograd_rows_grad_weight_fits(tuple geom):
    """True if conv2d_grad_weight_winograd_rows runs this layer by row Winograd at
    the current SIMD level (else it runs the direct routes)."""
    cdef fc_conv_geom g = _conv_geom(geom)
    return fc_conv2d_grad_weight_rowwino_fits(&g) != 0


def conv2d_grad_weight_winograd_rows(const float[:, :, :, ::1] gy,
                                     const float[:, :, :, ::1] x, tuple geom, int nthreads,
                                     float[:, :, :, ::1] gw, float[::1] gb):
    """conv2d_grad_weight by row Winograd F(5, 5) (float32, 5x5, stride 1; another
    layer, or no AVX-512: the direct routes)."""
    cdef fc_conv_geom g = _conv_geom(geom)
    cdef float *gbp = NULL
    cdef int rc
    if gb is not None:
        gbp = &gb[0]
    with nogil:
        rc = fc_conv2d_grad_weight_rowwino_f32(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads,
                                               &gw[0, 0, 0, 0], gbp)
    _check(rc)


def max_pool2d_forward(const floating[:, :, :, ::1] x, tuple geom, int nthreads,
                       floating[:, :, :, ::1] y, int64_t[:, :, :, ::1] idx):
    cdef fc_pool_geom g = _pool_geom(geom, False)
    cdef int64_t *ip = NULL
    cdef int rc
    if idx is not None:
        ip = &idx[0, 0, 0, 0]
    with nogil:
        if floating is float:
            rc = fc_maxpool2d_fwd_f32(&x[0, 0, 0, 0], &g, nthreads, &y[0, 0, 0, 0], ip)
        else:
            rc = fc_maxpool2d_fwd_f64(&x[0, 0, 0, 0], &g, nthreads, &y[0, 0, 0, 0], ip)
    _check(rc)


def max_pool2d_backward(const floating[:, :, :, ::1] gy, const int64_t[:, :, :, ::1] idx,
                        tuple geom, int nthreads, floating[:, :, :, ::1] gx):
    """Returns False if an index was outside its input plane (those were skipped)."""
    cdef fc_pool_geom g = _pool_geom(geom, False)
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_maxpool2d_bwd_f32(&gy[0, 0, 0, 0], &idx[0, 0, 0, 0], &g, nthreads,
                                      &gx[0, 0, 0, 0])
        else:
            rc = fc_maxpool2d_bwd_f64(&gy[0, 0, 0, 0], &idx[0, 0, 0, 0], &g, nthreads,
                                      &gx[0, 0, 0, 0])
    return _check(rc) != FC_EINDEX


def avg_pool2d_forward(const floating[:, :, :, ::1] x, tuple geom, bint count_include_pad,
                       int nthreads, floating[:, :, :, ::1] y):
    cdef fc_pool_geom g = _pool_geom(geom, count_include_pad)
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_avgpool2d_fwd_f32(&x[0, 0, 0, 0], &g, nthreads, &y[0, 0, 0, 0])
        else:
            rc = fc_avgpool2d_fwd_f64(&x[0, 0, 0, 0], &g, nthreads, &y[0, 0, 0, 0])
    _check(rc)


def avg_pool2d_backward(const floating[:, :, :, ::1] gy, tuple geom, bint count_include_pad,
                        int nthreads, floating[:, :, :, ::1] gx):
    cdef fc_pool_geom g = _pool_geom(geom, count_include_pad)
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_avgpool2d_bwd_f32(&gy[0, 0, 0, 0], &g, nthreads, &gx[0, 0, 0, 0])
        else:
            rc = fc_avgpool2d_bwd_f64(&gy[0, 0, 0, 0], &g, nthreads, &gx[0, 0, 0, 0])
    _check(rc)


def relu_forward(const floating[::1] x, int nthreads, floating[::1] y):
    cdef Py_ssize_t n = x.shape[0]
    with nogil:
        if floating is float:
            fc_relu_fwd_f32(&x[0], n, nthreads, &y[0])
        else:
            fc_relu_fwd_f64(&x[0], n, nthreads, &y[0])


def relu_backward(const floating[::1] gy, const floating[::1] y, int nthreads,
                  floating[::1] gx):
    cdef Py_ssize_t n = gy.shape[0]
    with nogil:
        if floating is float:
            fc_relu_bwd_f32(&gy[0], &y[0], n, nthreads, &gx[0])
        else:
            fc_relu_bwd_f64(&gy[0], &y[0], n, nthreads, &gx[0])


def gemm(bint transa, bint transb, const floating[:, ::1] a, const floating[:, ::1] b,
         const floating[::1] bias, int bias_mode, bint accumulate, int nthreads,
         floating[:, ::1] c):
    """c (=|+=) op(a) op(b) + bias; shapes already checked (see fc_gemm in fastconv.h)."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if transa else a.shape[1]
    cdef const floating *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    else:
        bias_mode = FC_BIAS_NONE
    with nogil:
        if floating is float:
            rc = fc_gemm_f32(transa, transb, m, n, k, &a[0, 0], a.shape[1], &b[0, 0],
                             b.shape[1], bp, bias_mode, accumulate, nthreads, &c[0, 0], n)
        else:
            rc = fc_gemm_f64(transa, transb, m, n, k, &a[0, 0], a.shape[1], &b[0, 0],
                             b.shape[1], bp, bias_mode, accumulate, nthreads, &c[0, 0], n)
    _check(rc)


def linear_forward_kmajor(const floating[:, ::1] x, const floating[:, ::1] wt,
                          const floating[::1] bias, int nthreads, floating[:, ::1] y):
    """y = x W^T + bias from wt (nin, ldw), the k-major zero-padded copy of W
    (see fc_linear_fwd_kmajor in fastconv.h); bitwise gemm(False, True, x, W, ...)."""
    cdef Py_ssize_t n = y.shape[0], nout = y.shape[1], nin = x.shape[1], ldw = wt.shape[1]
    cdef const floating *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        if floating is float:
            rc = fc_linear_fwd_kmajor_f32(&x[0, 0], &wt[0, 0], ldw, bp, n, nin, nout, nthreads,
                                          &y[0, 0])
        else:
            rc = fc_linear_fwd_kmajor_f64(&x[0, 0], &wt[0, 0], ldw, bp, n, nin, nout, nthreads,
                                          &y[0, 0])
    _check(rc)



def linear_forward_panels(const floating[::1] x, const floating[:, :, ::1] wp,
                          const floating[::1] bias, int nthreads, floating[::1] y):
    """y = x W^T + bias for one row x from wp (panels, nin, KMAJOR_PAD), W cut into
    panels of KMAJOR_PAD outputs, each k-major (see fc_linear_fwd_panels in
    fastconv.h); bitwise gemm(False, True, x[None], W, ...)."""
    cdef Py_ssize_t nout = y.shape[0], nin = x.shape[0]
    cdef const floating *bp = NULL
    cdef int rc
    if bias is not None:
        bp = &bias[0]
    with nogil:
        if floating is float:
            rc = fc_linear_fwd_panels_f32(&x[0], &wp[0, 0, 0], bp, nin, nout, nthreads, &y[0])
        else:
            rc = fc_linear_fwd_panels_f64(&x[0], &wp[0, 0, 0], bp, nin, nout, nthreads, &y[0])
    _check(rc)

def sole_reference(obj, str name):
    """Whether ``getattr(obj, name)`` is referenced by ``obj`` alone: no one
    else holds it (or a view of it, which references its base) to write it
    later. Counted here, where the references are exactly ``obj``'s and ours."""
    cdef object v = getattr(obj, name)
    return Py_REFCNT(v) == 2


def linear_backward(const floating[:, ::1] gy, const floating[:, ::1] x,
                    const floating[:, ::1] w, bint accumulate, int nthreads,
                    floating[:, ::1] gx, floating[:, ::1] gw, floating[::1] gb):
    """gx = gy w, gw (=|+=) gy^T x, gb (=|+=) gy summed over rows; None = not wanted."""
    cdef Py_ssize_t n = x.shape[0], nin = x.shape[1], nout = w.shape[0]
    cdef floating *gxp = NULL
    cdef floating *gwp = NULL
    cdef floating *gbp = NULL
    cdef int rc
    if gx is not None and gx.shape[0] * gx.shape[1] > 0:
        gxp = &gx[0, 0]
    if gw is not None and gw.shape[0] * gw.shape[1] > 0:
        gwp = &gw[0, 0]
    if gb is not None and gb.shape[0] > 0:
        gbp = &gb[0]
    if n == 0 or nin == 0 or nout == 0:
        raise ValueError("linear_backward: empty operands are handled in Python")
    with nogil:
        if floating is float:
            rc = fc_linear_bwd_f32(&gy[0, 0], &x[0, 0], &w[0, 0], n, nin, nout, accumulate,
                                   nthreads, gxp, gwp, gbp)
        else:
            rc = fc_linear_bwd_f64(&gy[0, 0], &x[0, 0], &w[0, 0], n, nin, nout, accumulate,
                                   nthreads, gxp, gwp, gbp)
    _check(rc)


def colsum(const floating[:, ::1] a, bint accumulate, int nthreads, floating[::1] out):
    """out (=|+=) a.sum(axis=0), each column summed top to bottom."""
    with nogil:
        if floating is float:
            fc_colsum_f32(&a[0, 0], a.shape[0], a.shape[1], a.shape[1], accumulate, nthreads,
                          &out[0])
        else:
            fc_colsum_f64(&a[0, 0], a.shape[0], a.shape[1], a.shape[1], accumulate, nthreads,
                          &out[0])


cdef void *_optim_ptr(object a, int typenum, Py_ssize_t n, bint writeable) except NULL:
    # The one guard between a Python object and a raw pointer: fastconv.optim
    # only passes arrays it has checked, so this never fires in normal use.
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    if (cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or cnp.PyArray_SIZE(arr) != n or (writeable and not cnp.PyArray_ISWRITEABLE(arr))):
        raise ValueError("optim_step: every array of a tensor must be a C-contiguous "
                         "array of the same dtype and size (and writeable when updated)")
    return cnp.PyArray_DATA(arr)


OPTIM_SGD = FC_OPTIM_SGD
OPTIM_ADAGRAD = FC_OPTIM_ADAGRAD
OPTIM_RMSPROP = FC_OPTIM_RMSPROP
OPTIM_ADAM = FC_OPTIM_ADAM


def optim_step(tuple hyper, list tensors, bint f64, int nthreads):
    """One fused optimiser step over ``tensors`` (see fc_optim_step_f32 in fastconv.h).

    hyper: (kind, lr, weight_decay, l1, momentum, nesterov, eps, alpha, beta1, beta2).
    tensors: tuples (w, grad, slot1, slot2, regularize, first, step_size,
    bias_correction2), the arrays float64 if f64 else float32; slots may be None.
    """
    cdef fc_optim_hyper h
    (h.kind, h.lr, h.weight_decay, h.l1, h.momentum, h.nesterov, h.eps, h.alpha,
     h.beta1, h.beta2) = hyper
    cdef Py_ssize_t nt = len(tensors), k, n
    cdef int typenum = cnp.NPY_FLOAT64 if f64 else cnp.NPY_FLOAT32
    cdef void *buf = PyMem_Malloc(max(nt, 1) * (sizeof(fc_optim_tensor_f64) if f64 else
                                                 sizeof(fc_optim_tensor_f32)))
    cdef fc_optim_tensor_f32 *t32 = <fc_optim_tensor_f32 *>buf
    cdef fc_optim_tensor_f64 *t64 = <fc_optim_tensor_f64 *>buf
    cdef void *w
    cdef void *g
    cdef void *s1
    cdef void *s2
    # slots the kernel dereferences, by kind
    cdef bint need1 = h.kind != FC_OPTIM_SGD or h.momentum != 0.0
    cdef bint need2 = h.kind == FC_OPTIM_ADAM or (h.kind == FC_OPTIM_RMSPROP and h.momentum != 0.0)
    if h.kind < FC_OPTIM_SGD or h.kind > FC_OPTIM_ADAM:
        raise ValueError(f"optim_step: unknown kind {h.kind}")
    if buf == NULL:
        raise MemoryError()
    try:
        for k in range(nt):
            tw, tg, ts1, ts2, reg, first, step_size, bc2 = tensors[k]
            n = cnp.PyArray_SIZE(<cnp.ndarray?>tw)
            w = _optim_ptr(tw, typenum, n, True)
            g = _optim_ptr(tg, typenum, n, False)
            s1 = NULL if ts1 is None else _optim_ptr(ts1, typenum, n, True)
            s2 = NULL if ts2 is None else _optim_ptr(ts2, typenum, n, True)
            if (need1 and s1 == NULL) or (need2 and s2 == NULL):
                raise ValueError(f"optim_step: tensor {k} lacks an optimiser state slot")
            if f64:
                t64[k].n = n
                t64[k].grad = <const double *>g
                t64[k].regularize = reg
                t64[k].first = first
                t64[k].step_size = step_size
                t64[k].bias_correction2 = bc2
                t64[k].w = <double *>w
                t64[k].slot1 = <double *>s1
                t64[k].slot2 = <double *>s2
            else:
                t32[k].n = n
                t32[k].grad = <const float *>g
                t32[k].regularize = reg
                t32[k].first = first
                t32[k].step_size = step_size
                t32[k].bias_correction2 = bc2
                t32[k].w = <float *>w
                t32[k].slot1 = <float *>s1
                t32[k].slot2 = <float *>s2
        with nogil:
            if f64:
                fc_optim_step_f64(&h, t64, nt, nthreads)
            else:
                fc_optim_step_f32(&h, t32, nt, nthreads)
    finally:
        PyMem_Free(buf)


def simd_level():
    return fc_simd_level()


def simd_supported():
    return fc_simd_supported()


def set_simd_level(int level):
    return fc_set_simd_level(level)


def simd_name(int level):
    return fc_simd_name(level).decode()


def _simd_levels_used(bint reset=False):
    """Tests: names of the SIMD levels at which vector paths ran since the last
    reset (a reset clears the record after reading it)."""
    cdef int mask = fc_simd_levels_used(1 if reset else 0)
    return {fc_simd_name(lv).decode() for lv in range(3) if mask & (1 << lv)}


def openmp_enabled():
    return bool(fc_openmp_enabled())


def max_threads():
    return fc_max_threads()


def set_max_threads(int n):
    fc_set_max_threads(n)


def forked_child():
    return bool(fc_forked_child())


def thread_limit():
    """The most threads a kernel runs with: min(FC_MAX_TEAM, omp_get_thread_limit())."""
    return fc_thread_limit()


def team_stats():
    """The team controller's state (csrc/fc_team.c) as a dict."""
    cdef fc_team_stats s
    fc_team_get_stats(&s)
    return {"threads_last_call": s.last_team, "cap": s.cap,
            "cap_left_s": s.cap_left_ns * 1e-9, "backoff_s": s.backoff_ns * 1e-9,
            "parallel_regions": s.parallel_regions, "late_regions": s.late_regions,
            "backoffs": s.backoffs, "scout_late": s.scout_late,
            "waited_s": s.wait_ns * 1e-9, "descheduled_regions": s.descheduled,
            "stalled_regions": s.stalled,
            "adaptive": bool(fc_team_adaptive())}


def team_reset(double backoff_s=0.0, int strikes=0):
    """Forget the controller's history; back-offs start at ``backoff_s`` (0: 16 ms).

    ``strikes``: late observations (regions within 100 ms, or scout answers in a
    row) that make a back-off; 0 means the default, 2. Tests of single events pass 1.
    """
    fc_team_reset(<int64_t>(backoff_s * 1e9), strikes)


def team_region_late(double total_s, double work_s, double late_s, double off_s):
    """Tests: would the controller judge a region with these timings late?"""
    return bool(fc_team_region_late(<int64_t>(total_s * 1e9), <int64_t>(work_s * 1e9),
                                    <int64_t>(late_s * 1e9), <int64_t>(off_s * 1e9)))


def team_simulate_full(full):
    """Tests: the scout reads every core busy (True) or not (False) until the next
    ``team_reset``; None: it reads the run queue."""
    fc_team_simulate_full(-1 if full is None else int(bool(full)))


def team_simulate_sched(waited):
    """Tests: late regions' threads waited for a CPU (True: contention) or did not
    (False: a stall of their own) until the next ``team_reset``; None: read the
    real run delay."""
    fc_team_simulate_sched(-1 if waited is None else int(bool(waited)))


def team_run_delay():
    """Tests: the controller's run-delay reading. Seconds the process's threads
    spent waiting for a CPU since the previous reading; None if that reading is
    older than the strike window (100 ms) or there was none; -1.0 where the
    system keeps no such statistics."""
    cdef int64_t grown = 0
    cdef int r = fc_team_run_delay(&grown)
    if r < 0:
        return -1.0
    return grown * 1e-9 if r else None


def team_cores_full():
    """Whether every core has a runnable thread besides the caller (/proc/loadavg)."""
    return bool(fc_team_cores_full())


def team_adaptive(on=None):
    """Return whether late helpers cap the team; set it first when ``on`` is given."""
    if on is not None:
        fc_team_set_adaptive(bool(on))
    return bool(fc_team_adaptive())


_ROUTE_OVERRIDES = {"gemm_kc": 0, "gemm_tasks": 1, "gemm_slot": 2, "gemm_packa": 3,
                    "gemm_packb": 4, "dw_dot_max": 5, "dx_col2im_max_c": 6,
                    "dx_lanes_max_c": 7, "fwd_lanes_max_c": 8, "dw_dot_rows": 9,
                    "dx_phase_rows": 10, "dw_direct_rows": 11, "dw_lanes": 12}


def set_route_override(name, value):
    """Tests: force a route choice (``None`` restores the driver's own).

    ``name``: gemm_kc, gemm_tasks, gemm_slot, gemm_packa, gemm_packb (dense GEMM
    plan), dw_dot_max (grad_weight dot route up to this many weights per group),
    dx_col2im_max_c (grad_input col2im route up to this many channels per group),
    dx_lanes_max_c (grad_input image-lanes route up to this many channels; 0: never),
    fwd_lanes_max_c (forward image-lanes route up to this many channels; 0: never),
    dw_dot_rows (grad_weight dot route: 4 keeps 4-row tiles where 3-row ones would run),
    dx_phase_rows (grad_input, groups 1: 0 gives each stride phase its own tasks),
    dw_direct_rows (grad_weight packed route: 0 reads patches from im2col copies),
    dw_lanes (grad_weight image-lanes route: 0 never, 1 wherever it fits, any batch).
    """
    if name not in _ROUTE_OVERRIDES:
        raise ValueError(f"set_route_override: name must be one of {sorted(_ROUTE_OVERRIDES)}, "
                         f"got {name!r}")
    fc_set_route_override(_ROUTE_OVERRIDES[name], 0 if value is None else int(value),
                          value is not None)


def team_simulate_late(double wait_s, int regions, double then_s=-1.0):
    """Tests: the next ``regions`` parallel regions (or scout answers) report ``wait_s``,
    and every later one ``then_s`` (< 0: what it really waited) until the next reset."""
    fc_team_simulate_late(<int64_t>(wait_s * 1e9), regions,
                          <int64_t>(then_s * 1e9) if then_s >= 0 else -1)


def release_scratch():
    fc_scratch_release()


def scratch_bytes():
    return fc_scratch_bytes()


def compiler():
    return fc_compiler().decode()


include "_plan_program.pxi"
