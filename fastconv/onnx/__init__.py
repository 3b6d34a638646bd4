"""ONNX export and import for ``fastconv.nn.Sequential`` models.

``export(model, path, input_shape=...)`` writes a standard ONNX file (opset
:data:`DEFAULT_OPSET` unless told otherwise, dynamic batch axis) that ONNX
Runtime, browsers and mobile runtimes can run. ``load(path)`` turns an ONNX
graph that is a chain of supported operators (as ``torch.onnx.export`` writes
for a ``torch.nn.Sequential``-style CNN) into a ``Sequential`` that predicts
the same outputs and can be trained further with ``fit``.

Needs the optional ``onnx`` package (``pip install "fastconv[onnx]"``); the
kernels never import it.

Loading treats the file as untrusted input, as ``fastconv.load_model`` does:
only regular files up to ``max_bytes`` are read; tensors stored outside the
file (external data) are refused, so a model cannot make fastconv open other
files; each tensor's declared element count is capped and checked against
the bytes actually present before anything is allocated; graphs with more
than ``max_nodes`` nodes are refused; nothing in the file is executed.

Where things live:

* ``_export.py`` - ``export``: one exporter per layer class, in one table;
* ``_load.py`` - ``load``/``from_onnx``: walking the chain, shape arithmetic,
  Conv+BatchNormalization folding;
* ``_ops.py`` - one table from ONNX operator to layer builder, with the
  attribute checks;
* ``_untrusted.py`` - the caps, reading the file, tensors checked before
  allocation, the on-demand ``import onnx``.

See ``docs/onnx.md`` for the operator table and what is not supported yet.
"""

# This package is ``fastconv.onnx``; ``import onnx`` inside it is an absolute
# import and so always finds the real ``onnx`` package, never this one.

from ._export import DEFAULT_OPSET, MIN_EXPORT_OPSET, export
from ._load import from_onnx, load
from ._untrusted import MAX_ELEMENTS, MAX_FILE_BYTES, MAX_NODES

__all__ = ["export", "load", "from_onnx", "DEFAULT_OPSET", "MAX_FILE_BYTES", "MAX_NODES",
           "MAX_ELEMENTS"]
