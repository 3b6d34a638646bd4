/* fc_eltwise.c - element-wise ReLU passes that conv layers fuse around the kernels.
 * Written as `v <= 0 ? 0 : v` so that NaN passes through, as in NumPy's maximum and
 * PyTorch's relu / threshold_backward. The loops live in small functions with
 * restrict pointers so the compiler turns the select into a vector compare and
 * blend: a branch on the sign of random data mispredicts half the time (the
 * branchy version was 14% of a LeNet training step). */
#include "fc_internal.h"

#define FC_ELT_CHUNK 65536 /* elements per task: large enough to amortise the fork */

#define FC_TEMPLATE "fc_eltwise_impl.h"
#include "fc_instantiate.h"
