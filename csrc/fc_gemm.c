/* fc_gemm.c - instantiates the dense matrix product (fc_gemm_impl.h) for float and double. */
#include "fc_internal.h"

#if defined(__GNUC__)
#define FC_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
#else
#define FC_PREFETCH_W(p) ((void)(p))
#endif

#define REAL float
#define SFX(name) name##_f32
#define KERN fc_kernels_f32
#define GETK fc_get_kernels_f32
#define RKERN fc_ukr_rows_f32
#define GETR fc_get_row_kernels_f32
#define NARROW fc_narrow_rows_f32
#define GETN fc_get_narrow_rows_f32
#include "fc_gemm_impl.h"
#undef REAL
#undef SFX
#undef KERN
#undef GETK
#undef RKERN
#undef GETR
#undef NARROW
#undef GETN

#define REAL double
#define SFX(name) name##_f64
#define KERN fc_kernels_f64
#define GETK fc_get_kernels_f64
#define RKERN fc_ukr_rows_f64
#define GETR fc_get_row_kernels_f64
#define NARROW fc_narrow_rows_f64
#define GETN fc_get_narrow_rows_f64
#include "fc_gemm_impl.h"
#undef REAL
#undef SFX
#undef KERN
#undef GETK
#undef RKERN
#undef GETR
#undef NARROW
#undef GETN
