"""Simulator of Roman WFI Level 1 exposures and of the matching reference files.

Modules, in the order a simulation uses them:

``matables``    MA tables: read patterns, frame time, mean read times.
``detector``    per-pixel truth of one detector (bias, gain, noise, dark, defects, full well).
``scene``       sky + point sources -> photo-electron rate image.
``pointing``    ideal WFI geometry: pixel <-> sky, ``meta.wcsinfo`` and ``meta.pointing``.
``ramps``       rate image + detector + MA table -> uint16 resultants (with per-read effect hooks).
``level1``      the ScienceRawModel (``_uncal``) with its metadata.
``truth``       ``_truth.asdf``: what was simulated, for tests.
``references``  MASK, SATURATION, GAIN, READNOISE reference files from the detector truth.
``campaign``    a YAML-configured campaign: exposures, truth, references, CRDS cache.
"""
