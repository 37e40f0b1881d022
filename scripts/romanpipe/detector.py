"""The WFI detector's layout: a 4-pixel reference border around the 4088 x 4088 science pixels."""

from __future__ import annotations

import numpy as np

BORDER = 4  # width of the reference-pixel border on every side (pixels)


def science_pixels(array: np.ndarray) -> np.ndarray:
    """The view of the last two axes inside the reference border."""
    return array[..., BORDER:-BORDER, BORDER:-BORDER]


def matching_science_area(reference: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A reference array cut to a Level 2 image: as is, or without its border if it covers the readout.

    Reference files describe the full readout (4096 x 4096, as the FLAT of the romancal documentation) or just
    the science pixels; ValueError for any other shape.
    """
    if reference.shape[-2:] == tuple(image_shape[-2:]):
        return reference
    if tuple(np.subtract(reference.shape[-2:], 2 * BORDER)) == tuple(image_shape[-2:]):
        return science_pixels(reference)
    raise ValueError(f"reference has shape {reference.shape}, the image {tuple(image_shape)} "
                     f"(or {tuple(np.add(image_shape[-2:], 2 * BORDER))} with the reference border)")
