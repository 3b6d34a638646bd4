"""Layers, losses, initialisers and a Keras-style ``Sequential`` model.

Everything convolution- and pooling-shaped runs in the compiled kernels
(``fastconv.conv2d`` and friends); this package is the thin layer on top:

* ``Module`` / ``Parameter`` - forward/backward building blocks
* layers - ``Conv2d``, ``Conv1d``, ``MaxPool2d``, ``AvgPool2d``, ``MaxPool1d``, ``AvgPool1d``, ``Linear`` (``Dense``),
  ``Flatten``, ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``Dropout``,
  ``BatchNorm1d``, ``BatchNorm2d``
* activations and pooling - ``LeakyReLU``, ``ELU``, ``GELU``, ``SiLU``,
  ``LogSoftmax``, ``GlobalAvgPool2d``, ``GlobalMaxPool2d``, ``AdaptiveAvgPool2d``
* ONNX forms - ``Gemm`` (a transposed input or a per-row bias), ``Cast``
* losses - ``CrossEntropyLoss``, ``MSELoss``, ``BCEWithLogitsLoss``, ``BCELoss``,
  ``NLLLoss``
* ``init`` - zeros, normal, Glorot/Xavier, He/Kaiming initialisers
* ``Sequential`` - a stack of layers, with ``compile`` / ``fit`` / ``evaluate`` /
  ``predict`` / ``save`` (the training loop is in ``trainer`` and ``training_loop``)
* ``callbacks`` - ``LearningRateScheduler``, ``EarlyStopping``, ``ModelCheckpoint``
* ``load_model``, ``save_checkpoint``, ``load_checkpoint`` - ``.npz`` persistence
"""

from . import callbacks, init, metrics
from .activations import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .callbacks import (
    Callback,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from .conv import Conv1d, Conv2d
from .dense import Cast, Dense, Flatten, Gemm, Linear
from .layer_base import get_layer_class, layer_from_config, register_layer
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, NLLLoss, get_loss
from .module import Module, Parameter, is_grad_enabled, no_grad
from .metrics import confusion_matrix, per_class_accuracy
from .normalization import BatchNorm1d, BatchNorm2d, Dropout
from .plan import LayerInputError
from .pooling import (
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    MaxPool1d,
    MaxPool2d,
)
from .sequential import Sequential
from .serialization import load_checkpoint, load_model, save_checkpoint, save_model

__all__ = [
    "Module",
    "Parameter",
    "no_grad",
    "is_grad_enabled",
    "Conv2d",
    "Conv1d",
    "MaxPool2d",
    "AvgPool2d",
    "MaxPool1d",
    "AvgPool1d",
    "Linear",
    "Dense",
    "Flatten",
    "Gemm",
    "Cast",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "LogSoftmax",
    "GlobalAvgPool2d",
    "GlobalMaxPool2d",
    "AdaptiveAvgPool2d",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "Loss",
    "CrossEntropyLoss",
    "MSELoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "NLLLoss",
    "get_loss",
    "Sequential",
    "Callback",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "ModelCheckpoint",
    "register_layer",
    "get_layer_class",
    "layer_from_config",
    "save_model",
    "load_model",
    "save_checkpoint",
    "load_checkpoint",
    "init",
    "callbacks",
    "metrics",
    "confusion_matrix",
    "per_class_accuracy",
    "LayerInputError",
]
