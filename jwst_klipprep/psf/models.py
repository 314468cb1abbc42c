"""PSF model backends: the built-in data-free model, stpsf (when its data are valid), a FITS file.

``resolve_backend`` picks the backend (``auto`` = stpsf when ``$STPSF_PATH`` holds valid data,
checked without importing stpsf, which would start a download and create ``~/data``), and
``psf_frame`` returns an occulted PSF in contrast units on a detector frame with the mask
centre at a given position. ``webbpsf`` is never imported (it clobbers ``STPSF_PATH``).
"""

import contextlib
import functools
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage

from jwst_klipprep.psf import builtin

__all__ = [
    "place_stamp", "psf_frame", "quiet_pysiaf", "resolve_backend", "stpsf_data_path",
    "stpsf_version",
]

log = logging.getLogger(__name__)

_STPSF_DATA_VERSION_MIN = (2, 1, 0)
_STPSF_MAX_STAMP = 256


class _DropPrdMessages(logging.Filter):
    """Logging filter that drops pysiaf's offline PRD-version message."""

    def filter(self, record):
        return "PRD VERSION" not in record.getMessage()


@contextlib.contextmanager
def quiet_pysiaf():
    """Silence pysiaf's harmless offline message, and only that, while the block runs.

    Offline, pysiaf logs (and may warn) "LOCAL JWST PRD VERSION ... CANNOT BE CHECKED AGAINST
    ONLINE VERSION" when it loads a SIAF (also when stpsf loads one).
    """
    siaf_log = logging.getLogger("pysiaf")
    quiet = _DropPrdMessages()
    siaf_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*PRD.*")
            yield
    finally:
        siaf_log.removeFilter(quiet)



def stpsf_data_path():
    """The stpsf data folder from ``$STPSF_PATH`` if it is valid, else None.

    Valid means: the folder exists and holds ``version.txt`` with a version >= 2.1.0. stpsf is
    not imported (importing or calling it with invalid data can start a download and create
    ``~/data/stpsf-data``).

    Returns
    -------
    pathlib.Path or None
    """
    value = os.environ.get("STPSF_PATH", "")
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        text = (path / "version.txt").read_text().strip()
        version = tuple(int(part) for part in text.split(".")[:3])
    except (OSError, ValueError):
        return None
    return path if version >= _STPSF_DATA_VERSION_MIN else None


def resolve_backend(psf_backend):
    name = str(psf_backend).lower()
    if name not in ("builtin", "stpsf", "auto"):
        raise ValueError(f"psf_backend must be 'builtin', 'stpsf' or 'auto', got {psf_backend!r}")
    if name == "builtin":
        return "builtin"
    path = stpsf_data_path()
    if path is None:
        if name == "stpsf":
            raise ValueError(
                "psf_backend='stpsf' needs $STPSF_PATH pointing to stpsf data with a version.txt "
                ">= 2.1.0; use psf_backend='builtin' for the data-free model"
            )
        log.info("no valid STPSF_PATH; psf_backend='auto' uses the builtin model")
        return "builtin"
    try:
        with quiet_pysiaf():
            import stpsf  # noqa: F401
    except ImportError as exc:
        if name == "stpsf":
            raise ValueError("psf_backend='stpsf' needs the stpsf package") from exc
        return "builtin"
    log.info("using stpsf with data in %s", path)
    return "stpsf"


def place_stamp(stamp, center_yx, shape):
    """Put a square stamp whose mask centre is at its array centre onto a frame of ``shape``.

    The frame pixel p shows the stamp at position p - d, with d = center_yx - (s - 1) / 2.
    Writing d = i + f (i integer, 0 <= f < 1), the stamp (padded by one pixel) is moved by f with
    a Fourier shift and then pasted with its index 0 at frame index i - 1. Outside the stamp the
    frame is 0.
    """
    s = stamp.shape[0]
    c = (s - 1) / 2.0
    ny, nx = shape
    dy, dx = center_yx[0] - c, center_yx[1] - c
    iy, ix = math.floor(dy), math.floor(dx)
    pad = np.zeros((s + 2, s + 2))
    pad[1:-1, 1:-1] = stamp
    shifted = np.fft.ifft2(scipy.ndimage.fourier_shift(np.fft.fft2(pad), (dy - iy, dx - ix))).real
    frame = np.zeros(shape)
    oy, ox = iy - 1, ix - 1  # frame index = shifted index + (oy, ox)
    y0, x0 = max(0, oy), max(0, ox)
    y1, x1 = min(ny, oy + s + 2), min(nx, ox + s + 2)
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = shifted[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return frame


@functools.lru_cache(maxsize=32)
def _stpsf_stamp(
    instrument,
    filter_name,
    canonical,
    offset_y,
    offset_x,
    stamp,
    pixel_scale,
    oversample,
    nlambda,
    occulted,
):
    """stpsf detector-sampled PSF on a square stamp, mask centre at the stamp centre (cached)."""
    with quiet_pysiaf(), warnings.catch_warnings():
        # stpsf builds its NIRCam occulter with poppy's deprecated kind='nircamcircular'
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="poppy")
        warnings.filterwarnings("ignore", message=".*BandLimitedCoron.*")
        import stpsf

        inst = stpsf.NIRCam() if instrument == "NIRCAM" else stpsf.MIRI()
        inst.filter = filter_name
        inst.pupilopd = None
        inst.include_si_wfe = False
        inst.image_mask = canonical if occulted else None
        inst.pupil_mask = "MASKRND" if instrument == "NIRCAM" else "MASKFQPM"
        inst.pixelscale = pixel_scale
        inst.options["source_offset_x"] = offset_x
        inst.options["source_offset_y"] = offset_y
        hdul = inst.calc_psf(
            nlambda=nlambda, fov_pixels=stamp, oversample=oversample, add_distortion=False
        )
        data = np.asarray(hdul["DET_SAMP"].data, dtype=np.float64)
    data.flags.writeable = False
    return data


def psf_frame(
    backend,
    *,
    instrument,
    filter_name,
    canonical,
    offset_yx_arcsec,
    shape,
    center_yx,
    pixel_scale,
    nlambda,
    oversample,
):
    """Occulted PSF (contrast units) on the detector frame with the mask centre at center_yx."""
    if backend == "builtin":
        return builtin.coronagraphic_psf(
            instrument=instrument,
            filter=filter_name,
            coronagraph=canonical,
            offset_yx_arcsec=offset_yx_arcsec,
            shape=shape,
            center_yx=center_yx,
            pixel_scale=pixel_scale,
            oversample=oversample,
            nlambda=nlambda,
        )
    ny, nx = shape
    half = max(center_yx[0], ny - 1 - center_yx[0], center_yx[1], nx - 1 - center_yx[1])
    stamp = min(_STPSF_MAX_STAMP, 2 * int(math.ceil(half)) + 4)
    stamp += stamp % 2
    args = (
        instrument,
        filter_name,
        canonical,
        float(offset_yx_arcsec[0]),
        float(offset_yx_arcsec[1]),
        stamp,
        pixel_scale,
        oversample,
        nlambda,
    )
    occulted = _stpsf_stamp(*args, True)
    reference = _stpsf_stamp(*args[:3], 0.0, 0.0, *args[5:], False)
    return place_stamp(occulted / reference.sum(), center_yx, shape)


def stpsf_version():
    """Version of the installed stpsf package and of its data, as one string."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("stpsf")
    except PackageNotFoundError:
        return "stpsf not installed"
    path = stpsf_data_path()
    data = (path / "version.txt").read_text().strip() if path else "no valid data"
    return f"stpsf {package}, data {data}"
