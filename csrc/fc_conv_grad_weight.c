/* fc_conv_grad_weight.c - the convolution grad_weight routes, for float and double. */
#include "fc_internal.h"

#define FC_TEMPLATE "fc_conv_grad_weight_impl.h"
#include "fc_instantiate.h"
