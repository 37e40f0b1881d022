"""Simulator of Roman WFI Level 1 exposures and of the matching reference files.

Modules, in the order a simulation uses them:

``matables``    MA tables: read patterns, frame time, mean read times.
``detector``    per-pixel truth of one detector (bias, gain, noise, dark, defects, full well).
``sky``         the campaign's star catalog (proper motions from epoch 2016.0) and its Gaia-like catalog.
``pointing``    the Roman SIAF geometry (pysiaf): cutout, distortion, attitudes, pointing errors,
                ``meta.wcsinfo`` and ``meta.pointing``.
``scene``       sky + point sources -> photo-electron rate image (Gaussian PSF; dispersed traces).
``psf``         the PSF models: gaussian, or GalSim's Roman optical PSF.
``flat``        the true flat the scene is multiplied by, and the FLAT reference.
``photometry``  DN/s -> MJy/sr: the PHOTOM reference and the flux units of the truth.
``ramps``       rate image + detector + MA table -> uint16 resultants (with per-read effect hooks).
``nonlinearity`` per-read non-linear response and the LINEARITY reference that inverts it.
``cosmic_rays`` cosmic-ray charge deposits with inter-pixel capacitance, recorded in the truth.
``dark``        the DARK reference (dark rate) from the detector truth.
``level1``      the ScienceRawModel (``_uncal``) with its metadata (WFI_IMAGE or WFI_SPECTRAL).
``truth``       ``_truth.asdf``: what was simulated, for tests (the contract with the pipeline's tests).
``references``  the reference-file factory (MASK, SATURATION, GAIN, READNOISE, LINEARITY, DARK, REFPIX,
                DISTORTION, FLAT, PHOTOM).
``campaign``    a YAML-configured campaign: exposures, truth, catalogs, references, CRDS cache.
"""
