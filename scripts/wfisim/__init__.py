"""Simulator of Roman WFI Level 1 exposures and of the matching reference files.

Modules, in the order a simulation uses them:

``matables``    MA tables: read patterns, frame time, mean read times.
``detector``    per-pixel truth of one detector (bias, gain, noise, dark, defects, full well).
``scene``       sky + point sources -> photo-electron rate image.
``pointing``    ideal WFI geometry: pixel <-> sky, ``meta.wcsinfo`` and ``meta.pointing``.
``ramps``       rate image + detector + MA table -> uint16 resultants (with per-read effect hooks).
``nonlinearity`` per-read non-linear response and the LINEARITY reference that inverts it.
``cosmic_rays`` cosmic-ray charge deposits with inter-pixel capacitance, recorded in the truth.
``dark``        the DARK reference (dark rate) from the detector truth.
``level1``      the ScienceRawModel (``_uncal``) with its metadata.
``truth``       ``_truth.asdf``: what was simulated, for tests.
``references``  the reference-file factory (MASK, SATURATION, GAIN, READNOISE, LINEARITY, DARK, ...).
``campaign``    a YAML-configured campaign: exposures, truth, references, CRDS cache.
"""
