/* fc_gemm.c - the dense matrix product (fc_gemm_impl.h) and the dense layer
 * built on it (fc_linear_impl.h), for float and double. */
#include "fc_internal.h"

#if defined(__GNUC__)
#define FC_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
#else
#define FC_PREFETCH_W(p) ((void)(p))
#endif

#define FC_TEMPLATE "fc_gemm_impl.h"
#include "fc_instantiate.h"
#define FC_TEMPLATE "fc_linear_impl.h"
#include "fc_instantiate.h"
