"""PSF model backends: the built-in data-free model, stpsf (when its data are valid), a FITS file.

This module is the one home of the PSF backend choice. ``resolve_backend`` picks the backend
(``auto`` = stpsf when ``$STPSF_PATH`` holds valid data, checked without importing stpsf, which
would start a download and create ``~/data``; ``file`` = a user FITS image), ``psf_frame``
returns an occulted PSF in contrast units on a detector frame with the mask centre at a given
position (``builtin``/``stpsf``), `file_psf_function` reads a user FITS model, and
`psf_function` returns ``f(offset_yx_arcsec) -> frame`` for any backend (what
`jwst_klipprep.psf.stamps.make_model_callable` wraps for the fit). ``webbpsf`` is never imported
(it clobbers ``STPSF_PATH``).

stpsf options (`StpsfOptions`): the telescope wavefront (``opd``: an `~.opd.OpdSpec`, or None
for stpsf's perfect telescope), the instrument wavefront (``si_wfe``: stpsf's
``include_si_wfe``; on by default when the data have the SI wavefront tables) and the pupil grid
(``pupil_npix``). stpsf's array centre is the occulter centre in its focal plane and a source at
``source_offset`` (dy, dx) is rendered where stpsf puts it, instrument wavefront (tilt) included:
the star position convention of ``docs/conventions.rst``.
"""

import collections
import contextlib
import dataclasses
import functools
import logging
import math
import os
import threading
import warnings
from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.ndimage
from astropy.io import fits

from jwst_klipprep.psf import builtin
from jwst_klipprep.psf.opd import OpdSpec, pupil_file

__all__ = [
    "BACKENDS", "MODEL_CACHE", "ModelCache", "StpsfOptions", "file_psf_function", "place_stamp",
    "psf_frame", "psf_function",
    "quiet_pysiaf", "resolve_backend", "si_wfe_available", "stpsf_data_path", "stpsf_version",
    "SYSTEMATIC_FLOOR_MAS", "systematic_floor_mas", "unocculted_stpsf_psf",
]

#: Backend names a user may give (``auto`` resolves to ``stpsf`` or ``builtin``).
BACKENDS = ("auto", "stpsf", "builtin", "file")


@dataclasses.dataclass(frozen=True)
class StpsfOptions:
    """Options of the stpsf backend (hashable: part of the model cache key).

    Attributes
    ----------
    opd : OpdSpec or None
        Telescope wavefront map (`jwst_klipprep.psf.opd.read_opd`); None = no telescope
        wavefront error (stpsf ``pupilopd=None``).
    si_wfe : bool
        stpsf ``include_si_wfe`` (instrument wavefront, incl. the coronagraph wedge tilt).
    pupil_npix : int
        stpsf pupil grid (``jwst_pupil_RevW_npix<n>``); 1024 is stpsf's default, 256 is about
        6x faster.
    """

    opd: OpdSpec | None = None
    si_wfe: bool = True
    pupil_npix: int = 1024


#: Systematic floor of the star position (mas per axis, 1 sigma) for each model configuration:
#: the error a model mismatch the fit cannot see leaves (the chi2 of the fit flags it, the
#: statistical error does not cover it). Measured with ``benchmarks/bench_recenter.py``
#: (stpsf truth, 60-65 nm rms telescope wavefront maps, NIRCam MASK335R, F444W/F335M):
#: ``stpsf_opd``: an OPD 15 nm rms older than the frames leaves 4.3 and 8.1 mas radial on two
#: maps (up to 5.9 per axis);
#: ``stpsf_no_opd``: an unknown 60-65 nm telescope wavefront leaves 15-47 mas radial (up to
#: 33 per axis); ``builtin``: the same plus the built-in optics' own 3-10 mas; ``file``: a
#: user PSF image moved as a whole, at least as coarse. Added in quadrature to the statistical
#: error by ``recenter_frames`` (its ``systematic_floor`` parameter overrides it).
SYSTEMATIC_FLOOR_MAS = MappingProxyType(
    {"stpsf_opd": 6.0, "stpsf_no_opd": 30.0, "builtin": 30.0, "file": 30.0})


def systematic_floor_mas(backend, *, opd_given=False):
    """Systematic floor (mas per axis) of the star position for a model configuration.

    Parameters
    ----------
    backend : {"stpsf", "builtin", "file"}
        Resolved backend (not ``auto``).
    opd_given : bool, optional
        stpsf with a measured telescope wavefront (OPD) map.

    Returns
    -------
    float
        See `SYSTEMATIC_FLOOR_MAS`.
    """
    if backend == "stpsf":
        return SYSTEMATIC_FLOOR_MAS["stpsf_opd" if opd_given else "stpsf_no_opd"]
    if backend not in SYSTEMATIC_FLOOR_MAS:
        raise ValueError(f"unknown PSF backend {backend!r} (expected stpsf, builtin or file)")
    return SYSTEMATIC_FLOOR_MAS[backend]


#: What the package used before the instrument wavefront was modelled (kept for comparisons).
NO_WFE = StpsfOptions(opd=None, si_wfe=False)

log = logging.getLogger(__name__)


class ModelCache:
    """The one in-process cache of PSF model frames, keyed by the full model configuration.

    Keys hold everything a frame depends on (backend, instrument, filter, mask, source offset,
    frame shape and mask centre, pixel scale, sampling, `StpsfOptions`); values are read-only
    arrays. Least recently used entries are dropped beyond ``max_entries`` or ``max_bytes``.
    `psf_frame` and `unocculted_stpsf_psf` use it; nothing above them caches frames (the
    stpsf optical system, built once per configuration, and a converted wavefront-sensing OPD
    are setup, not frames, and are kept separately).
    """

    def __init__(self, *, max_entries=256, max_bytes=256 * 2**20):
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._frames = collections.OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = self.hits = self.misses = 0

    def get(self, key, compute):
        """``compute()`` once per ``key``: the cached read-only frame (thread-safe; two threads
        may compute the same new key once each)."""
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                self.hits += 1
                return self._frames[key]
        frame = np.array(compute(), dtype=np.float64)
        frame.flags.writeable = False
        with self._lock:
            self.misses += 1
            if key in self._frames:
                self.nbytes -= self._frames[key].nbytes
            self._frames[key] = frame
            self.nbytes += frame.nbytes
            while len(self._frames) > 1 and (len(self._frames) > self.max_entries
                                             or self.nbytes > self.max_bytes):
                _, old = self._frames.popitem(last=False)
                self.nbytes -= old.nbytes
        return frame

    def clear(self):
        """Drop every frame and reset the counters."""
        with self._lock:
            self._frames.clear()
            self.nbytes = self.hits = self.misses = 0

    def __len__(self):
        return len(self._frames)


#: The PSF model cache of the process (see `ModelCache`).
MODEL_CACHE = ModelCache()

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


def si_wfe_available():
    """True when the stpsf data hold the instrument wavefront tables (``si_zernikes_*``)."""
    path = stpsf_data_path()
    return path is not None and (path / "si_zernikes_coron_wfe.fits").is_file()


def resolve_backend(psf_backend, *, allow_file=False):
    """Resolve a backend name: ``builtin``, ``stpsf``, ``file`` (if allowed) or ``auto``.

    Raises ValueError for an unknown name and for ``stpsf`` without valid data or package.
    """
    name = str(psf_backend).lower()
    valid = BACKENDS if allow_file else BACKENDS[:3]
    if name not in valid:
        raise ValueError(f"psf_backend must be one of {valid}, got {psf_backend!r}")
    if name in ("builtin", "file"):
        return name
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


@contextlib.contextmanager
def _quiet_stpsf():
    with quiet_pysiaf(), warnings.catch_warnings():
        # stpsf builds its NIRCam occulter with poppy's deprecated kind='nircamcircular'
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="poppy")
        warnings.filterwarnings("ignore", message=".*BandLimitedCoron.*")
        # stpsf's rms-WFE header value on pupils without a pixel of exactly 1 (npix 256)
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered",
                                category=RuntimeWarning)
        poppy_log = logging.getLogger("poppy")
        level = poppy_log.level
        poppy_log.setLevel(max(level, logging.WARNING))  # per-plane INFO chatter
        try:
            yield
        finally:
            poppy_log.setLevel(level)


@functools.lru_cache(maxsize=16)
def _stpsf_system(instrument, filter_name, canonical, stamp, pixel_scale, oversample, nlambda,
                  occulted, options):
    """stpsf optical system (built once per configuration), its wavelengths and weights.

    The system is propagated directly (``OpticalSystem.calc_psf``) rather than through
    ``NIRCam.calc_psf``: same optics, no distortion, no jitter, no FITS header bookkeeping (which
    fails on non-1024 pupils), and the system is reused for every offset.
    """
    with _quiet_stpsf():
        import stpsf

        inst = stpsf.NIRCam() if instrument == "NIRCAM" else stpsf.MIRI()
        inst.filter = filter_name
        if options.pupil_npix != 1024:
            inst.pupil = str(pupil_file(stpsf_data_path(), options.pupil_npix))
        inst.pupilopd = _pupilopd(inst, options)
        inst.include_si_wfe = bool(options.si_wfe)
        inst.image_mask = canonical if occulted else None
        inst.pupil_mask = "MASKRND" if instrument == "NIRCAM" else "MASKFQPM"
        inst.pixelscale = pixel_scale
        osys = inst.get_optical_system(fft_oversample=oversample, detector_oversample=oversample,
                                       fov_pixels=stamp)
        wavelengths, weights = inst._get_weights(source=None, nlambda=nlambda)
    return osys, wavelengths, weights


def _stpsf_stamp(*args):
    """`_compute_stpsf_stamp` through `MODEL_CACHE` (read-only array)."""
    return MODEL_CACHE.get(("stpsf stamp",) + args, lambda: _compute_stpsf_stamp(*args))


def _compute_stpsf_stamp(instrument, filter_name, canonical, offset_y, offset_x, stamp,
                         pixel_scale, oversample, nlambda, occulted, options=NO_WFE):
    """stpsf detector-sampled PSF on a square stamp, mask centre at the stamp centre.

    The source is at (offset_y, offset_x) arcsec from stpsf's optical axis (the occulter
    centre), along the detector axes, as stpsf's ``source_offset_y/x`` options place it.
    """
    osys, wavelengths, weights = _stpsf_system(instrument, filter_name, canonical, stamp,
                                               pixel_scale, oversample, nlambda, occulted,
                                               options)
    with _quiet_stpsf():
        osys.source_offset_r = math.hypot(offset_y, offset_x)
        osys.source_offset_theta = math.degrees(math.atan2(-offset_x, offset_y))
        hdul = osys.calc_psf(wavelength=wavelengths, weight=weights, normalize="first")
    data = np.asarray(hdul[0].data, dtype=np.float64)
    return data.reshape(stamp, oversample, stamp, oversample).sum(axis=(1, 3))


_WSS_CACHE = {}


def _pupilopd(inst, options):
    """stpsf ``pupilopd`` value for the options (a converted WSS map is computed once)."""
    spec = options.opd
    if spec is None:
        return None
    if spec.form in ("fits", "cube"):
        if "BUNIT" in fits.getheader(spec.path):
            return spec.path if spec.form == "fits" else (spec.path, spec.slice)
        # read_opd takes a map without BUNIT as metres; poppy refuses it ("No opdunit keyword
        # supplied"): hand stpsf the chosen map with BUNIT set, read once
        key = (spec.sha256, spec.slice, "metres")
        if key not in _WSS_CACHE:
            with fits.open(spec.path) as hdul:
                data = np.asarray(hdul[0].data, dtype=float)
                header = hdul[0].header.copy()
            data = data if spec.slice is None else data[spec.slice]
            for card in ("NAXIS3", "CTYPE3", "CRPIX3", "CRVAL3", "CDELT3", "CUNIT3"):
                header.pop(card, None)
            header["BUNIT"] = "meter"
            _WSS_CACHE[key] = fits.HDUList([fits.PrimaryHDU(data, header=header)])
        return _WSS_CACHE[key]
    key = (spec.sha256, options.pupil_npix)
    if key not in _WSS_CACHE:
        # stpsf's own import: interpolation to the pupil grid, microns -> metres, and the
        # instrument + OTE field-dependent wavefront at the sensing field point backed out.
        # stpsf's load_wss_opd works on its 1024 grid (other grids fail inside it): import
        # there, then average onto the model's grid (pupil-weighted blocks).
        import stpsf
        from stpsf.utils import get_target_phase_map_filename

        loader = stpsf.NIRCam()
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            try:
                apername = fits.getval(spec.path, "APERNAME")
                exact = Path(get_target_phase_map_filename(apername)).is_file()
            except (ValueError, KeyError, OSError):
                exact = False
            loader.load_wss_opd(spec.path, verbose=False, use_exact_wss_target_phase=exact)
        hdul = loader.pupilopd
        if options.pupil_npix != 1024:
            hdul = _rebin_opd(hdul, options.pupil_npix)
        _WSS_CACHE[key] = hdul
    return _WSS_CACHE[key]


def _rebin_opd(hdul, npix):
    """Average a 1024-grid OPD HDUList onto an ``npix`` grid (pupil-weighted blocks)."""
    factor = 1024 // int(npix)
    if factor * int(npix) != 1024:
        raise ValueError(f"a wavefront-sensing OPD needs pupil_npix dividing 1024, got {npix}")
    with fits.open(pupil_file(stpsf_data_path(), 1024)) as pupil_hdul:
        weight = np.asarray(pupil_hdul[0].data, float)
    opd = np.asarray(hdul[0].data, float)

    def blocks(a):
        return a.reshape(npix, factor, npix, factor).sum(axis=(1, 3))

    total = blocks(weight)
    small = np.divide(blocks(opd * weight), total, out=np.zeros((npix, npix)), where=total > 0)
    header = hdul[0].header.copy()
    header["PUPLSCAL"] = float(header.get("PUPLSCAL", 6.603464 / 1024)) * factor
    return fits.HDUList([fits.PrimaryHDU(small, header=header)])


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
    options=None,
):
    """Occulted PSF (contrast units) on the detector frame with the mask centre at center_yx.

    Read-only array from `MODEL_CACHE` (copy it to modify it): a configuration is computed once
    per process.

    ``options`` (`StpsfOptions`, stpsf only; default: no telescope wavefront, the instrument
    wavefront when the data have it, 1024-pixel pupil). The built-in backend has no wavefront
    input: options with an OPD are an error there.
    """
    if backend == "builtin":
        if options is not None and options.opd is not None:
            raise ValueError("an OPD (telescope wavefront) needs the stpsf backend; the built-in "
                             "optics have no wavefront input")
        kw = dict(instrument=instrument, filter=filter_name, coronagraph=canonical,
                  offset_yx_arcsec=(float(offset_yx_arcsec[0]), float(offset_yx_arcsec[1])),
                  shape=tuple(int(n) for n in shape),
                  center_yx=(float(center_yx[0]), float(center_yx[1])),
                  pixel_scale=float(pixel_scale), oversample=int(oversample),
                  nlambda=int(nlambda))
        key = ("builtin",) + tuple(sorted(kw.items()))
        return MODEL_CACHE.get(key, lambda: builtin.coronagraphic_psf(**kw))
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
    if options is None:
        options = StpsfOptions(si_wfe=si_wfe_available())

    def compute():
        occulted = _stpsf_stamp(*args, True, options)
        reference = _stpsf_stamp(*args[:3], 0.0, 0.0, *args[5:], False, options)
        return place_stamp(occulted / reference.sum(), center_yx, shape)

    key = ("stpsf frame", args, tuple(int(n) for n in shape),
           (float(center_yx[0]), float(center_yx[1])), options)
    return MODEL_CACHE.get(key, compute)


def unocculted_stpsf_psf(*, instrument, filter_name, canonical, stamp, pixel_scale, nlambda,
                         oversample, options):
    """stpsf PSF of a source on the optical axis without the occulter (same pupil mask), on a
    ``stamp`` x ``stamp`` grid whose array centre is stpsf's optical axis (read-only, cached).

    With the instrument wavefront on, its image is displaced from the array centre: that
    displacement (`si_image_shift`) separates the star position convention of this package
    (stpsf source position) from the apparent image centre.
    """
    stamp = int(stamp) + int(stamp) % 2
    return _stpsf_stamp(instrument, filter_name, canonical, 0.0, 0.0, stamp, pixel_scale,
                        int(oversample), int(nlambda), False, options)


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


def file_psf_function(path, *, shape, center_yx, pixel_scale):
    """PSF function of a user FITS image (mask centre at its array centre), moved by the offset.

    The first HDU with data is the occulted PSF; ``PIXELSCL`` (arcsec) and optional
    ``OVERSAMP`` give its sampling (binned to the detector). Returns
    ``f(offset_yx_arcsec) -> ndarray shape``. Raises ValueError naming the file when it cannot
    be read, is not 2-D or has another pixel scale than the data.
    """
    try:
        with fits.open(path) as hdul:
            hdu = next(h for h in hdul if getattr(h, "data", None) is not None)
            image = np.asarray(hdu.data, float)
            file_scale = hdu.header.get("PIXELSCL", pixel_scale)
            oversample = int(hdu.header.get("OVERSAMP", 1))
    except (OSError, StopIteration) as exc:
        raise ValueError(f"{path}: cannot read a PSF image: {exc}") from None
    if image.ndim != 2:
        raise ValueError(f"{path}: the PSF model must be a 2-D image, got shape {image.shape}")
    if oversample > 1:
        ny, nx = (n // oversample for n in image.shape)
        image = image[: ny * oversample, : nx * oversample].reshape(
            ny, oversample, nx, oversample).sum(axis=(1, 3))
    if abs(file_scale * oversample - pixel_scale) > 0.02 * pixel_scale:
        raise ValueError(f"{path}: PSF pixel scale {file_scale * oversample:.4f} arcsec differs "
                         f"from the data's {pixel_scale:.4f}")
    center = (float(center_yx[0]), float(center_yx[1]))

    def function(offset_yx_arcsec):
        position = (center[0] + offset_yx_arcsec[0] / pixel_scale,
                    center[1] + offset_yx_arcsec[1] / pixel_scale)
        return place_stamp(image, position, shape)

    return function


def psf_function(backend, *, instrument, filter_name, coronagraph, shape, center_yx,
                 pixel_scale, nlambda=3, oversample=2, options=None, psf_file=None):
    """``f(offset_yx_arcsec) -> ndarray shape`` for a resolved backend name.

    ``builtin``/``stpsf``: `psf_frame` with these optics arguments (``options`` for stpsf);
    ``file``: `file_psf_function` of ``psf_file``.
    """
    shape = tuple(int(n) for n in shape)
    center = (float(center_yx[0]), float(center_yx[1]))
    name = str(backend).lower()
    if name == "file":
        if not psf_file:
            raise ValueError("the file PSF backend needs a psf_file")
        return file_psf_function(psf_file, shape=shape, center_yx=center,
                                 pixel_scale=float(pixel_scale))
    if name not in ("builtin", "stpsf"):
        raise ValueError(f"backend must be 'builtin', 'stpsf' or 'file', got {backend!r}")

    def function(offset_yx_arcsec):
        return psf_frame(name, instrument=instrument, filter_name=filter_name,
                         canonical=coronagraph, offset_yx_arcsec=offset_yx_arcsec, shape=shape,
                         center_yx=center, pixel_scale=float(pixel_scale), nlambda=int(nlambda),
                         oversample=int(oversample), options=options)

    return function
