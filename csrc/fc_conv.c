/* fc_conv.c - instantiates the convolution drivers for float and double. */
#include "fc_internal.h"

#define REAL float
#define SFX(name) name##_f32
#define KERN fc_kernels_f32
#define GETK fc_get_kernels_f32
#include "fc_conv_impl.h"
#undef REAL
#undef SFX
#undef KERN
#undef GETK

#define REAL double
#define SFX(name) name##_f64
#define KERN fc_kernels_f64
#define GETK fc_get_kernels_f64
#include "fc_conv_impl.h"
#undef REAL
#undef SFX
#undef KERN
#undef GETK
