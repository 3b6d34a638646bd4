"""Data expansion: transforms ``transform(x_batch, rng) -> x_batch`` and ``expand_dataset``.

Float batches of shape ``(N, C, H, W)`` in ``[0, 1]``; usable as
``Sequential.fit(..., augment=...)``. Re-exported by ``fastconv.datasets``.
"""

import numpy as np

from ._validate import (check_float_array, check_int, check_ndim, check_number, check_rng,
                        check_xy)

__all__ = ["shift_images", "rotate_images", "RandomShift", "RandomRotation", "GaussianNoise",
           "Compose", "expand_dataset"]


def _check_batch(x, func):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{func}: x must be an ndarray, got {type(x).__name__}")
    check_ndim(func, "x", x, 4, "(N, C, H, W)")
    return check_float_array(func, "x", x)


def _per_image(v, n, name, func):
    v = np.asarray(v)
    if v.ndim == 0:
        v = np.full(n, v)
    if v.shape != (n,):
        raise ValueError(f"{func}: {name} must be a scalar or have shape ({n},), got shape {v.shape}")
    return v


def shift_images(x, dy, dx):
    """Translate images by whole pixels, filling with zeros.

    ``out[n, c, i, j] = x[n, c, i - dy[n], j - dx[n]]`` (zero outside), so a
    positive ``dy`` moves the content down and a positive ``dx`` moves it right.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    dy, dx : int or array of int, shape (N,)

    Returns
    -------
    ndarray of the shape and dtype of ``x`` (a new array).
    """
    x = _check_batch(x, "shift_images")
    n, c, h, w = x.shape
    dy = _per_image(dy, n, "dy", "shift_images").astype(np.intp)
    dx = _per_image(dx, n, "dx", "shift_images").astype(np.intp)
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    m = min(m, max(h, w))  # shifting farther than the image is the same as blanking it
    dy = np.clip(dy, -m, m)
    dx = np.clip(dx, -m, m)
    padded = np.zeros((n, c, h + 2 * m, w + 2 * m), dtype=x.dtype)
    padded[:, :, m:m + h, m:m + w] = x
    rows = np.arange(h)[None, :] + m - dy[:, None]  # (N, H)
    cols = np.arange(w)[None, :] + m - dx[:, None]  # (N, W)
    return padded[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def rotate_images(x, degrees):
    """Rotate images about their centres with bilinear interpolation, zero fill.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    degrees : float or array of float, shape (N,)
        Anticlockwise angle (as displayed, row 0 at the top) for each image.

    Returns
    -------
    ndarray of the shape and dtype of ``x`` (a new array). A convex combination
    of input pixels and zeros, so values stay within the input's range and 0.
    """
    x = _check_batch(x, "rotate_images")
    n, c, h, w = x.shape
    theta = np.deg2rad(_per_image(degrees, n, "degrees", "rotate_images").astype(np.float64))
    cos = np.cos(theta)[:, None, None]
    sin = np.sin(theta)[:, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy = (np.arange(h, dtype=np.float64) - cy)[None, :, None]
    xx = (np.arange(w, dtype=np.float64) - cx)[None, None, :]
    # Inverse map: the source point that lands on each output pixel (N, H, W).
    # With rows pointing down, an anticlockwise display rotation by t sends
    # (y, x) -> (y cos t - x sin t, x cos t + y sin t); invert with -t.
    sy = cos * yy + sin * xx + cy
    sx = cos * xx - sin * yy + cx
    y0 = np.floor(sy)
    x0 = np.floor(sx)
    wy = (sy - y0).astype(x.dtype)[:, None]
    wx = (sx - x0).astype(x.dtype)[:, None]
    # One ring of zero padding; indices clipped into it read zeros, which makes
    # sources outside the image (or half outside) fade to the fill value.
    padded = np.zeros((n, c, h + 2, w + 2), dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    y0i = np.clip(y0.astype(np.intp), -1, h) + 1
    x0i = np.clip(x0.astype(np.intp), -1, w) + 1
    y1i = np.clip(y0.astype(np.intp) + 1, -1, h) + 1
    x1i = np.clip(x0.astype(np.intp) + 1, -1, w) + 1
    ni = np.arange(n)[:, None, None, None]
    ci = np.arange(c)[None, :, None, None]
    y0i, x0i, y1i, x1i = (a[:, None] for a in (y0i, x0i, y1i, x1i))
    top = padded[ni, ci, y0i, x0i] * (1 - wx) + padded[ni, ci, y0i, x1i] * wx
    bottom = padded[ni, ci, y1i, x0i] * (1 - wx) + padded[ni, ci, y1i, x1i] * wx
    return top * (1 - wy) + bottom * wy


class RandomShift:
    """Shift each image by a random whole number of pixels in each direction.

    Parameters
    ----------
    max_shift : int, default 2
        Shifts are drawn uniformly from ``-max_shift .. max_shift`` independently
        for rows and columns; vacated pixels are zero.

    Examples
    --------
    >>> aug = RandomShift(2)
    >>> x_aug = aug(x_batch, np.random.default_rng(0))   # doctest: +SKIP
    """

    def __init__(self, max_shift=2):
        self.max_shift = check_int("RandomShift", "max_shift", max_shift, minimum=0)

    def __call__(self, x, rng):
        x = _check_batch(x, "RandomShift")
        rng = check_rng("RandomShift", "rng", rng)
        m = self.max_shift
        d = rng.integers(-m, m + 1, size=(2, len(x)))
        return shift_images(x, d[0], d[1])

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomRotation:
    """Rotate each image by a random angle (bilinear interpolation, zero fill).

    Parameters
    ----------
    max_degrees : float, default 10
        Angles are drawn uniformly from ``[-max_degrees, max_degrees]``.
    """

    def __init__(self, max_degrees=10):
        max_degrees = check_number("RandomRotation", "max_degrees", max_degrees)
        if max_degrees > 180:
            raise ValueError(f"RandomRotation: max_degrees must lie in [0, 180], got {max_degrees}")
        self.max_degrees = float(max_degrees)

    def __call__(self, x, rng):
        x = _check_batch(x, "RandomRotation")
        rng = check_rng("RandomRotation", "rng", rng)
        angles = rng.uniform(-self.max_degrees, self.max_degrees, size=len(x))
        return rotate_images(x, angles)

    def __repr__(self):
        return f"RandomRotation(max_degrees={self.max_degrees:g})"


class GaussianNoise:
    """Add i.i.d. Gaussian noise, then clip to ``[0, 1]``.

    Parameters
    ----------
    std : float, default 0.05
        Standard deviation of the noise.
    """

    def __init__(self, std=0.05):
        self.std = check_number("GaussianNoise", "std", std)

    def __call__(self, x, rng):
        x = _check_batch(x, "GaussianNoise")
        rng = check_rng("GaussianNoise", "rng", rng)
        noise = rng.standard_normal(x.shape, dtype=x.dtype)
        noise *= x.dtype.type(self.std)
        noise += x
        return np.clip(noise, 0, 1, out=noise)

    def __repr__(self):
        return f"GaussianNoise(std={self.std:g})"


class Compose:
    """Apply transforms in order, all drawing from the same generator.

    Parameters
    ----------
    transforms : sequence of callables ``(x_batch, rng) -> x_batch``
    """

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] is not callable: {t!r}")
        self.transforms = transforms

    def __call__(self, x, rng):
        rng = check_rng("Compose", "rng", rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


def expand_dataset(x, y, copies, transform, seed=0, *, include_original=True, chunk_size=4096):
    """Enlarge a training set with transformed copies (the classic "expand MNIST").

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    y : ndarray of shape (N, ...)
    copies : int >= 0
        Transformed copies of the whole set to add.
    transform : callable ``(x_batch, rng) -> x_batch``
        E.g. ``Compose([RandomShift(2), RandomRotation(10)])``.
    seed : int or numpy.random.Generator, default 0
        Same seed -> same expanded set.
    include_original : bool, default True
        Put the untransformed data first.
    chunk_size : int, default 4096
        Images transformed per call, to bound temporary memory.

    Returns
    -------
    x_expanded, y_expanded
        ``(copies + include_original) * N`` samples, in blocks of N: the
        original (if included), then copy 1, copy 2, ...
    """
    x = _check_batch(x, "expand_dataset")
    x, y = check_xy("expand_dataset", x, y)
    copies = check_int("expand_dataset", "copies", copies, minimum=0)
    chunk_size = check_int("expand_dataset", "chunk_size", chunk_size, minimum=1)
    if not callable(transform):
        raise TypeError(f"expand_dataset: transform must be callable, got {transform!r}")
    rng = check_rng("expand_dataset", "seed", seed)
    n = len(x)
    blocks = copies + bool(include_original)
    x_out = np.empty((blocks * n,) + x.shape[1:], dtype=x.dtype)
    y_out = np.concatenate([y] * blocks) if blocks else y[:0].copy()
    pos = 0
    if include_original:
        x_out[:n] = x
        pos = n
    for _ in range(copies):
        for start in range(0, n, chunk_size):
            xb = transform(x[start:start + chunk_size], rng)
            x_out[pos + start:pos + start + len(xb)] = xb
        pos += n
    return x_out, y_out
