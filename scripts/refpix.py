"""refpix: remove from every pixel of a ramp what the reference pixels see.

Seed, "Reference Pixel Correction"; the algorithm is romancal 1.1's RefPixStep,
written again resultant by resultant (a 4096 x 4096 ramp needs the input, the
output and about 0.5 GB of single-frame work arrays):

1. Offset (``remove_offset``): each pixel's mean over the resultants is taken out,
   so that the fixed bias pattern does not dominate the fits and transforms below,
   and is put back at the end. A ramp's intercept absorbs it; the step changes how
   pixels vary from resultant to resultant, not their mean.
2. Time order: the 32 science amplifiers (``ncols / 32`` columns each, the odd ones
   read right to left) and amp33 are read in step, one pixel per pixel time, with
   ``ROW_OVERHEAD`` idle pixel times at the end of each row. One amplifier's frame
   is a uniformly sampled time stream of ``nrows * (width + ROW_OVERHEAD)`` samples
   with the idle samples absent.
3. Trends (``remove_trends``): for each amplifier (amp33 included) and resultant, a
   straight line in time fitted to the top and bottom reference rows is subtracted
   from the amplifier's pixels. It takes out offset changes between reads, drifts
   within a frame and the discretization bias, which the reference rows share.
4. amp33's idle samples are filled in: a cosine-weighted mean of the neighbours
   (``cosine_interpolate``), then three rounds of romancal's apodized Fourier
   low-pass that rewrite only those samples (``fft_interpolate``; done as the
   equivalent three-tap smoothing in time).
5. Correlated read noise: the left and right border columns (streams that are zero
   outside their four columns, scaled by row period / 4) and amp33 are Fourier
   transformed; amplifier ``a`` loses the inverse transform of
   ``gamma[a] L + zeta[a] R + alpha[a] A``, with the REFPIX reference's coefficients.

Where we differ from romancal 1.1 on purpose:

* samples are absent by position (idle pixel times, BAD_REF_PIXEL reference pixels),
  never by value: romancal treats every 0.0 as missing, and integer data minus
  their mean is often exactly 0.0, so those pixels miss the trend subtraction;
* BAD_REF_PIXEL pixels are left out of every fit and stream but keep their data
  (corrected like their neighbours); romancal sets them to 0 first;
* amp33 and the border_ref_pix_* copies are left as dq_init wrote them (the romancal documentation,
  section "Reference Pixel Correction": the copies "reflect the original state of the border pixels before any
  calibration"); romancal overwrites amp33 (absolute value, truncated to uint16)
  and the left/right copies with corrected values;
* the layout scales: 32 amplifiers of ``ncols / 32`` columns, an amp33 as wide as
  one amplifier, any number of rows (romancal needs 4096 + 128 columns);
* a single resultant is its own offset, so it comes out unchanged; romancal's
  offset fit divides by zero there (NaN everywhere).

    python scripts/refpix.py r..._saturation.asdf r..._refpix.asdf [--override-refpix FILE] \
        [--remove-offset BOOL] [--remove-trends BOOL] [--cosine-interpolate BOOL] [--fft-interpolate BOOL]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from romanpipe import cli, dqflags
from romanpipe.detector import BORDER
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from asdf.tags.core.ndarray import NDArrayType
from roman_datamodels import datamodels

log = logging.getLogger("refpix")

STEP = "refpix"
INPUT_MODELS = (datamodels.RampModel,)
N_AMPLIFIERS = 32  # science outputs; amp33 is read in step with them
ROW_OVERHEAD = 12  # idle pixel times at the end of every row, as romancal models the readout
COSINE_HALF_WIDTH = N_AMPLIFIERS // 2  # romancal's interpolation kernel is as long as the amplifier count
FOURIER_FILL_ROUNDS = 3  # romancal's number of low-pass rounds


class ReferenceShapeError(ValueError):
    """The REFPIX coefficients do not fit the ramp's readout layout."""


@dataclass(frozen=True)
class ReadoutLayout:
    """When each pixel of a frame is read: science amplifiers and amp33 in step.

    A stream array has shape (N_AMPLIFIERS + 1, nrows, row_period): amplifier ``a``
    (the last one is amp33), row, sample within the row in read order; sample
    ``s`` of row ``r`` is read at pixel time ``r * row_period + s``. Samples at and
    beyond ``width`` are the idle ones at the end of the row.
    """

    nrows: int
    width: int  # columns per amplifier, also the width of amp33

    @classmethod
    def for_ramp(cls, data_shape, amp33_shape) -> ReadoutLayout:
        """The layout of a (nresultants, nrows, ncols) ramp and its amp33; ValueError if none fits."""
        if len(data_shape) != 3 or len(amp33_shape) != 3:
            raise ValueError(f"data {tuple(data_shape)} and amp33 {tuple(amp33_shape)} must be "
                             "(nresultants, nrows, ncols) cubes")
        nresultants, nrows, ncols = data_shape
        width = ncols // N_AMPLIFIERS
        if ncols % N_AMPLIFIERS or width < BORDER:
            raise ValueError(f"{ncols} columns cannot be read by {N_AMPLIFIERS} amplifiers of at least "
                             f"{BORDER} columns: refpix needs a multiple of {N_AMPLIFIERS}, "
                             f">= {N_AMPLIFIERS * BORDER}")
        if nrows < 2 * BORDER:
            raise ValueError(f"{nrows} rows leave no room for the {BORDER} reference rows at top and bottom")
        if tuple(amp33_shape) != (nresultants, nrows, width):
            raise ValueError(f"amp33 has shape {tuple(amp33_shape)}, expected {(nresultants, nrows, width)}: "
                             f"one amplifier's width beside {N_AMPLIFIERS} amplifiers of {width} columns")
        return cls(nrows, width)

    @property
    def ncols(self) -> int:
        return N_AMPLIFIERS * self.width

    @property
    def row_period(self) -> int:
        return self.width + ROW_OVERHEAD

    @property
    def stream_length(self) -> int:
        return self.nrows * self.row_period

    @property
    def n_frequencies(self) -> int:
        return self.stream_length // 2 + 1

    def column_read_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Amplifier and sample within the row of every science column (each of length ncols)."""
        columns = np.arange(self.ncols)
        amplifier, position = np.divmod(columns, self.width)
        # Odd amplifiers read right to left, so their rightmost column comes first.
        reversed_read = amplifier % 2 == 1
        position[reversed_read] = self.width - 1 - position[reversed_read]
        return amplifier, position

    def read_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel time of every science pixel (nrows, ncols) and amp33 pixel (nrows, width)."""
        row_start = (np.arange(self.nrows) * self.row_period)[:, None]
        _, position = self.column_read_order()
        return row_start + position[None, :], row_start + np.arange(self.width)[None, :]

    def to_streams(self, frame: np.ndarray, amp33_frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write one frame (nrows, ncols) and its amp33 (nrows, width) into ``out`` in read order."""
        by_amplifier = frame.reshape(self.nrows, N_AMPLIFIERS, self.width)
        out[:N_AMPLIFIERS:2, :, :self.width] = by_amplifier[:, 0::2, :].transpose(1, 0, 2)
        out[1:N_AMPLIFIERS:2, :, :self.width] = by_amplifier[:, 1::2, ::-1].transpose(1, 0, 2)
        out[N_AMPLIFIERS, :, :self.width] = amp33_frame
        out[:, :, self.width:] = 0.0
        return out

    def to_frame(self, streams: np.ndarray) -> np.ndarray:
        """The science frame (nrows, ncols) back in image order from a stream array."""
        frame = np.empty((self.nrows, N_AMPLIFIERS, self.width), dtype=streams.dtype)
        frame[:, 0::2, :] = streams[:N_AMPLIFIERS:2, :, :self.width].transpose(1, 0, 2)
        frame[:, 1::2, :] = streams[1:N_AMPLIFIERS:2, :, self.width - 1::-1].transpose(1, 0, 2)
        return frame.reshape(self.nrows, self.ncols)

    def usable_samples(self, bad_reference: np.ndarray) -> np.ndarray:
        """True where a stream sample was read and may serve as a reference (not idle, not flagged)."""
        usable = np.zeros((N_AMPLIFIERS + 1, self.nrows, self.row_period), dtype=bool)
        self.to_streams(~bad_reference, np.ones((self.nrows, self.width), dtype=bool), out=usable)
        return usable

    def centered_times(self) -> np.ndarray:
        """Pixel time of every stream sample (nrows, row_period), minus the frame's mid-time."""
        times = np.arange(self.stream_length, dtype=np.float64).reshape(self.nrows, self.row_period)
        return times - (self.stream_length - 1) / 2.0


def resultant_means(cube: np.ndarray) -> np.ndarray:
    """Each pixel's mean over the resultants (float64), accumulated one resultant at a time."""
    total = np.zeros(cube.shape[1:], dtype=np.float64)
    for resultant in cube:
        total += resultant
    return total / cube.shape[0]


def reference_row_trends(streams: np.ndarray, usable: np.ndarray,
                         times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope (DN per pixel time) and value at ``times == 0`` of each amplifier's straight line.

    Least squares over the usable samples of the top and bottom BORDER rows. An
    amplifier with fewer than two such samples gets a flat zero line.
    """
    rows = np.r_[0:BORDER, streams.shape[1] - BORDER:streams.shape[1]]
    weight = usable[:, rows, :].astype(np.float64)
    values = streams[:, rows, :] * weight
    t = times[rows, :]
    count = weight.sum(axis=(1, 2))
    sum_t = np.einsum("ars,rs->a", weight, t)
    sum_tt = np.einsum("ars,rs->a", weight, t * t)
    sum_v = values.sum(axis=(1, 2))
    sum_tv = np.einsum("ars,rs->a", values, t)
    spread = count * sum_tt - sum_t**2
    fitted = (count >= 2) & (spread > 0)
    safe_spread = np.where(fitted, spread, 1.0)
    slope = np.where(fitted, (count * sum_tv - sum_t * sum_v) / safe_spread, 0.0)
    intercept = np.where(fitted, (sum_v - slope * sum_t) / np.where(fitted, count, 1.0), 0.0)
    return slope, intercept


def cosine_fill(stream: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``stream`` with each absent sample replaced by a cosine-weighted mean of the present ones nearby.

    Weights cos(pi d / (2 COSINE_HALF_WIDTH)) for offsets |d| < COSINE_HALF_WIDTH; an
    absent sample with no present neighbour in reach becomes 0.
    """
    offsets = np.arange(1 - COSINE_HALF_WIDTH, COSINE_HALF_WIDTH)
    kernel = np.cos(np.pi * offsets / (2 * COSINE_HALF_WIDTH))
    centred = slice(COSINE_HALF_WIDTH - 1, COSINE_HALF_WIDTH - 1 + stream.size)
    weighted_sum = np.convolve(np.where(present, stream, 0.0), kernel)[centred]
    weight = np.convolve(present.astype(np.float64), kernel)[centred]
    filled = stream.copy()
    absent = ~present
    filled[absent] = np.divide(weighted_sum[absent], weight[absent],
                               out=np.zeros(int(absent.sum())), where=weight[absent] > 0)
    return filled


def fourier_fill(stream: np.ndarray, present: np.ndarray, rounds: int = FOURIER_FILL_ROUNDS) -> np.ndarray:
    """``stream`` with its absent samples rewritten by ``rounds`` passes of romancal's apodized low-pass.

    The apodizing taper (1 + cos(2 pi k / n)) / 2 on frequency index k is exactly the
    transfer function of the circular smoothing [1/4, 1/2, 1/4], so each pass is done
    in the time domain; the read samples stay as read.
    """
    filled = stream.copy()
    absent = ~present
    for _ in range(rounds):
        smooth = 0.5 * filled + 0.25 * (np.roll(filled, 1) + np.roll(filled, -1))
        filled[absent] = smooth[absent]
    return filled


def check_coefficients(gamma, zeta, alpha, layout: ReadoutLayout) -> tuple[np.ndarray, ...]:
    """The three coefficient arrays as complex128; ReferenceShapeError unless each is (32, n_frequencies)."""
    expected = (N_AMPLIFIERS, layout.n_frequencies)
    arrays = []
    for name, values in (("gamma", gamma), ("zeta", zeta), ("alpha", alpha)):
        values = np.asarray(values)
        if values.shape != expected:
            raise ReferenceShapeError(
                f"REFPIX {name} has shape {values.shape}, expected {expected}: {N_AMPLIFIERS} amplifiers x "
                f"the rfft length of {layout.nrows} rows x ({layout.width} columns + {ROW_OVERHEAD} idle) "
                "pixel times")
        arrays.append(values.astype(np.complex128, copy=False))
    return tuple(arrays)


def correct_reference_pixels(data, amp33, pixeldq, gamma, zeta, alpha, *, remove_offset=True,
                             remove_trends=True, cosine_interpolate=True, fft_interpolate=True,
                             flags=dqflags.pixel) -> np.ndarray:
    """New float32 data with the reference-pixel correction applied. Inputs are not modified.

    data (nres, nrows, ncols) DN, border included; amp33 (nres, nrows, ncols / 32);
    pixeldq (nrows, ncols): BAD_REF_PIXEL reference pixels are not used; gamma, zeta,
    alpha (32, n_frequencies) complex: the REFPIX coefficients of the left columns,
    right columns and amp33 for each amplifier.
    """
    layout = ReadoutLayout.for_ramp(data.shape, amp33.shape)
    if pixeldq.shape != data.shape[1:]:
        raise ValueError(f"pixeldq has shape {pixeldq.shape}, the data {data.shape[1:]}")
    gamma, zeta, alpha = check_coefficients(gamma, zeta, alpha, layout)
    bad_reference = (pixeldq & np.uint32(flags["BAD_REF_PIXEL"])) != 0
    usable = layout.usable_samples(bad_reference)
    log.info("%d amplifiers of %d columns + amp33, %d rows: streams of %d pixel times; "
             "%d bad reference pixels", N_AMPLIFIERS, layout.width, layout.nrows, layout.stream_length,
             int(bad_reference.sum()))

    if remove_offset:
        offset, amp33_offset = resultant_means(data), resultant_means(amp33)
    else:
        offset, amp33_offset = np.zeros(data.shape[1:]), np.zeros(amp33.shape[1:])
    times = layout.centered_times()
    read = np.zeros((layout.nrows, layout.row_period), dtype=bool)
    read[:, :layout.width] = True
    amp33_read = read.ravel()
    # romancal's convention for the coefficients: spectra of the streams are scaled by
    # 2 x (number of rfft bins) / stream length before the inverse transform.
    coefficient_scale = 2.0 * layout.n_frequencies / layout.stream_length
    # The border streams hold BORDER of every row_period samples: scaled up to full strength.
    border_scale = coefficient_scale * layout.row_period / BORDER

    corrected = np.empty(data.shape, dtype=np.float32)
    streams = np.empty((N_AMPLIFIERS + 1, layout.nrows, layout.row_period))
    for k in range(data.shape[0]):
        layout.to_streams(data[k] - offset, amp33[k] - amp33_offset, out=streams)
        if remove_trends:
            slope, intercept = reference_row_trends(streams, usable, times)
            for amplifier, stream in enumerate(streams):
                stream[:, :layout.width] -= slope[amplifier] * times[:, :layout.width] + intercept[amplifier]
            log.debug("resultant %d: trend slopes %.3g..%.3g DN per pixel time", k, slope.min(), slope.max())

        left = _border_stream(streams[0], usable[0], layout)
        right = _border_stream(streams[N_AMPLIFIERS - 1], usable[N_AMPLIFIERS - 1], layout)
        amp33_stream = streams[N_AMPLIFIERS].ravel()
        if cosine_interpolate:
            amp33_stream = cosine_fill(amp33_stream, amp33_read)
        if fft_interpolate:
            amp33_stream = fourier_fill(amp33_stream, amp33_read)
        left_spectrum = np.fft.rfft(left) * border_scale
        right_spectrum = np.fft.rfft(right) * border_scale
        amp33_spectrum = np.fft.rfft(amp33_stream) * coefficient_scale

        for amplifier in range(N_AMPLIFIERS):
            spectrum = (gamma[amplifier] * left_spectrum + zeta[amplifier] * right_spectrum
                        + alpha[amplifier] * amp33_spectrum)
            correlated = np.fft.irfft(spectrum, layout.stream_length)
            streams[amplifier] -= correlated.reshape(layout.nrows, layout.row_period)
        np.add(layout.to_frame(streams), offset, out=corrected[k], casting="same_kind")
    return corrected


def _border_stream(stream: np.ndarray, usable: np.ndarray, layout: ReadoutLayout) -> np.ndarray:
    """An amplifier's first BORDER samples of every row (its border column), zero elsewhere, flattened."""
    border = np.zeros((layout.nrows, layout.row_period))
    border[:, :BORDER] = np.where(usable[:, :BORDER], stream[:, :BORDER], 0.0)
    return border.ravel()


def run(ramp, step: StepRun):
    """Correct ``ramp`` (a RampModel, updated and returned) with the REFPIX reference's coefficients."""
    corrected = _corrected_data(ramp, step.input, step.reference("refpix"), step.parameters)
    # asdf keeps the input's decompressed data until the file closes: the other arrays are
    # read in and the file closed, so that writing holds one full-size data array, not two.
    for name in list(ramp.keys()):
        if isinstance(ramp[name], NDArrayType) and name != "data":
            ramp[name] = np.asarray(ramp[name])
    ramp.data = corrected
    ramp.close()
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


def _corrected_data(ramp, input_path, refpix_path, parameters) -> np.ndarray:
    """The kernel on ``ramp`` with the REFPIX file's coefficients (freed on return); errors name the file."""
    options = {name: parameters[name]
               for name in ("remove_offset", "remove_trends", "cosine_interpolate", "fft_interpolate")}
    with open_model(refpix_path, (datamodels.RefpixRefModel,)) as reference:
        try:
            return correct_reference_pixels(
                np.asarray(ramp.data), np.asarray(ramp.amp33), np.asarray(ramp.pixeldq),
                np.asarray(reference.gamma), np.asarray(reference.zeta), np.asarray(reference.alpha),
                **options)
        except ReferenceShapeError as err:
            raise InputFileError(refpix_path, str(err)) from None
        except ValueError as err:
            raise InputFileError(input_path, str(err)) from None


if __name__ == "__main__":
    cli.run_and_exit(main)
