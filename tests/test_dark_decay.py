"""dark_decay: the readout timing by hand, the step against the simulator's injected decay signal,
the script, and romancal 1.1's DarkDecayStep on the same input."""

from romanpipe.readpattern import pixel_read_times

import numpy as np
import pytest
import roman_datamodels as rdm

import dark_decay
import dq_init
from conftest import EXPO, TINY_SHAPE, make_level1
from dark_decay import subtract_dark_decay
from wfisim.dark_decay import DarkDecaySignal, decay_parameters
from wfisim.detector import build_detector
from wfisim.references import make_darkdecaysignal

FRAME_TIME = 3.04


def frame_cycles(frame_time=FRAME_TIME):
    """Clock cycles of a frame as romancal's readout model counts them (by hand)."""
    science = 127 + 4095 * 142  # last science pixel: column 127 of row 4095
    per_excursion = (frame_time / 4.915263e-06 - science) / 16 * 1.5
    return science + 16 * per_excursion, per_excursion


def test_read_times_by_hand():
    """WFI03 (columns flipped): pixel (0, 0) is read first, (0, 1) one clock later; row 300 of
    column 5 comes after 300 rows of 142 cycles and one guide-window excursion, and column 4090
    mirrors column 5 in its channel pair (4090 = 15 * 256 + 250; 255 - 250 = 5). WFI01 (rows
    flipped): row 0 is the detector's last row, 4095."""
    total, excursion = frame_cycles()
    wfi03 = pixel_read_times((301, 4096), FRAME_TIME, 3)
    assert wfi03[0, 0] == 0.0
    assert wfi03[0, 1] == pytest.approx(FRAME_TIME / total)
    # Column 5 from the left is, flipped, column 4090 of the detector: 255 - 250 = 5 clocks in.
    assert wfi03[300, 5] == pytest.approx(FRAME_TIME * (5 + 300 * 142 + excursion) / total)
    wfi01 = pixel_read_times((2, 2), FRAME_TIME, 1)
    assert wfi01[0, 1] == pytest.approx(FRAME_TIME * (1 + 4095 * 142 + 15 * excursion) / total)
    assert wfi01[1, 0] == pytest.approx(FRAME_TIME * (4094 * 142 + 15 * excursion) / total)


def test_a_frame_larger_than_the_detector_is_refused():
    with pytest.raises(ValueError, match="larger than the detector"):
        pixel_read_times((4097, 8), FRAME_TIME, 1)


@pytest.mark.parametrize("name", ["WFI01", "WFI03", "WFI18"])
def test_step_removes_the_simulated_decay_signal(name):
    """The simulator's decay effect, read by read, averaged into IMG_UNEVEN_6-like resultants on top
    of a ramp of 5 DN per read: the step leaves the ramp (float32 rounding)."""
    detector = build_detector(name, (40, 48), 3)
    effect = DarkDecaySignal.of(detector, FRAME_TIME)
    read_pattern = [[1], [2, 3], [4, 5, 6, 7], [8]]
    clean = np.stack([np.full(detector.shape, 5.0 * np.mean(reads)) for reads in read_pattern])
    decay = np.stack([np.mean([effect.signal(r) for r in reads], axis=0) for reads in read_pattern])
    assert decay[0].max() > 0.25  # the injected signal is there: ~0.4 DN in the first read
    amplitude, time_constant = decay_parameters(detector)
    corrected = subtract_dark_decay((clean + decay).astype(np.float32), amplitude, time_constant,
                                    FRAME_TIME, read_pattern, int(name[3:]))
    np.testing.assert_allclose(corrected, clean, atol=1e-5)


def test_inputs_are_not_modified_and_shapes_are_checked():
    data = np.ones((2, 8, 8), np.float32)
    subtract_dark_decay(data, 0.4, 23.0, FRAME_TIME, [[1], [2]], 1)
    assert (data == 1).all()
    with pytest.raises(ValueError, match="read_pattern has 1 resultants"):
        subtract_dark_decay(data, 0.4, 23.0, FRAME_TIME, [[1]], 1)
    with pytest.raises(ValueError, match="time constant"):
        subtract_dark_decay(data, 0.4, 0.0, FRAME_TIME, [[1], [2]], 1)


def dqinit_ramp(tmp_path, mask_file, frame_time):
    level1 = make_level1()
    level1.meta.exposure.frame_time = frame_time
    uncal = tmp_path / f"{EXPO}_uncal.asdf"
    level1.to_asdf(uncal)
    path = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(uncal), str(path), "--override-mask", str(mask_file)]) == 0
    return path


@pytest.fixture
def ramp_file(tmp_path, mask_file):
    return dqinit_ramp(tmp_path, mask_file, FRAME_TIME)


def test_script_subtracts_the_reference_decay_of_its_detector(tmp_path, ramp_file):
    detectors = [build_detector(name, TINY_SHAPE[1:], 1) for name in ("WFI01", "WFI02")]
    reference = make_darkdecaysignal(detectors, useafter="2027-01-01T00:00:00")
    path = tmp_path / "roman_wfi_darkdecaysignal_0001.asdf"
    reference.to_asdf(path)
    out = tmp_path / f"{EXPO}_dark_decay.asdf"
    assert dark_decay.cli.run(dark_decay.main, [str(ramp_file), str(out),
                                                "--override-darkdecaysignal", str(path)]) == 0
    amplitude, tau = decay_parameters(detectors[0])
    with rdm.open(ramp_file) as before, rdm.open(out) as after:
        read_pattern = [list(r) for r in before.meta.exposure.read_pattern]
        frame_time = float(before.meta.exposure.frame_time)
        times = pixel_read_times(TINY_SHAPE[1:], frame_time, 1)
        expected = np.stack([np.mean([amplitude * np.exp(-((r - 1.5) * frame_time + times) / tau)
                                      for r in reads], axis=0) for reads in read_pattern])
        np.testing.assert_allclose(np.asarray(before.data) - np.asarray(after.data), expected, atol=2e-3)
        assert after.meta.cal_step.dark_decay == "COMPLETE"
        assert after.meta.provenance["dark_decay"]["references"]["darkdecaysignal"]["file"] == path.name


def test_script_refuses_a_table_without_the_detector(tmp_path, ramp_file):
    reference = make_darkdecaysignal([build_detector("WFI02", (16, 16), 1)], useafter="2027-01-01T00:00:00")
    path = tmp_path / "roman_wfi_darkdecaysignal_0001.asdf"
    reference.to_asdf(path)
    out = tmp_path / "x_dark_decay.asdf"
    assert dark_decay.cli.run(dark_decay.main, [str(ramp_file), str(out),
                                                "--override-darkdecaysignal", str(path)]) == 1
    assert not out.exists()


def test_script_refuses_a_ramp_without_a_frame_time(tmp_path, mask_file):
    ramp = dqinit_ramp(tmp_path, mask_file, -999999.0)  # roman_datamodels' placeholder
    reference = make_darkdecaysignal([build_detector("WFI01", (16, 16), 1)], useafter="2027-01-01T00:00:00")
    path = tmp_path / "roman_wfi_darkdecaysignal_0001.asdf"
    reference.to_asdf(path)
    out = tmp_path / "x_dark_decay.asdf"
    assert dark_decay.cli.run(dark_decay.main,
                              [str(ramp), str(out), "--override-darkdecaysignal", str(path)]) == 1
    assert not out.exists()


@pytest.mark.peer
def test_same_result_as_romancal_on_a_full_frame():
    """romancal 1.1's dark decay kernel (its step reads a full 4096 x 4096 frame) on two resultants."""
    romancal_dark_decay = pytest.importorskip("romancal.dark_decay.dark_decay")
    rng = np.random.default_rng(4)
    data = rng.normal(1.0e4, 6.0, (2, 4096, 4096)).astype(np.float32)
    read_pattern = [[1, 2], [3, 4, 5]]
    ours = subtract_dark_decay(data, 0.41, 22.5, FRAME_TIME, read_pattern, 9)
    romancal_dark_decay.subtract_dark_decay(data, 0.41, 22.5, FRAME_TIME, read_pattern, 9)
    np.testing.assert_array_equal(ours, data)
