/* fc_conv_fwd.c - the convolution forward, for float and double. */
#include "fc_internal.h"

#define FC_TEMPLATE "fc_conv_fwd_impl.h"
#include "fc_instantiate.h"
