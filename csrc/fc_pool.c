/* fc_pool.c - instantiates the pooling kernels for float and double. */
#include <math.h>

#include "fc_internal.h"

#define REAL float
#define SFX(name) name##_f32
#include "fc_pool_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "fc_pool_impl.h"
#undef REAL
#undef SFX
