"""Offline CRDS: the cache built by romanpipe.crds_cache, selection through romanpipe.refs.

Every test builds its own cache under tmp_path and configures crds for it, so the
tests are independent of each other and of the order xdist runs them in.
"""

import math
from pathlib import Path

from romanpipe import crds_cache, refs
from romanpipe.errors import InputFileError, PipelineError

import pytest
import roman_datamodels.datamodels as rdd
from astropy.time import Time
from crds.client import api as crds_api
from crds.core import exceptions as crds_exceptions
from crds.core import rmap
from crds.refactoring import checksum

import crds_deliver

# USEAFTER of the first references; exposures start years later.
LAUNCH = "2020-01-01T00:00:00"


def make_reference(directory: Path, model_class, name, detector, useafter, optical_element=None):
    model = model_class.create_fake_data(shape=(8, 8))
    model.meta.instrument.detector = detector
    model.meta.useafter = Time(useafter)
    if optical_element is not None:
        model.meta.instrument.optical_element = optical_element
    path = directory / name
    model.save(path)
    return path


@pytest.fixture
def cache(tmp_path, crds_environment, monkeypatch) -> Path:
    """A cache with one first delivery: saturation by date, flats by filter."""
    delivery = tmp_path / "delivery"
    delivery.mkdir()
    sat = rdd.SaturationRefModel
    flat = rdd.FlatRefModel
    files = [
        make_reference(delivery, sat, "roman_wfi_saturation_0001.asdf", "WFI01", LAUNCH),
        make_reference(delivery, sat, "roman_wfi_saturation_0002.asdf", "WFI01", "2027-06-01"),
        make_reference(delivery, sat, "roman_wfi_saturation_0003.asdf", "WFI02", LAUNCH),
        make_reference(delivery, flat, "roman_wfi_flat_0001.asdf", "WFI01", LAUNCH, "F158"),
        make_reference(delivery, flat, "roman_wfi_flat_0002.asdf", "WFI01", LAUNCH, "F087"),
        make_reference(delivery, flat, "roman_wfi_flat_0003.asdf", "WFI02", LAUNCH, "F158"),
    ]
    cache_dir = tmp_path / "crds_cache"
    assert crds_cache.deliver(cache_dir, files, description="first delivery") == "roman_0001.pmap"
    monkeypatch.setenv("CRDS_PATH", str(cache_dir))
    refs.configure_crds()
    return cache_dir


def exposure(detector, start_time, optical_element="F158"):
    """A row of the exposure pool table."""
    return {
        "detector": detector,
        "optical_element": optical_element,
        "start_time": start_time,
        "exposure_type": "WFI_IMAGE",
    }


def selected(reftype, row, context=None) -> str:
    paths = refs.best_references(refs.selection_parameters(row), [reftype], context=context)
    return Path(paths[reftype]).name


def test_selection_parameters_from_datamodel_meta_and_from_pool_row():
    model = rdd.ImageModel.create_fake_data(shape=(8, 8))
    model.meta.instrument.detector = "WFI05"
    model.meta.instrument.optical_element = "F087"
    model.meta.exposure.start_time = Time("2027-03-04T05:06:07.890")
    expected = {
        "ROMAN.META.INSTRUMENT.NAME": "WFI",
        "ROMAN.META.INSTRUMENT.DETECTOR": "WFI05",
        "ROMAN.META.INSTRUMENT.OPTICAL_ELEMENT": "F087",
        "ROMAN.META.EXPOSURE.START_TIME": "2027-03-04T05:06:07",
        "ROMAN.META.EXPOSURE.TYPE": "WFI_IMAGE",
    }
    assert refs.selection_parameters(model.meta) == expected
    row = exposure("WFI05", "2027-03-04T05:06:07.890", optical_element="F087")
    assert refs.selection_parameters(row) == expected
    # A pool table holds NaN where a column does not apply; such values are left out.
    row_without_filter = exposure("WFI05", "2027-03-04T05:06:07", optical_element=math.nan)
    parameters = refs.selection_parameters(row_without_filter)
    assert "ROMAN.META.INSTRUMENT.OPTICAL_ELEMENT" not in parameters


def test_offline_configuration_never_names_a_server(cache):
    assert "serverless" in crds_api.get_crds_server()
    assert refs.current_context() == "roman_0001.pmap"


def test_server_url_selects_server_mode(crds_environment, monkeypatch, tmp_path):
    monkeypatch.setenv("CRDS_SERVER_URL", "http://localhost:8001")
    settings = refs.configure_crds(tmp_path)
    assert settings.server_url == "http://localhost:8001"
    assert settings.cache_dir == tmp_path.resolve()
    assert crds_api.get_crds_server() == "http://localhost:8001"


@pytest.mark.parametrize(
    ("detector", "start_time", "expected"),
    [
        ("WFI01", "2027-01-01T00:00:00", "roman_wfi_saturation_0001.asdf"),
        ("WFI01", "2027-05-31T23:59:59", "roman_wfi_saturation_0001.asdf"),
        ("WFI01", "2027-06-01T00:00:00", "roman_wfi_saturation_0002.asdf"),
        ("WFI01", "2028-01-01T00:00:00", "roman_wfi_saturation_0002.asdf"),
        ("WFI02", "2028-01-01T00:00:00", "roman_wfi_saturation_0003.asdf"),
    ],
)
def test_useafter_selects_reference_by_start_time(cache, detector, start_time, expected):
    assert selected("saturation", exposure(detector, start_time)) == expected


def test_selected_paths_are_absolute_files_in_the_cache(cache):
    model = rdd.ImageModel.create_fake_data(shape=(8, 8))
    model.meta.instrument.detector = "WFI01"
    model.meta.exposure.start_time = Time("2027-07-01T00:00:00")
    path = Path(refs.reference_path("SATURATION", model.meta))
    assert path == crds_cache.references_dir(cache).resolve() / "roman_wfi_saturation_0002.asdf"
    assert path.is_file()


def test_flat_selection_by_optical_element(cache):
    start = "2027-01-01T00:00:00"
    assert selected("flat", exposure("WFI01", start, "F158")) == "roman_wfi_flat_0001.asdf"
    assert selected("flat", exposure("WFI01", start, "F087")) == "roman_wfi_flat_0002.asdf"
    assert selected("flat", exposure("WFI02", start, "F158")) == "roman_wfi_flat_0003.asdf"


def test_detector_without_entry_fails_with_its_keywords(cache):
    with pytest.raises(refs.ReferenceNotFoundError) as failure:
        selected("saturation", exposure("WFI07", "2027-01-01T00:00:00"))
    message = str(failure.value)
    expected_start = "no SATURATION reference for detector=WFI07, start_time=2027-01-01T00:00:00: "
    assert message.startswith(expected_start)
    assert "roman_0001.pmap" in message
    assert "\n" not in message
    assert isinstance(failure.value, LookupError) and isinstance(failure.value, PipelineError)


def test_start_before_every_useafter_fails(cache):
    keywords = "detector=WFI01, start_time=2019-12-31T23:59:59"
    with pytest.raises(refs.ReferenceNotFoundError, match=keywords):
        selected("saturation", exposure("WFI01", "2019-12-31T23:59:59"))


def test_reftype_missing_from_context_fails(cache):
    # The context has no dark rmap to name the matching keywords, so all are given.
    with pytest.raises(refs.ReferenceNotFoundError, match="^no DARK reference .*detector=WFI01"):
        selected("dark", exposure("WFI01", "2027-01-01T00:00:00"))


def test_second_delivery_makes_a_new_context(cache, tmp_path):
    new_flat = make_reference(
        tmp_path, rdd.FlatRefModel, "roman_wfi_flat_0004.asdf", "WFI01", LAUNCH, "F158"
    )
    new_context = crds_cache.deliver(cache, [new_flat], description="new F158 flat for WFI01")
    assert new_context == "roman_0002.pmap"
    assert refs.current_context() == "roman_0002.pmap"

    start = "2027-01-01T00:00:00"
    assert selected("flat", exposure("WFI01", start, "F158")) == "roman_wfi_flat_0004.asdf"
    assert selected("flat", exposure("WFI01", start, "F087")) == "roman_wfi_flat_0002.asdf"
    assert selected("flat", exposure("WFI02", start, "F158")) == "roman_wfi_flat_0003.asdf"
    assert selected("saturation", exposure("WFI01", start)) == "roman_wfi_saturation_0001.asdf"
    old = "roman_0001.pmap"
    assert selected("flat", exposure("WFI01", start), context=old) == "roman_wfi_flat_0001.asdf"

    assert set(crds_cache.context_references(cache, "roman_0002.pmap")) ^ set(
        crds_cache.context_references(cache, old)
    ) == {"roman_wfi_flat_0001.asdf", "roman_wfi_flat_0004.asdf"}
    # Only the flat rmap changed: the new imap keeps the saturation rmap of the first context.
    mappings = sorted(path.name for path in crds_cache.mappings_dir(cache).iterdir())
    assert mappings == [
        "roman_0001.pmap", "roman_0002.pmap", "roman_wfi_0001.imap", "roman_wfi_0002.imap",
        "roman_wfi_flat_0001.rmap", "roman_wfi_flat_0002.rmap", "roman_wfi_saturation_0001.rmap",
    ]


def test_delivery_refuses_a_name_already_in_the_cache(cache, tmp_path):
    again = make_reference(
        tmp_path, rdd.SaturationRefModel, "roman_wfi_saturation_0001.asdf", "WFI03", LAUNCH
    )
    with pytest.raises(FileExistsError, match="roman_wfi_saturation_0001.asdf"):
        crds_cache.deliver(cache, [again])
    assert refs.current_context() == "roman_0001.pmap"


def test_override_wins(cache, tmp_path):
    override = make_reference(
        tmp_path, rdd.SaturationRefModel, "my_saturation.asdf", "WFI07", LAUNCH
    )
    row = exposure("WFI07", "2027-01-01T00:00:00")
    assert refs.reference_path("saturation", row, override=override) == str(override.resolve())
    problem = "missing.asdf: override for the SATURATION reference does not exist"
    with pytest.raises(InputFileError, match=problem):
        refs.reference_path("saturation", row, override=tmp_path / "missing.asdf")


def test_mappings_pass_crds_checksum_verification(cache):
    mappings = sorted(crds_cache.mappings_dir(cache).iterdir())
    assert len(mappings) == 4
    for path in mappings:
        checksum.verify_checksum(str(path))
        rmap.load_mapping(str(path)).validate_mapping()

    flat_rmap = crds_cache.mappings_dir(cache) / "roman_wfi_flat_0001.rmap"
    tampered = flat_rmap.read_text().replace("roman_wfi_flat_0001.asdf", "roman_wfi_flat_0009.asdf")
    flat_rmap.write_text(tampered)
    with pytest.raises(crds_exceptions.ChecksumError, match="roman_wfi_flat_0001.rmap"):
        checksum.verify_checksum(str(flat_rmap))


def test_deliver_script_prints_the_new_context(tmp_path, crds_environment, capsys):
    reference = make_reference(
        tmp_path, rdd.SaturationRefModel, "roman_wfi_saturation_0001.asdf", "WFI01", LAUNCH
    )
    crds_deliver.main([str(tmp_path / "cache"), str(reference), "--description", "first"])
    assert capsys.readouterr().out == "roman_0001.pmap\n"
    assert crds_cache.current_context(tmp_path / "cache") == "roman_0001.pmap"


def test_delivery_names_a_file_without_a_serial_after_the_cache_and_the_delivery(cache, tmp_path):
    loose = make_reference(tmp_path, rdd.FlatRefModel, "my flat.asdf", "WFI03", LAUNCH, "F158")
    named = make_reference(tmp_path, rdd.FlatRefModel, "roman_wfi_flat_0007.asdf", "WFI04", LAUNCH, "F158")
    saturation = make_reference(tmp_path, rdd.SaturationRefModel, "sat.asdf", "WFI03", LAUNCH)
    context = crds_cache.deliver(cache, [loose, named, saturation])
    # the cache holds flats 0001-0003 and saturations 0001-0003; this delivery names flat 0007
    delivered = {path.name for path in crds_cache.references_dir(cache).iterdir()}
    new = {"roman_wfi_flat_0007.asdf", "roman_wfi_flat_0008.asdf", "roman_wfi_saturation_0004.asdf"}
    assert new <= delivered
    assert "my flat.asdf" not in delivered and "sat.asdf" not in delivered
    first = {f"roman_wfi_{reftype}_000{serial}.asdf"
             for reftype in ("flat", "saturation") for serial in (1, 2, 3)}
    assert crds_cache.context_references(cache, context) == sorted(first | new)
    selected = refs.best_references(refs.selection_parameters(exposure("WFI03", "2027-01-01T00:00:00")),
                                    ["flat", "saturation"])
    assert {reftype: Path(path).name for reftype, path in selected.items()} == {
        "flat": "roman_wfi_flat_0008.asdf", "saturation": "roman_wfi_saturation_0004.asdf"}


def test_delivery_refuses_a_name_of_another_reftype(cache, tmp_path):
    misnamed = make_reference(tmp_path, rdd.SaturationRefModel, "roman_wfi_flat_0009.asdf", "WFI03", LAUNCH)
    with pytest.raises(ValueError, match="named as a FLAT reference but its meta.reftype is SATURATION"):
        crds_cache.deliver(cache, [misnamed])
    assert refs.current_context() == "roman_0001.pmap"


def test_romancal_11_reference_types_are_delivered_and_selected(cache, tmp_path):
    """DARKDECAYSIGNAL (crds matches it on time only: one table for every detector), INVERSELINEARITY
    and INTEGRALNONLINEARITY (by detector) go into a new context and are selected from it."""
    from wfisim.detector import build_detector
    from wfisim.references import make_darkdecaysignal
    from wfisim.references import make_reference as simulated_reference

    delivery = tmp_path / "romancal11"
    delivery.mkdir()
    detectors = [build_detector(name, (16, 16), 1) for name in ("WFI01", "WFI02")]
    files = [delivery / "roman_wfi_darkdecaysignal_0001.asdf"]
    make_darkdecaysignal(detectors, useafter=LAUNCH).save(files[0])
    for detector in detectors:
        for reftype in ("inverselinearity", "integralnonlinearity"):
            path = delivery / f"roman_wfi_{reftype}_000{detector.name[-1]}.asdf"
            simulated_reference(reftype, detector, useafter=LAUNCH).save(path)
            files.append(path)
    assert crds_cache.deliver(cache, files) == "roman_0002.pmap"
    for name in ("WFI01", "WFI02"):
        row = exposure(name, "2027-03-01T00:00:00")
        assert selected("darkdecaysignal", row) == "roman_wfi_darkdecaysignal_0001.asdf"
        assert selected("inverselinearity", row) == f"roman_wfi_inverselinearity_000{name[-1]}.asdf"
        assert selected("integralnonlinearity", row) == f"roman_wfi_integralnonlinearity_000{name[-1]}.asdf"
