"""The built-in layers, gathered under their historical import path.

The layers live by kind and are re-exported here, so that
``from fastconv.nn.layers import Conv2d`` keeps working:

============================  ==============================================
``fastconv.nn.layer_base``    ``register_layer``, ``get_layer_class``,
                              ``layer_from_config``, argument checks
``fastconv.nn.conv``          ``Conv2d``, ``Conv1d``
``fastconv.nn.pooling``       ``MaxPool2d``, ``AvgPool2d``, global/adaptive
``fastconv.nn.dense``         ``Linear`` (``Dense``), ``Flatten``, ``Gemm``, ``Cast``
``fastconv.nn.activations``   ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax``, ...
``fastconv.nn.normalization`` ``Dropout``, ``BatchNorm1d``, ``BatchNorm2d``
============================  ==============================================

Layers are thin objects that hold parameters and call the functional
kernels: convolution and pooling go through ``fastconv.conv2d`` /
``max_pool2d`` / ``avg_pool2d`` and their backward kernels, dense layers
through ``fastconv.linear`` / ``linear_backward`` (fastconv's GEMM, not
NumPy's BLAS); activation, dropout and batch-norm layers are a few
whole-array NumPy calls each. Saved models name their layers by class name
(the registry), not by module, so the module a class lives in does not
matter to ``load_model``.
"""

from .activations import ReLU, Sigmoid, Softmax, Tanh, kernel_relu_propagates_nan
from .conv import Conv1d, Conv2d
from .dense import Dense, Flatten, Linear
from .layer_base import get_layer_class, layer_from_config, register_layer
from .normalization import BatchNorm1d, BatchNorm2d, Dropout
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d

__all__ = [
    "register_layer",
    "get_layer_class",
    "layer_from_config",
    "Conv2d",
    "Conv1d",
    "MaxPool2d",
    "AvgPool2d",
    "MaxPool1d",
    "AvgPool1d",
    "Linear",
    "Dense",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "kernel_relu_propagates_nan",
]
