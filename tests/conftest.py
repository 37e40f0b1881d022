"""Shared fixtures: tiny Roman files made with roman_datamodels."""

from romanpipe import refs

import numpy as np
import pytest
from astropy.time import Time
from crds.client import api as crds_api
from roman_datamodels import datamodels

TINY_SHAPE = (3, 16, 16)
TINY_READ_PATTERN = [[1], [2, 3], [4]]
EXPO = "r0000101001001001001_01101_0001_WFI01"


def make_level1(shape=TINY_SHAPE, read_pattern=TINY_READ_PATTERN, seed=1):
    model = datamodels.ScienceRawModel.create_fake_data(shape=shape)
    rng = np.random.default_rng(seed)
    model.data = rng.integers(1000, 2000, size=shape, dtype=np.uint16)
    model.amp33 = rng.integers(1000, 2000, size=(shape[0], shape[1], 4), dtype=np.uint16)
    model.meta.exposure.read_pattern = read_pattern
    model.meta.exposure.nresultants = shape[0]
    model.meta.exposure.start_time = Time("2027-06-01T00:00:00")
    model.meta.instrument.detector = "WFI01"
    model.meta.instrument.optical_element = "F158"
    return model


@pytest.fixture
def level1_file(tmp_path):
    path = tmp_path / f"{EXPO}_uncal.asdf"
    make_level1().to_asdf(path)
    return path


@pytest.fixture
def mask_file(tmp_path):
    mask = datamodels.MaskRefModel.create_fake_data(shape=TINY_SHAPE[1:])
    mask.dq = np.zeros(TINY_SHAPE[1:], np.uint32)
    mask.dq[5, 6] = 1024  # DEAD
    mask.dq[7, 8] = 2048  # HOT
    path = tmp_path / "roman_wfi_mask_0001.asdf"
    mask.to_asdf(path)
    return path


@pytest.fixture
def saturation_file(tmp_path):
    ref = datamodels.SaturationRefModel.create_fake_data(shape=TINY_SHAPE[1:])
    ref.data = np.full(TINY_SHAPE[1:], 1500, np.float32)
    ref.dq = np.zeros(TINY_SHAPE[1:], np.uint32)
    path = tmp_path / "roman_wfi_saturation_0001.asdf"
    ref.to_asdf(path)
    return path


_CRDS_VARIABLES = ("CRDS_SERVER_URL", "CRDS_PATH", "CRDS_MODE", "CRDS_CONTEXT")


@pytest.fixture
def crds_environment(monkeypatch):
    """No CRDS_* variable from the caller's shell; whatever the test sets is undone."""
    for name in _CRDS_VARIABLES:
        # setenv first so that the deletion, and configure_crds' own writes, are undone.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(refs, "_settings", None)
    # configure_crds repoints crds' module-level server proxy; restore it afterwards.
    monkeypatch.setattr(crds_api, "URL", crds_api.URL)
    monkeypatch.setattr(crds_api, "S", crds_api.S)
