"""Gaussian blur of frames: NaN-aware, flux-conserving, with propagated variances."""

from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["FWHM_PER_SIGMA", "BlurResult", "auto_fwhm", "blur_frames", "gaussian_kernel"]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0


class BlurResult(NamedTuple):
    """Result of `blur_frames`; arrays have the input shape ``(nints, ny, nx)``."""

    data: np.ndarray
    err: np.ndarray
    var: dict
    #: True where a usable input pixel got too little support (isolated among bad pixels): NaN in
    #: ``data``.  Unusable input pixels are returned unchanged (neither used nor modified).
    lost: np.ndarray
    #: Gaussian sigma used (pixels).
    sigma: float


def auto_fwhm(*, wavelength_min_um, diameter_m, pixel_scale_arcsec, target_fwhm_px=2.0):
    """FWHM (px) of the Gaussian that brings ``lambda_min / D`` up to ``target_fwhm_px``.

    The PSF core FWHM is about ``lambda / D``; Nyquist sampling of the shortest wavelength of the
    band needs ``lambda_min / D >= 2`` pixels.  Returns ``sqrt(target**2 - (lambda_min/D)**2)``
    in pixels, 0 when the data are already sampled that well (Gaussian widths add in quadrature).
    """
    if wavelength_min_um <= 0 or diameter_m <= 0 or pixel_scale_arcsec <= 0:
        raise ValueError("wavelength, diameter and pixel scale must be > 0")
    now = wavelength_min_um * 1e-6 / diameter_m * _ARCSEC_PER_RAD / pixel_scale_arcsec
    return float(np.sqrt(max(target_fwhm_px**2 - now**2, 0.0)))


def gaussian_kernel(sigma, *, truncate=4.0):
    """Normalised 1-D Gaussian (sum 1), odd size ``2 * ceil(truncate * sigma) + 1``.

    The 2-D kernel is its outer product with itself (separable).
    """
    radius = max(int(np.ceil(truncate * sigma)), 1)
    x = np.arange(-radius, radius + 1, dtype=float)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _convolve(frames, kernel_1d):
    """Convolve each (ny, nx) frame with the separable kernel ``outer(k, k)`` (zero outside)."""
    out = ndimage.correlate1d(frames, kernel_1d, axis=-1, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, kernel_1d, axis=-2, mode="constant", cval=0.0)


def blur_frames(data, *, fwhm, err=None, var=None, bad=None, min_support=0.1, truncate=4.0):
    """Convolve every integration with a Gaussian of ``fwhm`` pixels, ignoring bad pixels.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Not modified.
    fwhm : float
        Full width at half maximum of the Gaussian (pixels, > 0).
    err : ndarray, optional
        1-sigma uncertainties (same shape).
    var : dict of ndarray, optional
        Variance arrays (same shape).
    bad : ndarray of bool, optional
        True = not used (e.g. DO_NOT_USE); non-finite data are not used either.
    min_support : float
        Usable pixels where the usable inputs carry less than this fraction of the kernel weight
        that falls inside the frame are NaN (``lost``); frame edges are not penalised.
    truncate : float
        Kernel radius in sigmas.

    Returns
    -------
    BlurResult

    Notes
    -----
    Normalised convolution: ``out = (K * (w x)) / (K * w)`` with ``w`` = 1 for usable pixels, so
    a missing pixel is interpolated from its neighbours instead of pulling the result toward 0,
    and the total flux of a source surrounded by usable pixels is conserved (kernel sum 1).
    Unusable pixels keep their input values (NaN stays NaN: NaNs do not spread).
    Independent pixel errors propagate through the squared kernel:
    ``var_out = (K**2 * (w var)) / (K * w)**2``; each VAR_* array likewise.
    """
    if not np.isfinite(fwhm) or fwhm <= 0:
        raise ValueError(f"fwhm must be a finite number > 0, got {fwhm}")
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be (nints, ny, nx), got shape {data.shape}")
    var = {} if var is None else {k: np.asarray(v) for k, v in var.items()}
    for name, array in (("err", err), *var.items()):
        if array is not None and np.shape(array) != data.shape:
            raise ValueError(f"{name} has shape {np.shape(array)} but data has {data.shape}")
    sigma = float(fwhm) / FWHM_PER_SIGMA
    kernel = gaussian_kernel(sigma, truncate=truncate)
    kernel2 = kernel**2  # outer(k, k)**2 = outer(k**2, k**2)
    usable = np.isfinite(data)
    if bad is not None:
        usable &= ~np.asarray(bad, bool)
    w = usable.astype(np.float64)
    norm = _convolve(w, kernel)
    inside = _convolve(np.ones((1, *data.shape[1:])), kernel)  # kernel weight in the frame
    lost = usable & (norm < min_support * inside)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _convolve(np.where(usable, data, 0.0), kernel) / norm
        out[lost] = np.nan
        out = np.where(usable, out, data)

        def propagate(variance):
            variance = np.asarray(variance, float)
            good = usable & np.isfinite(variance)
            v = _convolve(np.where(good, variance, 0.0), kernel2) / norm**2
            v[lost] = np.nan
            return np.where(usable, v, variance).astype(np.float32)

        out_err = None if err is None else np.sqrt(propagate(np.asarray(err, float) ** 2))
        out_var = {k: propagate(v) for k, v in var.items()}
    return BlurResult(out.astype(np.float32), out_err, out_var, lost, sigma)
