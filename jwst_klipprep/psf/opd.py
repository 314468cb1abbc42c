"""Telescope wavefront (OPD) maps for the stpsf model: reading, checking, recording, test maps.

Three file forms are accepted, the forms stpsf itself takes as ``pupilopd``:

``fits``
    a 2-D OPD in metres on stpsf's pupil grid (``npix`` x ``npix``, the grid of
    ``jwst_pupil_RevW_npix<npix>.fits.gz``), primary HDU; what stpsf ships and writes;
``cube``
    a 3-D stack of such maps (e.g. stpsf's OPD cubes); one slice is chosen (``slice``);
``wss``
    the measured OPD of JWST's wavefront-sensing programme as downloaded from MAST (an
    ``RESULT_PHASE`` extension in microns on a coarse grid, ``APERNAME`` of the sensing field
    point in the primary header). It is converted by stpsf's own ``NIRCam.load_wss_opd``
    (interpolation to the pupil grid, metres, the instrument and field-dependent wavefront at
    the sensing field point backed out), so it means exactly what it means in stpsf.

`read_opd` checks a file (readable, a known form, the right grid, plausible units, finite)
without importing stpsf, and returns an `OpdSpec`: the hashable description that the stpsf
backend (`jwst_klipprep.psf.models`) turns into ``pupilopd``, and that the step records
(``record()``: file name, form, slice, date, sha256, rms).

`make_test_opd` writes test maps offline on the pupil and segment files of the stpsf data:
per-segment piston / tip / tilt / focus plus global focus, astigmatism, coma and trefoil,
with the pupil's least-squares piston and tip/tilt removed, in any of the three forms.
"""

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = [
    "OPD_FORMS", "OpdError", "OpdSpec", "fetch_opd_for_date", "make_test_opd", "pupil_file",
    "read_opd",
]

OPD_FORMS = ("fits", "cube", "wss")
_WSS_EXTENSION = "RESULT_PHASE"
_WSS_NPIX = 256  # the WSS product's grid (the MAST files are 256 x 256)
_MAX_RMS_M = 5e-6  # an OPD with more than 5 um rms is not in metres (or not a JWST OPD)


class OpdError(ValueError):
    """An OPD file that cannot be used: the message names the file and what is wrong."""


@dataclass(frozen=True)
class OpdSpec:
    """A checked OPD file: what the stpsf backend needs and what the output records.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    form : {"fits", "cube", "wss"}
    slice : int or None
        Slice of a cube (None for the other forms).
    npix : int
        Pupil grid the OPD is used on (for ``wss`` the grid it is interpolated to).
    sha256 : str
        Checksum of the file's bytes (the cache key, and provenance).
    date : str
        ``DATE-OBS`` (+ ``TIME-OBS``) of the measurement, else ``DATE``, else "".
    rms_nm : float
        rms of the (chosen slice of the) map inside the pupil, nm (``wss``: of the measured
        map before the instrument wavefront is backed out).
    """

    path: str
    form: str
    slice: int | None
    npix: int
    sha256: str
    date: str
    rms_nm: float

    def record(self):
        """Plain dict for ``meta.klipprep.recenter_frames.opd`` (file name, not the full path)."""
        values = asdict(self)
        values["file"] = Path(self.path).name
        return values


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _date(header):
    date = str(header.get("DATE-OBS", "") or "").strip()
    if date and "T" not in date and header.get("TIME-OBS"):
        date = f"{date}T{str(header['TIME-OBS']).strip()}"
    return date or str(header.get("DATE", "") or "").strip()


def _rms_nm(opd, scale):
    inside = np.isfinite(opd) & (opd != 0)
    if not inside.any():
        return 0.0
    return float(np.std(opd[inside]) * scale * 1e9)


def read_opd(path, *, npix=None, slice=None):  # noqa: A002 (stpsf's word for a cube index)
    """Check an OPD file and describe it (no stpsf import).

    Parameters
    ----------
    path : str or path-like
        The OPD file, in one of the forms of this module's docstring.
    npix : int or None, optional
        stpsf pupil grid the model uses (``jwst_pupil_RevW_npix<npix>``); a ``fits``/``cube``
        map must be on it, a ``wss`` map is interpolated onto it. None: the map's own grid
        (``fits``/``cube``), 1024 for ``wss``.
    slice : int or None, optional
        Slice of a cube; required when the file is a cube with more than one slice, an error
        for the other forms (except 0 for a single map, accepted).

    Returns
    -------
    OpdSpec

    Raises
    ------
    OpdError
        Missing or unreadable file, unknown layout, wrong grid, non-finite values, units that
        cannot be metres, a bad slice.
    """
    path = Path(path).expanduser()
    name = str(path)
    if not path.is_file():
        raise OpdError(f"{name}: OPD file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name.upper() for h in hdul]
            primary = hdul[0].header.copy()
            if _WSS_EXTENSION in names:
                form = "wss"
                data = np.asarray(hdul[_WSS_EXTENSION].data, dtype=float)
                header = hdul[_WSS_EXTENSION].header
            else:
                data = None if hdul[0].data is None else np.asarray(hdul[0].data, dtype=float)
                header = primary
                form = "cube" if data is not None and data.ndim == 3 else "fits"
    except (OSError, ValueError, TypeError) as exc:
        raise OpdError(f"{name}: cannot read the OPD file as FITS: {exc}") from None
    if data is None or data.ndim not in (2, 3):
        raise OpdError(
            f"{name}: no OPD image: expected a 2-D OPD (or a 3-D cube) in metres in the primary "
            f"HDU, or a MAST wavefront-sensing file with a {_WSS_EXTENSION} extension"
        )
    if form == "wss":
        if data.ndim != 2 or data.shape[0] != data.shape[1]:
            raise OpdError(f"{name}: {_WSS_EXTENSION} must be a square 2-D map, got {data.shape}")
        if not str(primary.get("APERNAME", "")).strip():
            raise OpdError(f"{name}: a wavefront-sensing OPD needs APERNAME (the sensing field "
                           "point) in its primary header")
        if slice not in (None, 0):
            raise OpdError(f"{name}: opd_slice={slice} given for a single OPD map")
        scale, index = 1e-6, None  # WSS products are in microns
        chosen = data
        npix = 1024 if npix is None else npix
    else:
        unit = str(header.get("BUNIT", "meter")).strip().lower()
        if unit not in ("m", "meter", "meters", "metre", "metres"):
            raise OpdError(f"{name}: OPD unit BUNIT={header.get('BUNIT')!r}; stpsf OPDs are in "
                           "metres (BUNIT='meter')")
        scale = 1.0
        if data.ndim == 3:
            if slice is None and data.shape[0] > 1:
                raise OpdError(f"{name}: an OPD cube of {data.shape[0]} slices: choose one with "
                               "opd_slice")
            index = 0 if slice is None else int(slice)
            if not 0 <= index < data.shape[0]:
                raise OpdError(f"{name}: opd_slice={slice} is outside the cube's "
                               f"{data.shape[0]} slices")
            chosen = data[index]
        else:
            if slice not in (None, 0):
                raise OpdError(f"{name}: opd_slice={slice} given for a single OPD map")
            index, chosen = None, data
        if npix is None:
            npix = chosen.shape[0]
        if chosen.shape != (npix, npix):
            raise OpdError(
                f"{name}: OPD grid {chosen.shape[1]} x {chosen.shape[0]} does not match the stpsf "
                f"pupil grid {npix} x {npix} (pupil_npix={npix}); resample the map or set "
                "pupil_npix to its size"
            )
    if not np.all(np.isfinite(chosen)):
        raise OpdError(f"{name}: the OPD map has NaN or infinite values")
    rms = _rms_nm(chosen, scale)
    if rms * 1e-9 > _MAX_RMS_M:
        raise OpdError(f"{name}: OPD rms {rms:.3g} nm is not a plausible wavefront in "
                       + ("microns" if form == "wss" else "metres (BUNIT)"))
    return OpdSpec(path=str(path.resolve()), form=form, slice=index, npix=int(npix),
                   sha256=_sha256(path), date=_date(primary), rms_nm=rms)


def fetch_opd_for_date(date, *, cache_dir=None):
    """Local path of the measured WSS OPD nearest ``date`` (ISO, UTC), through stpsf and MAST.

    Needs the network the first time (the file is kept in ``cache_dir``, default
    ``$XDG_CACHE_HOME/jwst_klipprep/wss_opds`` or ``~/.cache/jwst_klipprep/wss_opds``). Offline,
    raises `OpdError` with a message that says how to pass a downloaded file instead. Never
    used by the tests.
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    cache_dir = Path(cache_dir or Path(base) / "jwst_klipprep" / "wss_opds")
    try:
        import stpsf.mast_wss

        cache_dir.mkdir(parents=True, exist_ok=True)
        path = stpsf.mast_wss.get_opd_at_time(str(date), choice="closest",
                                              output_path=str(cache_dir))
    except Exception as exc:  # noqa: BLE001 (network, astroquery and MAST errors of any kind)
        raise OpdError(
            f"opd=auto: could not get the measured OPD nearest {date} from MAST "
            f"({type(exc).__name__}: {exc}). Offline, download the wavefront-sensing OPD file "
            "(MAST, JWST 'OPD' products) elsewhere and pass it with opd=FILE"
        ) from None
    return Path(path)


def pupil_file(data_path, npix, what="pupil"):
    """Path of stpsf's pupil (``what="pupil"``) or segment map (``"segments"``) for ``npix``."""
    stem = "jwst_pupil" if what == "pupil" else "JWpupil_segments"
    for suffix in (".fits.gz", ".fits"):
        candidate = Path(data_path) / f"{stem}_RevW_npix{int(npix)}{suffix}"
        if candidate.is_file():
            return candidate
    raise OpdError(f"{data_path}: no {stem}_RevW_npix{int(npix)}.fits[.gz] in the stpsf data "
                   f"(pupil_npix={npix} is not available)")


def _zernike_terms(x, y):
    """Global focus, astigmatism x2, coma x2, trefoil x2 on unit-radius coordinates."""
    r2 = x * x + y * y
    return [2 * r2 - 1, x * x - y * y, 2 * x * y, (3 * r2 - 2) * x, (3 * r2 - 2) * y,
            x**3 - 3 * x * y * y, 3 * x * x * y - y**3]


def _random_opd(rng, pupil, segments, rms_nm, segment_fraction):
    """One map (metres) on the pupil grid: per-segment + global terms, PTT removed."""
    n = pupil.shape[0]
    inside = (pupil > 0.5) & (segments > 0)
    yy, xx = np.indices(pupil.shape) - (n - 1) / 2.0
    radius = max(np.abs(xx[inside]).max(), np.abs(yy[inside]).max())
    x, y = xx / radius, yy / radius
    seg_map = np.zeros(pupil.shape)
    for label in range(1, int(segments.max()) + 1):
        sel = inside & (segments == label)
        if not sel.any():
            continue
        sx, sy = x[sel] - x[sel].mean(), y[sel] - y[sel].mean()
        half = max(np.abs(sx).max(), np.abs(sy).max(), 1e-9)
        sx, sy = sx / half, sy / half
        piston, tip, tilt, focus = rng.normal(size=4)
        seg_map[sel] = piston + tip * sx + tilt * sy + 0.5 * focus * (2 * (sx * sx + sy * sy) - 1)
    glob = np.zeros(pupil.shape)
    for term, coeff in zip(_zernike_terms(x, y), rng.normal(size=7), strict=True):
        glob += coeff * term

    def unit(a):
        a = np.where(inside, a, 0.0)
        a[inside] -= a[inside].mean()
        return a / np.std(a[inside])

    total = (math.sqrt(segment_fraction) * unit(seg_map)
             + math.sqrt(1 - segment_fraction) * unit(glob))
    design = np.stack([np.ones(inside.sum()), x[inside], y[inside]], axis=1)
    total[inside] -= design @ np.linalg.lstsq(design, total[inside], rcond=None)[0]
    total[inside] *= rms_nm * 1e-9 / np.std(total[inside])
    total[~inside] = 0.0
    return total


def make_test_opd(path, *, rms_nm=60.0, seed=0, form="fits", npix=1024, nslices=3,
                  segment_fraction=0.7, date="2026-01-01T00:00:00", data_path=None,
                  base=None, drift_nm=0.0):
    """Write a test OPD file (offline) on the pupil of the stpsf data.

    Parameters
    ----------
    path : str or path-like
        File to write.
    rms_nm : float, optional
        rms wavefront inside the pupil (nm), after piston and tip/tilt removal.
    seed : int, optional
        Random seed of the segment and global coefficients.
    form : {"fits", "cube", "wss"}, optional
        ``fits``: 2-D metres on the ``npix`` grid; ``cube``: ``nslices`` maps (seeds ``seed``,
        ``seed + 1``, ...); ``wss``: the MAST wavefront-sensing layout (``RESULT_PHASE`` in
        microns on a 256 grid, ``APERNAME='NRCA3_FP1'``, ``DATE-OBS``).
    npix : int, optional
        Pupil grid of the ``fits``/``cube`` forms (a ``jwst_pupil_RevW_npix<npix>`` must exist).
    nslices : int, optional
        Slices of a cube.
    segment_fraction : float, optional
        Share of the variance in the per-segment terms (piston, tip/tilt, focus).
    date : str, optional
        Written as DATE-OBS (ISO, UTC).
    data_path : path-like, optional
        stpsf data folder (default ``$STPSF_PATH``).
    base : ndarray, optional
        A map (metres, on the same grid) to which a ``drift_nm`` rms random map is added
        instead of drawing an ``rms_nm`` map: an "older" measurement of the same wavefront.
    drift_nm : float, optional
        rms of the drift added to ``base``.

    Returns
    -------
    ndarray
        The map written (metres; the first slice of a cube; for ``wss`` on the 256 grid).
    """
    if form not in OPD_FORMS:
        raise ValueError(f"form must be one of {OPD_FORMS}, got {form!r}")
    data_path = Path(data_path or os.environ.get("STPSF_PATH", ""))
    grid = _WSS_NPIX if form == "wss" else int(npix)
    with fits.open(pupil_file(data_path, grid)) as hdul:
        pupil = np.asarray(hdul[0].data, float)
        pupil_scale = float(hdul[0].header.get("PUPLSCAL", 6.603464 / grid))
    with fits.open(pupil_file(data_path, grid, "segments")) as hdul:
        segments = np.asarray(hdul[0].data, int)
    rng = np.random.default_rng(seed)
    count = int(nslices) if form == "cube" else 1
    maps = []
    for k in range(count):
        if base is not None:
            drift = _random_opd(np.random.default_rng(seed + k), pupil, segments,
                                float(drift_nm), segment_fraction)
            maps.append(np.asarray(base, float) + drift)
        else:
            maps.append(_random_opd(np.random.default_rng(seed + k) if k else rng, pupil,
                                    segments, float(rms_nm), segment_fraction))
    header = fits.Header()
    header["DATE-OBS"] = (date, "date of the (test) wavefront measurement, UTC")
    header["CONTENTS"] = "jwst_klipprep test OPD (per-segment + global terms, PTT removed)"
    header["OPDRMS"] = (float(rms_nm if base is None else drift_nm), "requested rms, nm")
    header["OPDSEED"] = int(seed)
    if form == "wss":
        header["APERNAME"] = ("NRCA3_FP1", "sensing field point")
        header["INSTRUME"] = "NIRCAM"
        phase = fits.ImageHDU(maps[0] * 1e6, name=_WSS_EXTENSION)  # microns, as the WSS writes
        hdul = fits.HDUList([fits.PrimaryHDU(header=header), phase])
    else:
        header["BUNIT"] = "meter"
        header["PUPLSCAL"] = (pupil_scale, "pupil pixel scale, m")
        data = maps[0] if form == "fits" else np.stack(maps)
        hdul = fits.HDUList([fits.PrimaryHDU(data, header=header)])
    hdul.writeto(path, overwrite=True)
    return maps[0]
