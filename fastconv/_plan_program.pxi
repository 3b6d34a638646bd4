# Included by _kernels.pyx (one extension module; kept in its own file so each
# file has one job): an inference plan's kernel calls made from C in one call.

# ---- an inference plan's steps run in one call (fastconv.nn.plan) -----------------
# Op codes of PlanProgram; the plan builds the op tuples.
(OP_CONV, OP_WINO, OP_MAXPOOL, OP_AVGPOOL, OP_RELU, OP_RELU_NUMPY, OP_LINEAR, OP_CONV_POOL,
 OP_WINO_POOL, OP_WINO_ROWS, OP_WINO_ROWS_POOL) = range(11)
# Variants of OP_LINEAR's weight slot: W itself (0) or the step's kept copy.
cdef enum:
    _LINEAR_KMAJOR = 1
    _LINEAR_PANELS = 2
LINEAR_KMAJOR, LINEAR_PANELS = _LINEAR_KMAJOR, _LINEAR_PANELS

cdef struct _plan_op:
    int code, f64, src, dst, w, b, relu
    fc_conv_geom cg
    fc_pool_geom pg
    Py_ssize_t n, nin, nout, ldw


cdef int _run_op(_plan_op *op, void **p, int variant, int nthreads) noexcept nogil:
    """One op on the arrays' data pointers p (slots); variant != 0: the step's kept
    derived weight (Winograd U and its packing, a Linear's copy of W) is in slot w."""
    cdef int code = op.code
    cdef int rc
    if code == 7:  # conv, then its 2x2/2 max-pool, in one pass
        if op.f64:
            return fc_conv2d_fwd_maxpool2_f64(<const double *>p[op.src], <const double *>p[op.w],
                                              <const double *>p[op.b], &op.cg, op.relu,
                                              nthreads, <double *>p[op.dst])
        return fc_conv2d_fwd_maxpool2_f32(<const float *>p[op.src], <const float *>p[op.w],
                                          <const float *>p[op.b], &op.cg, op.relu, nthreads,
                                          <float *>p[op.dst])
    if code == 8:  # Winograd conv, then its 2x2/2 max-pool, in one pass
        if variant:
            return fc_conv2d_fwd_wino_packed_maxpool2_f32(
                <const float *>p[op.src], <const float *>p[op.w], <const float *>p[op.b],
                &op.cg, op.relu, nthreads, <float *>p[op.dst])
        return fc_conv2d_fwd_wino_maxpool2_f32(<const float *>p[op.src], <const float *>p[op.w],
                                               <const float *>p[op.b], &op.cg, op.relu,
                                               nthreads, <float *>p[op.dst])
    if code == 6:
        rc = _run_linear(op, p, variant, nthreads)
        if rc == FC_OK and op.relu:  # the next layer's ReLU, on the output in place
            if op.n * op.nout < 16384:  # no call: fc_relu_fwd's region costs more
                _relu_small(p[op.dst], op.n * op.nout, op.f64)
                return FC_OK
            if op.f64:
                return fc_relu_fwd_f64(<const double *>p[op.dst], op.n * op.nout, nthreads,
                                       <double *>p[op.dst])
            return fc_relu_fwd_f32(<const float *>p[op.dst], op.n * op.nout, nthreads,
                                   <float *>p[op.dst])
        return rc
    if code == 0:
        if op.f64:
            return fc_conv2d_fwd_f64(<const double *>p[op.src], <const double *>p[op.w],
                                     <const double *>p[op.b], &op.cg, op.relu, nthreads,
                                     <double *>p[op.dst])
        return fc_conv2d_fwd_f32(<const float *>p[op.src], <const float *>p[op.w],
                                 <const float *>p[op.b], &op.cg, op.relu, nthreads,
                                 <float *>p[op.dst])
    if code == 1:
        if variant:
            return fc_conv2d_fwd_wino_packed_f32(<const float *>p[op.src],
                                                 <const float *>p[op.w], <const float *>p[op.b],
                                                 &op.cg, op.relu, nthreads, <float *>p[op.dst])
        return fc_conv2d_fwd_wino_f32(<const float *>p[op.src], <const float *>p[op.w],
                                      <const float *>p[op.b], &op.cg, op.relu, nthreads,
                                      <float *>p[op.dst])
    if code == 10:  # row-Winograd conv, then its 2x2/2 max-pool, in one pass
        return fc_conv2d_fwd_rowwino_maxpool2_f32(<const float *>p[op.src], <const float *>p[op.w],
                                                  <const float *>p[op.b], &op.cg, op.relu,
                                                  nthreads, <float *>p[op.dst])
    if code == 9:  # row-Winograd conv (float32)
        return fc_conv2d_fwd_rowwino_f32(<const float *>p[op.src], <const float *>p[op.w],
                                         <const float *>p[op.b], &op.cg, op.relu, nthreads,
                                         <float *>p[op.dst])
    if code == 2:
        if op.f64:
            return fc_maxpool2d_fwd_f64(<const double *>p[op.src], &op.pg, nthreads,
                                        <double *>p[op.dst], NULL)
        return fc_maxpool2d_fwd_f32(<const float *>p[op.src], &op.pg, nthreads,
                                    <float *>p[op.dst], NULL)
    if code == 3:
        if op.f64:
            return fc_avgpool2d_fwd_f64(<const double *>p[op.src], &op.pg, nthreads,
                                        <double *>p[op.dst])
        return fc_avgpool2d_fwd_f32(<const float *>p[op.src], &op.pg, nthreads,
                                    <float *>p[op.dst])
    if code == 4:
        if op.f64:
            return fc_relu_fwd_f64(<const double *>p[op.src], op.n, nthreads,
                                   <double *>p[op.dst])
        return fc_relu_fwd_f32(<const float *>p[op.src], op.n, nthreads, <float *>p[op.dst])
    return FC_OK


cdef void _relu_small(void *y, Py_ssize_t n, int f64) noexcept nogil:
    """y = y <= 0 ? 0 : y in place (NaN stays): fc_relu_fwd's rule, element by element."""
    cdef Py_ssize_t i
    cdef float *yf = <float *>y
    cdef double *yd = <double *>y
    cdef float vf
    cdef double vd
    if f64:
        for i in range(n):
            vd = yd[i]
            yd[i] = 0.0 if vd <= 0 else vd
    else:
        for i in range(n):
            vf = yf[i]
            yf[i] = 0.0 if vf <= 0 else vf


cdef int _run_linear(_plan_op *op, void **p, int variant, int nthreads) noexcept nogil:
    """The Linear op: from the kept copy in slot w (variant LINEAR_KMAJOR: k-major;
    LINEAR_PANELS: panels, one row), else (0) fc_gemm on W."""
    if variant == _LINEAR_PANELS:
        if op.f64:
            return fc_linear_fwd_panels_f64(<const double *>p[op.src], <const double *>p[op.w],
                                            <const double *>p[op.b], op.nin, op.nout, nthreads,
                                            <double *>p[op.dst])
        return fc_linear_fwd_panels_f32(<const float *>p[op.src], <const float *>p[op.w],
                                        <const float *>p[op.b], op.nin, op.nout, nthreads,
                                        <float *>p[op.dst])
    if variant == _LINEAR_KMAJOR:
        if op.f64:
            return fc_linear_fwd_kmajor_f64(<const double *>p[op.src], <const double *>p[op.w],
                                            op.ldw, <const double *>p[op.b], op.n, op.nin,
                                            op.nout, nthreads, <double *>p[op.dst])
        return fc_linear_fwd_kmajor_f32(<const float *>p[op.src], <const float *>p[op.w],
                                        op.ldw, <const float *>p[op.b], op.n, op.nin,
                                        op.nout, nthreads, <float *>p[op.dst])
    if op.f64:
        return fc_gemm_f64(0, 1, op.n, op.nout, op.nin, <const double *>p[op.src], op.nin,
                           <const double *>p[op.w], op.nin, <const double *>p[op.b],
                           FC_BIAS_COLS, 0, nthreads, <double *>p[op.dst], op.nout)
    return fc_gemm_f32(0, 1, op.n, op.nout, op.nin, <const float *>p[op.src], op.nin,
                       <const float *>p[op.w], op.nin, <const float *>p[op.b],
                       FC_BIAS_COLS, 0, nthreads, <float *>p[op.dst], op.nout)


cdef class PlanProgram:
    """The kernel calls of an inference plan, made from C one after the other.

    ``ops``: one tuple per op, ``(code, f64, src, dst, w, b, relu, geom, extra)``
    with slots into the arrays ``run`` gets, ``geom`` a conv or pool geometry
    tuple (or None) and ``extra`` the op's sizes: pool ``count_include_pad``,
    ReLU ``(n,)``, Linear ``(n, nin, nout, ldw)`` (its ``relu``: the next
    layer's ReLU applied in place). ``OP_CONV_POOL`` / ``OP_WINO_POOL``: a
    direct / Winograd conv (its geometry) whose output goes straight through a
    2x2/2 max-pool; ``OP_WINO_ROWS`` / ``OP_WINO_ROWS_POOL``: the row-Winograd
    conv, without / with that pool. The plan has checked every
    shape, dtype and contiguity; nothing is checked here.
    """
    cdef _plan_op *ops
    cdef int nops
    cdef int nslots

    def __cinit__(self, list ops, int nslots):
        self.nops = len(ops)
        self.nslots = nslots
        self.ops = <_plan_op *>PyMem_Malloc(sizeof(_plan_op) * max(1, self.nops))
        if self.ops == NULL:
            raise MemoryError()
        cdef int i
        cdef _plan_op *op
        for i in range(self.nops):
            code, f64, src, dst, w, b, relu, geom, extra = ops[i]
            op = &self.ops[i]
            op.code, op.f64, op.src, op.dst, op.w, op.b, op.relu = code, f64, src, dst, w, b, relu
            op.n = op.nin = op.nout = op.ldw = 0
            if code in (0, 1, 7, 8, 9, 10):
                op.cg = _conv_geom(geom)
            elif code in (2, 3):
                op.pg = _pool_geom(geom, bool(extra))
            elif code in (4, 5):
                op.n = extra[0]
            elif code == 6:
                op.n, op.nin, op.nout, op.ldw = extra

    def __dealloc__(self):
        PyMem_Free(self.ops)

    def run(self, list arrays, list variants, int nthreads):
        """Run the ops on ``arrays`` (ndarray or None per slot); ``variants[i]``
        is op i's variant (1: the kept derived weight is in its ``w`` slot)."""
        cdef void *p[256]
        cdef int var[256]
        cdef int i, rc = FC_OK
        cdef object a
        if self.nslots > 256 or self.nops > 256 or len(arrays) < self.nslots \
                or len(variants) < self.nops:
            raise ValueError("PlanProgram.run: arrays do not match the program")
        for i in range(self.nslots):
            a = arrays[i]
            p[i] = NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)
        for i in range(self.nops):
            var[i] = variants[i]
        i = 0
        while i < self.nops and rc == FC_OK:
            if self.ops[i].code == 5:  # np.maximum's bits (ReLU's small-size rule)
                np_maximum(arrays[self.ops[i].src], 0, out=arrays[self.ops[i].dst])
                i += 1
                continue
            with nogil:  # the GIL once for a run of compiled ops
                while i < self.nops and self.ops[i].code != 5:
                    rc = _run_op(&self.ops[i], p, var[i], nthreads)
                    i += 1
                    if rc != FC_OK:
                        break
        _check(rc)


from numpy import maximum as np_maximum
