"""Which pixels of one image another image sees on the sky, through their WCSs.

Shared by the outlier-detection tests (a cosmic ray is measurable only where three or more
exposures overlap) and the workflow's end-to-end outlier test.
"""

import numpy as np


def pixel_sky(model) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec of the centre of every pixel of ``model``."""
    rows, cols = np.indices(model.data.shape, dtype=float)
    return model.meta.wcs(cols, rows)


def sees(model, ra, dec, margin: float = 1.0) -> np.ndarray:
    """Where ``model`` sees the sky positions (ra, dec), ``margin`` pixels inside its edges."""
    x, y = model.meta.wcs.backward_transform(ra, dec)
    ny, nx = model.data.shape
    return (x > margin - 0.5) & (x < nx - 0.5 - margin) & (y > margin - 0.5) & (y < ny - 0.5 - margin)
