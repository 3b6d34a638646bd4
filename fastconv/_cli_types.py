"""Argument types of the ``fastconv`` command: text -> value, or argparse's error.

Each type raises ``argparse.ArgumentTypeError`` with the rule's words only;
argparse puts ``argument --flag:`` in front (tests and users match on
``--epochs: must be >= 1``). A resumed run checks the settings stored in its
checkpoint with these same types (``_cli_resume.checked_settings``).

Where the rule is one the library has, the library's check decides it: integer
bounds are ``fastconv._validate.check_int``, the thread limit is
``_runtime.max_num_threads``. The float intervals are the command's own rules
(``--lr`` > 0 and ``--lr-decay`` in (0, 1] are stricter than the optimisers'
and ``ExponentialDecay``'s ``>= 0``, because 0 trains nothing and a factor above
1 grows the rate), and their message names the interval, so they stay here.
"""

import argparse
import math

from ._validate import check_int

__all__ = ["MAX_INT_ARG", "int_at_least", "thread_count", "float_in", "parse_augment",
           "augment_arg"]

# The largest integer any count or seed argument accepts. Past 64 bits a count
# is a typo or an attack: fit's n / batch_size rounds to 0.0 for a 400-digit
# batch size (found by the loader fuzzer).
MAX_INT_ARG = 2**63 - 1

# _validate's messages start "fn: name "; argparse names the flag itself.
_FN, _NAME = "fastconv", "argument"
_HEAD = f"{_FN}: {_NAME} "
# A too-large number typed with more characters than this is shown by its length.
_SHOWN_DIGITS = 30


def _argparse_error(exc, digits=None):
    """``exc`` of a ``_validate`` check in argparse's words (``digits``: the number's length)."""
    message = str(exc).removeprefix(_HEAD)
    if digits is not None:
        rule = message.rpartition(", got ")[0]
        message = f"{rule}, got a {digits}-digit number"
    return argparse.ArgumentTypeError(message)


def int_at_least(low):
    """The type of an integer flag: ``low <= value <= MAX_INT_ARG``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check_int(_FN, _NAME, value, minimum=low, maximum=MAX_INT_ARG)
        except ValueError as exc:
            # a 400-digit count made a 400-digit message
            long = value > MAX_INT_ARG and len(text) > _SHOWN_DIGITS
            raise _argparse_error(exc, len(text.strip()) if long else None) from None

    parse.__name__ = f"int>={low}"  # argparse's "invalid int>=1 value" if parse raised ValueError
    return parse


def thread_count(text):
    """--threads: 1 .. the most set_num_threads accepts (4 x the CPU count)."""
    value = int_at_least(1)(text)
    try:
        from ._runtime import max_num_threads
    except ImportError:  # no compiled kernels: the command reports that itself
        return value
    limit = max_num_threads()
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"must be at most {limit} (4 x the CPU count; more threads only wait for "
            f"each other), got {value}")
    return value


def float_in(low, high, low_open=True, high_open=False):
    """The type of a float flag: a finite number in the interval from ``low`` to ``high``."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        lo_ok = value > low if low_open else value >= low
        hi_ok = value < high if high_open else value <= high
        if not (math.isfinite(value) and lo_ok and hi_ok):
            lb = "(" if low_open else "["
            rb = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must lie in {lb}{low:g}, {high:g}{rb}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def parse_augment(spec):
    """Turn ``"shift:2,rotate:10,noise:0.05"`` into a transform (None for ``"none"``).

    Parameters
    ----------
    spec : str
        Comma-separated ``name[:value]`` items; names ``shift`` (max pixels,
        default 2), ``rotate`` (max degrees, default 10), ``noise`` (std,
        default 0.05), or ``none``.

    Returns
    -------
    callable or None

    Raises
    ------
    argparse.ArgumentTypeError
        Unknown name or bad value.
    """
    from . import datasets as ds

    makers = {"shift": (ds.RandomShift, int, 2), "rotate": (ds.RandomRotation, float, 10.0),
              "noise": (ds.GaussianNoise, float, 0.05)}
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if items == ["none"]:
        return None
    transforms = []
    for item in items:
        name, _, value = item.partition(":")
        if name not in makers:
            raise argparse.ArgumentTypeError(
                f"unknown augmentation {name!r} in {spec!r}; use shift[:PIXELS], rotate[:DEGREES],"
                " noise[:STD] or none"
            )
        cls, conv, default = makers[name]
        try:
            transforms.append(cls(conv(value) if value else default))
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"bad augmentation {item!r}: {exc}") from None
    if not transforms:
        raise argparse.ArgumentTypeError(f"empty augmentation spec {spec!r}")
    return transforms[0] if len(transforms) == 1 else ds.Compose(transforms)


def augment_arg(text):
    """--augment: checked now, so a bad spec gets a usage message; kept as text."""
    parse_augment(text)
    return text
