"""Roman DQ flags and the bit-spec strings of the romancal documentation,
section "Parameter Specification".

The flag values are roman_datamodels' own (`pixel` for PIXELDQ/DQ, `group` for
GROUPDQ), so our products and romancal's agree bit for bit. Kernels receive the
flags as an argument; this module is where scripts get them from.
"""

from __future__ import annotations

import numpy as np
from astropy.nddata.bitmask import interpret_bit_flags
from roman_datamodels.dqflags import group, pixel

__all__ = ["group", "pixel", "FLAG_NAMES", "interpret_bit_spec", "good_pixel_mask"]

# The documentation's own example writes NON_LINEAR for the NONLINEAR flag;
# accept both so that a spec copied from the docs works.
_SPELLING_ALIASES = {"NON_LINEAR": pixel.NONLINEAR}

FLAG_NAMES: dict[str, int] = {
    **{flag.name: int(flag) for flag in pixel if flag.name != "GOOD"},
    **{alias: int(value) for alias, value in _SPELLING_ALIASES.items()},
}


def interpret_bit_spec(spec: str | int | None) -> int | None:
    """Return the "good bits" value of a DQ bit spec, or None to ignore DQ.

    Accepts every documented form: ``"12"``, ``"4+8"``, ``"4, 8"``,
    ``"JUMP_DET, DROPOUT"``, ``"~4+8"``, ``"~DO_NOT_USE+NON_SCIENCE"``, ``None``
    and ``"~0"``. A leading ``~`` turns the listed bits into the *bad* bits; the
    returned value is then the bitwise complement (a negative int), so ``"~0"``
    gives ``-1``: every bit good, which is what ``None`` means too.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().upper() == "NONE"):
        return None
    try:
        value = interpret_bit_flags(spec, flag_name_map=FLAG_NAMES)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"invalid DQ bit spec {spec!r}: {err}") from None
    return None if value is None else int(value)


def good_pixel_mask(dq: np.ndarray, spec: str | int | None) -> np.ndarray:
    """True where a pixel's DQ holds only bits that ``spec`` calls good."""
    good_bits = interpret_bit_spec(spec)
    if good_bits is None:
        return np.ones(dq.shape, dtype=bool)
    bad_bits = np.array(~good_bits & 0xFFFFFFFF, dtype=np.uint32)
    return (dq.astype(np.uint32, copy=False) & bad_bits) == 0
