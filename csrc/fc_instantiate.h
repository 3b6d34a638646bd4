/*
 * fc_instantiate.h - the one way fastconv makes float and double variants.
 *
 * A driver is written once, in a template header (fc_*_impl.h), in terms of
 *
 *     REAL     float / double
 *     SFX(f)   f##_f32 / f##_f64       (every function and type it defines)
 *     UINT     uint32_t / uint64_t     (an unsigned integer of REAL's width)
 *     KERN     fc_kernels_f32 / _f64   (micro-kernel table, GETK() returns it)
 *     RKERN    fc_ukr_rows_f32 / _f64  (row-A kernels, GETR() returns their table)
 *     NARROW   fc_narrow_rows_f32 / _f64 (GETN() returns it)
 *     GEMV     fc_gemv_f32 / _f64      (single-row k-major kernel, GETV() returns it)
 *
 * and a .c file instantiates it for both dtypes with
 *
 *     #define FC_TEMPLATE "fc_conv_fwd_impl.h"
 *     #include "fc_instantiate.h"
 *
 * (Hand-written SIMD kernels whose intrinsics differ per dtype, in
 * fc_ukernels.c and fc_pool.c, are the only _f32/_f64 pairs written twice.)
 */
#ifndef FC_TEMPLATE
#error "define FC_TEMPLATE (the template header) before including fc_instantiate.h"
#endif

#define REAL float
#define UINT uint32_t
#define SFX(name) name##_f32
#define KERN fc_kernels_f32
#define GETK fc_get_kernels_f32
#define RKERN fc_ukr_rows_f32
#define GETR fc_get_row_kernels_f32
#define NARROW fc_narrow_rows_f32
#define GETN fc_get_narrow_rows_f32
#define GEMV fc_gemv_f32
#define GETV fc_get_gemv_f32
#include FC_TEMPLATE
#undef REAL
#undef UINT
#undef SFX
#undef KERN
#undef GETK
#undef RKERN
#undef GETR
#undef NARROW
#undef GETN
#undef GEMV
#undef GETV

#define REAL double
#define UINT uint64_t
#define SFX(name) name##_f64
#define KERN fc_kernels_f64
#define GETK fc_get_kernels_f64
#define RKERN fc_ukr_rows_f64
#define GETR fc_get_row_kernels_f64
#define NARROW fc_narrow_rows_f64
#define GETN fc_get_narrow_rows_f64
#define GEMV fc_gemv_f64
#define GETV fc_get_gemv_f64
#include FC_TEMPLATE
#undef REAL
#undef UINT
#undef SFX
#undef KERN
#undef GETK
#undef RKERN
#undef GETR
#undef NARROW
#undef GETN
#undef GEMV
#undef GETV

#undef FC_TEMPLATE
