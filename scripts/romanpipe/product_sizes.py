"""The size of an exposure's products, from the shape of its Level 1 data.

A module of its own, without roman_datamodels (a second to import): the workflow sizes
every job's memory and time from it, and imports it at every Snakemake start.
"""

# Bytes per pixel of an exposure's products: Level 1 (uint16 per resultant), a ramp (float32
# data and uint8 groupdq per resultant, uint32 pixeldq) and a Level 2 image (data, dq, err
# and three variances, 4 bytes each).
_BYTES_PER_PIXEL = {
    "level1": lambda nresultants: 2 * nresultants,
    "ramp": lambda nresultants: 5 * nresultants + 4,
    "image": lambda nresultants: 24,
}


def product_size_mb(kind: str, nresultants: int, ny: int, nx: int) -> float:
    """The size in MB of an exposure's ``kind`` of product (level1, ramp, image), from the
    shape of its Level 1 data: what the workflow sizes a job's memory and time limits by
    before the product exists."""
    return _BYTES_PER_PIXEL[kind](nresultants) * ny * nx / 2**20
