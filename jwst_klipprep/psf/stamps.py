"""Model-PSF callables on a data stamp, for `jwst_klipprep.algorithms.centering`.

`~jwst_klipprep.algorithms.centering.measure_star_offset` takes the model PSF as a callable
``model(offset_yx_px) -> ndarray (ny, nx)`` (the star at mask centre + offset, in pixels, on the
grid of the data stamp) so that the centring algorithm never sees the optics backend.
`make_model_callable` builds that callable from a backend name of
`jwst_klipprep.psf.models` (``"builtin"``, ``"stpsf"`` or ``"file"``, via
`~jwst_klipprep.psf.models.psf_function`, the one place where the backend is chosen),
or wraps any function that computes a PSF from an offset in arcsec. Offsets are rounded to
1e-6 px; the returned arrays are read-only. Nothing is cached here: the backends' frames are
cached once, keyed by the full model configuration, in `jwst_klipprep.psf.models.MODEL_CACHE`
(so the same pointing in several files, or several fits, costs one computation).
"""

import logging
import time

import numpy as np

from .models import psf_function

__all__ = ["StampModel", "make_model_callable"]

log = logging.getLogger(__name__)


class StampModel:
    """Callable ``model(offset_yx_px) -> ndarray``: a PSF function on a fixed stamp.

    Parameters
    ----------
    function : callable
        ``function(offset_yx_arcsec) -> ndarray (ny, nx)``, the occulted PSF of a star at mask
        centre + offset (arcsec, (dy, dx) along the detector axes) on the stamp grid.
    pixel_scale : float
        Arcsec per pixel (converts the pixel offsets of the caller).
    shape : (int, int)
        Expected stamp shape (checked).

    Attributes
    ----------
    calls : int
        Calls of ``function``.
    seconds : float
        Time spent in ``function`` (near 0 for configurations already in the model cache).
    """

    def __init__(self, function, *, pixel_scale, shape):
        self.function = function
        self.pixel_scale = float(pixel_scale)
        if not self.pixel_scale > 0:
            raise ValueError(f"pixel_scale must be > 0, got {pixel_scale!r}")
        self.shape = tuple(int(n) for n in shape)
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, offset_yx_px):
        key = (round(float(offset_yx_px[0]), 6), round(float(offset_yx_px[1]), 6))
        t0 = time.perf_counter()
        frame = np.asarray(self.function((key[0] * self.pixel_scale,
                                          key[1] * self.pixel_scale)), dtype=float)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        if frame.shape != self.shape:
            raise ValueError(f"PSF function returned shape {frame.shape}, expected {self.shape}")
        if frame.flags.writeable:
            frame = frame.copy()  # read-only without touching the caller's array
            frame.flags.writeable = False
        return frame


def make_model_callable(backend, *, instrument, filter_name, coronagraph, shape, center_yx,
                        pixel_scale, nlambda=3, oversample=2, options=None, psf_file=None):
    """Model-PSF callable for `~jwst_klipprep.algorithms.centering.measure_star_offset`.

    Parameters
    ----------
    backend : str or callable
        ``"builtin"``, ``"stpsf"`` or ``"file"`` (a resolved name of
        `~jwst_klipprep.psf.models.resolve_backend`,
        computed by `~jwst_klipprep.psf.models.psf_function`), or a function
        ``f(offset_yx_arcsec) -> ndarray (ny, nx)`` (e.g. a user FITS model interpolated on
        the stamp); then the optics arguments are not used.
    instrument, filter_name, coronagraph : str
        ``"NIRCAM"``/``"MIRI"``, the FILTER and the canonical mask name (e.g. ``"MASK335R"``).
    shape : (int, int)
        Stamp shape (ny, nx), the shape of the data passed to ``measure_star_offset``.
    center_yx : (float, float)
        0-indexed position of the mask centre in the stamp (the ``center_yx`` given to
        ``measure_star_offset``; e.g. from `~jwst_klipprep.algorithms.centering.extract_stamp`).
    pixel_scale : float
        Arcsec per pixel.
    nlambda, oversample : int, optional
        Wavelength samples and detector oversampling of the optics model.
    options : `~jwst_klipprep.psf.models.StpsfOptions`, optional
        stpsf options (telescope OPD, instrument wavefront, pupil grid).
    psf_file : str, optional
        The user FITS model of the ``"file"`` backend.

    Returns
    -------
    StampModel
        ``model(offset_yx_px) -> ndarray shape``, read-only arrays, in contrast units for the
        built-in backends (the fit has a free flux scale anyway).
    """
    shape = tuple(int(n) for n in shape)
    center = (float(center_yx[0]), float(center_yx[1]))
    if callable(backend):
        function = backend
    else:
        function = psf_function(backend, instrument=instrument, filter_name=filter_name,
                                coronagraph=coronagraph, shape=shape, center_yx=center,
                                pixel_scale=pixel_scale, nlambda=nlambda, oversample=oversample,
                                options=options, psf_file=psf_file)

    return StampModel(function, pixel_scale=pixel_scale, shape=shape)
