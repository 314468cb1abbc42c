"""Built-in, data-free coronagraph optics model for NIRCam round masks and the MIRI 4QPMs.

The model needs no STScI data package. It propagates a monochromatic field through

1. an analytic JWST entrance pupil: 18 flat-topped hexagonal segments (flat-to-flat 1.308 m, on the
   public segment-centre layout with segment A1 at +y) and three secondary-mirror struts
   (0.1228 m wide, one along +y, two at +-150 deg from +y), with gray-level anti-aliased edges;
2. a focal-plane occulter centred on the optical axis:

   * NIRCam band-limited round masks MASK210R / MASK335R / MASK430R, amplitude transmission
     ``1 - (2 J1(sigma r) / (sigma r))**2`` with sigma = 5.253 / 3.2927866 / 2.58832 arcsec^-1
     (the stpsf values), wavelength-independent;
   * MIRI ideal four-quadrant phase masks MASK1065 / MASK1140 / MASK1550: phase 0 in two opposite
     quadrants and ``pi * lambda0 / lambda`` in the other two (chromatic, lambda0 = 10.65, 11.40,
     15.50 um), transition lines rotated by -4.6 deg on the detector (measured on the public
     MASK1140 transmission map);
3. a Lyot stop approximated by the entrance pupil eroded by a fixed distance (each segment
   shrunk, each strut widened): 0.34 m for the NIRCam round-mask stop (MASKRND), 0.13 m for the
   MIRI 4QPM stop;
4. the detector, sampled ``oversample`` times finer than the pixels and binned.

The spectrum is a flat top-hat across the filter band (``FILTERS``), sampled at ``nlambda``
equally weighted wavelengths. There is no wavefront error, no jitter, no distortion and no
detector effect (IPC, charge diffusion).

Implementation choice (measured on the 2-core development machine)
-------------------------------------------------------------------
The propagation is pure numpy/scipy: one zero-padded FFT pair for pupil -> occulter -> Lyot
plane (padding 2 for the band-limited masks, which is exact; padding 8 for the 4QPM, whose
residual core is still 35 % too bright at padding 4 and 70 % at 2), with a half-sample tilt
that centres the mask between focal samples, then a matrix Fourier transform (MFT) from the Lyot
plane straight onto the requested detector grid. This controls the output grid fully (any shape,
the mask centre at any sub-pixel position, see ``center_yx``) and raises no warnings.
Timings (nlambda 3, oversample 2): NIRCam MASK335R 64x64 0.1-0.2 s, 320x320 about 0.2 s; MIRI
4QPM 224x288 about 0.3 s. The equivalent poppy 1.1.2 optical system (``MultiHexagonAperture`` +
``AsymmetricSecondaryObscuration`` + ``BandLimitedCoronagraph(kind='circular')`` + the same Lyot
array) took 0.3-0.4 s for 64x64 and 0.46 s for 320x320, logs resampling messages, centres its
detector on the optical axis and, with its default padding of 2, biases the 4QPM core;
``kind='nircamcircular'`` also emits a DeprecationWarning. poppy is therefore not used here.

Fidelity
--------
See ``FIDELITY_NOTE``. The model is good for tests, synthetic data, quick looks and initial
guesses; it is not a substitute for stpsf with the real optics data when centring to a few mas
matters (project research note ``psf-models.md``, sections 3-5).

Conventions
-----------
Arrays are (y, x), 0-indexed; pixel (j, i) is centred on integer coordinates. Offsets are in
arcsec along the detector axes (+x = increasing column, +y = increasing row). The PSF is in
contrast units: the same star seen without the occulter (same Lyot stop) sums to 1 over an
infinite field.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
import scipy.fft
import scipy.special

from .instruments import (
    CORONAGRAPHS,
    DEFAULT_PIXEL_SCALES,
    FILTERS,
    CoronagraphSpec,
    FilterSpec,
    _check_instrument,
    default_pixel_scale,
    filter_wavelengths,
    resolve_coronagraph,
    resolve_filter,
)

__all__ = [
    "BACKEND_NAME",
    "FIDELITY_NOTE",
    "FILTERS",
    "CORONAGRAPHS",
    "DEFAULT_PIXEL_SCALES",
    "FilterSpec",
    "CoronagraphSpec",
    "resolve_filter",
    "resolve_coronagraph",
    "default_pixel_scale",
    "filter_wavelengths",
    "coronagraphic_psf",
    "mask_transmission",
]

log = logging.getLogger(__name__)

#: Name under which this model is reported (headers, logs, truth files).
BACKEND_NAME = "builtin"

#: One-sentence statement of what this model can and cannot be trusted for.
FIDELITY_NOTE = (
    "Data-free analytic approximation of the JWST coronagraph optics (ideal segmented pupil, "
    "analytic occulter, eroded-pupil Lyot stop, top-hat bandpass, no wavefront error): star "
    "centring against it is biased by about 15 mas compared with stpsf and its optics data, "
    "see psf-models.md sections 3-5."
)


# ------------------------------------------------------------------------------------------------
# Pupil geometry (metres, pupil x/y aligned with detector x/y, no inversion)
# ------------------------------------------------------------------------------------------------

#: Diameter of the square grid the pupil is sampled on (circumscribed JWST diameter), metres.
PUPIL_GRID_DIAMETER_M = 6.603464
_SEGMENT_FLAT_TO_FLAT_M = 1.308
_STRUT_WIDTH_M = 0.1228
# Public segment-centre layout (A ring, B ring, C ring), metres.
_SEGMENT_CENTERS_M = (
    (0.000000, 1.323500),
    (1.146185, 0.661750),
    (1.146185, -0.661750),
    (0.000000, -1.323500),
    (-1.146185, -0.661750),
    (-1.146185, 0.661750),
    (0.000000, 2.634719),
    (2.281734, 1.317360),
    (2.281734, -1.317359),
    (0.000000, -2.634719),
    (-2.281734, -1.317360),
    (-2.281734, 1.317360),
    (1.142963, 1.979670),
    (2.285926, 0.000000),
    (1.142963, -1.979670),
    (-1.142963, -1.979670),
    (-2.285926, 0.000000),
    (-1.142963, 1.979670),
)
# Strut directions (unit vectors from the centre outwards): +y, and +-150 deg from +y.
_STRUT_DIRECTIONS = ((0.0, 1.0), (0.5, -math.sqrt(3) / 2), (-0.5, -math.sqrt(3) / 2))

# Minimum pupil samples across PUPIL_GRID_DIAMETER_M, and zero-padding factor of the
# pupil -> occulter -> Lyot FFT pair, per occulter kind. The band-limited mask is exact at pad 2
# (changing to 4 alters the PSF by < 1e-11); the 4QPM's discontinuity scatters light far outside
# the pupil in the Lyot plane, whose wrap-around biases the residual core by +35 % at pad 4 and
# < 1 % at pad 8 (checked against pad 16 and 32, and npix 128 against 256, to ~2 %).
_PUPIL_NPIX_MIN = {"blc": 256, "fqpm": 128}
_FFT_PAD = {"blc": 2, "fqpm": 8}
_PUPIL_SUPERSAMPLE = 4  # sub-samples per pupil pixel (per axis) for gray edges
_ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0

# 4QPM transition-line transmission model for mask_transmission (fits the public MASK1140 map):
# each line multiplies by 1 - depth * exp(-d**2 / (2 w**2)), w = width_lod * lambda0 / D.
_FQPM_LINE_DEPTH = 0.5
_FQPM_LINE_WIDTH_LOD = 1.2


# ------------------------------------------------------------------------------------------------
# Optical planes (cached, read-only)
# ------------------------------------------------------------------------------------------------


def _pupil_coords(npix):
    """Pupil array size m and 1-D sample coordinates (metres); the origin is at index m // 2."""
    dx = PUPIL_GRID_DIAMETER_M / npix
    m = npix + 4  # margin so the outermost edges are fully sampled
    return m, dx, (np.arange(m) - m // 2) * dx


@functools.lru_cache(maxsize=8)
def _aperture(npix, erosion_m):
    """Gray-level transmission of the JWST pupil eroded by ``erosion_m`` (0 = entrance pupil).

    Returns a read-only float64 array of shape (m, m), m = npix + 4, sampled at
    ``(i - m // 2) * dx`` with dx = PUPIL_GRID_DIAMETER_M / npix.
    """
    m, dx, coords = _pupil_coords(npix)
    ss = _PUPIL_SUPERSAMPLE
    sub = (np.arange(ss) - (ss - 1) / 2) * dx / ss
    fine = (coords[:, None] + sub[None, :]).ravel()  # (m*ss,)
    inside = np.zeros((fine.size, fine.size), dtype=bool)
    a = _SEGMENT_FLAT_TO_FLAT_M / 2 - erosion_m  # inradius of the (shrunk) hexagon
    if a > 0:
        r_circ = 2 * a / math.sqrt(3)
        for cx, cy in _SEGMENT_CENTERS_M:
            ix = np.flatnonzero(np.abs(fine - cx) <= r_circ)
            iy = np.flatnonzero(np.abs(fine - cy) <= a)
            if ix.size == 0 or iy.size == 0:
                continue
            xs = np.abs(fine[ix] - cx)[None, :]
            ys = np.abs(fine[iy] - cy)[:, None]
            hexa = (ys <= a) & (math.sqrt(3) / 2 * xs + ys / 2 <= a)
            inside[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] |= hexa
    half_width = _STRUT_WIDTH_M / 2 + erosion_m
    yy = fine[:, None]
    xx = fine[None, :]
    for ux, uy in _STRUT_DIRECTIONS:
        along = xx * ux + yy * uy
        across = np.abs(-xx * uy + yy * ux)
        inside &= ~((along > 0) & (across <= half_width))
    out = inside.reshape(m, ss, m, ss).mean(axis=(1, 3))
    out.flags.writeable = False
    return out


def _pupil_npix(kind, wavelength_min_m, fov_arcsec):
    """Pupil sampling that keeps the detector field inside one alias period (with 10 % margin)."""
    lod = wavelength_min_m / PUPIL_GRID_DIAMETER_M * _ARCSEC_PER_RAD
    need = 1.1 * fov_arcsec / lod
    return max(_PUPIL_NPIX_MIN[kind], int(32 * math.ceil(need / 32)))


@functools.lru_cache(maxsize=16)
def _blc_amplitude(canonical, wavelength_m, npix):
    """Real amplitude of a band-limited mask on the FFT focal grid, FFT (unshifted) order.

    The grid is offset by half a sample so that the mask centre falls between samples (the
    field is tilted by the same half sample before the FFT and un-tilted after it).
    """
    spec = CORONAGRAPHS[canonical]
    n = _FFT_PAD[spec.kind] * npix
    dx = PUPIL_GRID_DIAMETER_M / npix
    dtheta = wavelength_m / (n * dx) * _ARCSEC_PER_RAD  # arcsec per focal sample
    k = (scipy.fft.fftfreq(n, d=1.0 / n) + 0.5) * dtheta
    arg = spec.sigma_per_arcsec * np.hypot(k[:, None], k[None, :])
    jinc = 2 * scipy.special.j1(arg) / arg  # arg is never 0 on the half-sample grid
    amp = 1.0 - jinc**2
    amp.flags.writeable = False
    return amp


@functools.lru_cache(maxsize=4)
def _fqpm_flip(canonical, npix):
    """Boolean map of the 4QPM quadrants that get the phase step, FFT focal grid, FFT order.

    Same half-sample-offset grid as :func:`_blc_amplitude`; the pattern does not depend on the
    wavelength (only on the rotation), so it is cached per pupil sampling.
    """
    spec = CORONAGRAPHS[canonical]
    n = _FFT_PAD[spec.kind] * npix
    k = scipy.fft.fftfreq(n, d=1.0 / n) + 0.5
    rot = math.radians(spec.rotation_deg)
    ty = k[:, None]
    tx = k[None, :]
    u = tx * math.cos(rot) + ty * math.sin(rot)
    v = -tx * math.sin(rot) + ty * math.cos(rot)
    flip = (u * v) < 0
    flip.flags.writeable = False
    return flip


# ------------------------------------------------------------------------------------------------
# Propagation
# ------------------------------------------------------------------------------------------------


def _mft_matrix(theta_rad, coords_m, wavelength_m):
    """exp(-2 pi i theta x / lambda) for output angles theta and input coordinates x."""
    return np.exp((-2j * math.pi / wavelength_m) * np.outer(theta_rad, coords_m))


def _lyot_field(pupil_field, canonical, wavelength_m, npix):
    """Field in the Lyot plane (before the stop) behind the occulter; same grid as the pupil."""
    m = pupil_field.shape[0]
    n = _FFT_PAD[CORONAGRAPHS[canonical].kind] * npix
    o = n // 2 - m // 2
    # half-sample tilt: the on-axis star lands between focal samples, on the mask centre
    idx = np.arange(m) - m // 2
    tilt1 = np.exp(-1j * math.pi * idx / n)
    big = np.zeros((n, n), dtype=np.complex128)
    big[o : o + m, o : o + m] = pupil_field * tilt1[:, None] * tilt1[None, :]
    big = scipy.fft.ifftshift(big)
    focal = scipy.fft.fft2(big, overwrite_x=True)
    spec = CORONAGRAPHS[canonical]
    if spec.kind == "blc":
        focal *= _blc_amplitude(canonical, wavelength_m, npix)
    else:  # ideal 4QPM: phase step pi * lambda0 / lambda in two opposite quadrants
        step = np.exp(1j * math.pi * spec.design_wavelength_um * 1e-6 / wavelength_m)
        np.multiply(focal, step, out=focal, where=_fqpm_flip(canonical, npix))
    lyot = scipy.fft.fftshift(scipy.fft.ifft2(focal, overwrite_x=True))
    return lyot[o : o + m, o : o + m] * np.conj(tilt1)[:, None] * np.conj(tilt1)[None, :]


def _psf(
    instrument,
    filter_name,
    canonical,
    offset_y,
    offset_x,
    ny,
    nx,
    center_y,
    center_x,
    pixel_scale,
    oversample,
    nlambda,
    occulted,
):
    t0 = time.perf_counter()
    spec = CORONAGRAPHS[canonical]
    wavelengths, weights = filter_wavelengths(filter_name, nlambda)
    # field that must fit in one alias period: twice the farthest frame edge from the mask centre
    half = max(center_y + 0.5, ny - 0.5 - center_y, center_x + 0.5, nx - 0.5 - center_x)
    fov = 2 * half * pixel_scale + 2 * max(abs(offset_x), abs(offset_y))
    npix = _pupil_npix(spec.kind, wavelengths.min(), fov)
    pupil = _aperture(npix, 0.0)
    lyot = _aperture(npix, spec.lyot_erosion_m)
    m, dx, coords = _pupil_coords(npix)
    # crop the MFT input to the Lyot stop's support
    rows = np.flatnonzero(lyot.any(axis=1))
    cols = np.flatnonzero(lyot.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    lyot_crop = lyot[r0:r1, c0:c1]
    energy = float(np.sum((pupil[r0:r1, c0:c1] * lyot_crop) ** 2))
    # detector sub-sample angles (radians), mask centre at angle 0
    step = pixel_scale / oversample
    ty = ((np.arange(ny * oversample) + 0.5) / oversample - 0.5 - center_y) * pixel_scale
    tx = ((np.arange(nx * oversample) + 0.5) / oversample - 0.5 - center_x) * pixel_scale
    ty_rad = ty / _ARCSEC_PER_RAD
    tx_rad = tx / _ARCSEC_PER_RAD
    oy_rad = offset_y / _ARCSEC_PER_RAD
    ox_rad = offset_x / _ARCSEC_PER_RAD
    image = np.zeros((ny * oversample, nx * oversample))
    for wl, w in zip(wavelengths, weights, strict=True):
        phase_y = np.exp((2j * math.pi / wl) * oy_rad * coords)
        phase_x = np.exp((2j * math.pi / wl) * ox_rad * coords)
        field = pupil * phase_y[:, None] * phase_x[None, :]
        if occulted:
            field = _lyot_field(field, canonical, wl, npix)
        field = field[r0:r1, c0:c1] * lyot_crop
        ay = _mft_matrix(ty_rad, coords[r0:r1], wl)
        ax = _mft_matrix(tx_rad, coords[c0:c1], wl)
        det = ay @ field @ ax.T
        norm = (dx * step / _ARCSEC_PER_RAD / wl) ** 2 / energy
        image += (w * norm) * (det.real**2 + det.imag**2)
    out = image.reshape(ny, oversample, nx, oversample).sum(axis=(1, 3))
    log.debug(
        'builtin PSF %s %s %s offset=(%.4f, %.4f)" shape=(%d, %d) npix=%d nlambda=%d: %.3f s',
        instrument,
        filter_name,
        canonical if occulted else "unocculted",
        offset_y,
        offset_x,
        ny,
        nx,
        npix,
        nlambda,
        time.perf_counter() - t0,
    )
    return out


def _as_pair(value, what, cast=float):
    try:
        a, b = value
        return cast(a), cast(b)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair of numbers (y, x), got {value!r}") from None


def coronagraphic_psf(
    *,
    instrument="NIRCAM",
    filter="F444W",  # noqa: A002 (the FITS keyword name)
    coronagraph="MASKA335R",
    offset_yx_arcsec=(0.0, 0.0),
    shape=(64, 64),
    pixel_scale=None,
    oversample=2,
    nlambda=3,
    occulted=True,
    center_yx=None,
):
    """Detector-sampled coronagraphic PSF of a point source from the built-in optics model.

    Parameters
    ----------
    instrument : {"NIRCAM", "MIRI"}
        Instrument (case-insensitive).
    filter : str
        Filter, e.g. ``"F444W"`` or ``"F1140C"`` (see ``FILTERS``).
    coronagraph : str
        Occulter in any accepted spelling: ``MASKA335R``, ``MASK335R``, ``MASKA210R``,
        ``MASK430R``, ``4QPM_1140``, ``MASK1140``, ``FQPM1550``, ... (see
        :func:`resolve_coronagraph`). The Lyot stop is the one that goes with it.
    offset_yx_arcsec : (float, float)
        Star position minus mask centre, arcsec along detector (y, x).
    shape : (int, int)
        Output shape (ny, nx).
    pixel_scale : float, optional
        Detector pixel scale in arcsec. Default: :func:`default_pixel_scale` (NIRCam LW 0.0629,
        NIRCam SW 0.0311, MIRI 0.11).
    oversample : int
        Detector sub-samples per pixel and axis; the output is their sum (pixel integration).
    nlambda : int
        Number of wavelengths across the top-hat bandpass.
    occulted : bool
        If False, the occulter is removed (same pupil and Lyot stop): the reference for contrast
        units.
    center_yx : (float, float), optional
        0-indexed (y, x) array position of the mask centre. Default: the array centre
        ((ny - 1) / 2, (nx - 1) / 2).

    Returns
    -------
    psf : ndarray of float64, shape ``shape``
        Intensity per pixel in contrast units: the same PSF computed with ``occulted=False``
        sums to 1 over an infinite field. The star sits at ``center_yx`` +
        ``offset_yx_arcsec / pixel_scale``.

    Raises
    ------
    ValueError
        For an unknown instrument, filter or coronagraph (the message lists the valid choices),
        or invalid shape / sampling arguments.

    Notes
    -----
    Not cached here: `jwst_klipprep.psf.models.psf_frame` (what the steps use) keeps the one
    cache of PSF frames, keyed by the full model configuration. See the module docstring for
    the optics and ``FIDELITY_NOTE`` for its accuracy.
    """
    inst = _check_instrument(instrument)
    filter_name, _ = resolve_filter(inst, filter)
    spec = resolve_coronagraph(inst, coronagraph)
    ny, nx = _as_pair(shape, "shape", int)
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    oy, ox = _as_pair(offset_yx_arcsec, "offset_yx_arcsec")
    if center_yx is None:
        cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    else:
        cy, cx = _as_pair(center_yx, "center_yx")
    if pixel_scale is None:
        pixel_scale = default_pixel_scale(inst, filter=filter_name)
    pixel_scale = float(pixel_scale)
    if not pixel_scale > 0:
        raise ValueError(f"pixel_scale must be > 0, got {pixel_scale!r}")
    if int(oversample) < 1 or int(nlambda) < 1:
        raise ValueError("oversample and nlambda must be >= 1")
    if not all(map(math.isfinite, (oy, ox, cy, cx))):
        raise ValueError("offsets and centre must be finite")
    return _psf(
        inst,
        filter_name,
        spec.name,
        oy,
        ox,
        ny,
        nx,
        cy,
        cx,
        pixel_scale,
        int(oversample),
        int(nlambda),
        bool(occulted),
    )


def mask_transmission(*, instrument, coronagraph, shape, center_yx, pixel_scale=None):
    """Analytic intensity transmission (0..1) of the occulter on a detector grid.

    Parameters
    ----------
    instrument : {"NIRCAM", "MIRI"}
        Instrument (case-insensitive).
    coronagraph : str
        Occulter in any accepted spelling (see :func:`resolve_coronagraph`).
    shape : (int, int)
        Output shape (ny, nx).
    center_yx : (float, float)
        0-indexed (y, x) array position of the mask centre.
    pixel_scale : float, optional
        Arcsec per pixel; default :func:`default_pixel_scale` for the mask's channel.

    Returns
    -------
    ndarray of float64, shape ``shape``
        NIRCam round masks: ``(1 - (2 J1(sigma r) / (sigma r))**2)**2`` with r the distance to
        the mask centre in arcsec. MIRI 4QPM: the product of two transition-line profiles
        ``1 - 0.5 exp(-d**2 / (2 w**2))`` (d = distance to the line, w = 1.2 lambda0 / D),
        rotated like the optics model, which reproduces the low-transmission cross of the
        public MASK1140 map to about 0.1.
    """
    inst = _check_instrument(instrument)
    spec = resolve_coronagraph(inst, coronagraph)
    ny, nx = _as_pair(shape, "shape", int)
    cy, cx = _as_pair(center_yx, "center_yx")
    if pixel_scale is None:
        pixel_scale = default_pixel_scale(inst, coronagraph=spec.name)
    y = (np.arange(ny) - cy)[:, None] * float(pixel_scale)
    x = (np.arange(nx) - cx)[None, :] * float(pixel_scale)
    if spec.kind == "blc":
        arg = spec.sigma_per_arcsec * np.hypot(y, x)
        safe = np.where(arg > 0, arg, 1.0)
        jinc = np.where(arg > 0, 2 * scipy.special.j1(safe) / safe, 1.0)
        return np.clip((1.0 - jinc**2) ** 2, 0.0, 1.0)
    rot = math.radians(spec.rotation_deg)
    u = x * math.cos(rot) + y * math.sin(rot)  # distance to the line v = 0 is |v|, to u = 0 |u|
    v = -x * math.sin(rot) + y * math.cos(rot)
    width = (
        _FQPM_LINE_WIDTH_LOD * spec.design_wavelength_um * 1e-6 / PUPIL_GRID_DIAMETER_M
    ) * _ARCSEC_PER_RAD
    line_u = 1.0 - _FQPM_LINE_DEPTH * np.exp(-(u**2) / (2 * width**2))
    line_v = 1.0 - _FQPM_LINE_DEPTH * np.exp(-(v**2) / (2 * width**2))
    return np.clip(line_u * line_v, 0.0, 1.0)
