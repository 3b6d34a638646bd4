/* fc_conv_grad_input.c - the convolution grad_input routes, for float and double. */
#include "fc_internal.h"

#define FC_TEMPLATE "fc_conv_grad_input_impl.h"
#include "fc_instantiate.h"
