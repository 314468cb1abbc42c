"""Realistic synthetic JWST coronagraphy datasets (stage-2 ``calints`` + level-3 ASN + truth).

:func:`simulate_dataset` writes, for NIRCam (MASKA335R / MASKRND / SUB320A335R, F444W by
default) or MIRI (4QPM, MASK1140 / F1140C by default):

* two science exposures of a star with a faint companion, at two telescope rolls;
* one reference star (brighter by a known factor, no companion) observed with a small-grid
  dither (1, 5 or 9 positions, one exposure each, XOFFSET/YOFFSET of 10-15 mas);
* optionally one science background (SCI_BG) and one reference background (REF_BG) exposure
  (sky only, TARGPROP ``<target>-BACKGROUND``, BKGDTARG = T, IS_PSF = F, as in real MIRI files);
* ``asn.json`` (level-3 ``coron3`` association: science / psf / background members) and
  ``truth.json`` with every injected quantity.

Each file is an stdatamodels ``CubeModel`` of ``nints`` integrations in MJy/sr with SCI, ERR,
DQ, VAR_POISSON, VAR_RNOISE, VAR_FLAT, INT_TIMES (and AREA for NIRCam), validated against the
schema with validation warnings turned into errors. The images contain, per integration:
the occulted star (and companion) from the chosen PSF backend, a fixed flat-field error pattern,
a sky pedestal that varies between integrations and exposures (MIRI: ~14-18 MJy/sr with a
"glowstick" along the vertical 4QPM transition), photon and read noise consistent with the
variance arrays (ERR**2 = VAR_POISSON + VAR_RNOISE + VAR_FLAT), detector defects that are flagged
DO_NOT_USE with NaN data (hot and dead pixels, 2x2 and 3x3 clusters, a bad column, edge pixels),
informational flags on valid data (WARM, JUMP_DET) and unflagged cosmic-ray-like outliers.

Geometry and sky orientation (also in ``truth["conventions"]``)
--------------------------------------------------------------
Arrays are (y, x), 0-indexed. CRPIX1/2 = mask centre + 1 (x, y). The star sits at the mask
centre plus a target-acquisition error (3-25 mas, one per visit) plus the dither offset
(+XOFFSET / pixel_scale along x, +YOFFSET / pixel_scale along y, as pyKLIP reads them) plus a
1.5 mas pointing jitter per exposure. The detector +y axis points to position angle
PA_APER = ROLL_REF + V3I_YANG (east of north, VPARITY = -1) and east is to the left when north is
up (the sign pattern of real NIRCam CD matrices). A sky-fixed companion at (separation, PA) is at
``dx = -sep * sin(PA - PA_APER)``, ``dy = +sep * cos(PA - PA_APER)`` from the star, so raising
ROLL_REF by d rotates it by -d (clockwise) on the detector; rotating a frame counter-clockwise by
PA_APER puts north up and east left (pyKLIP uses PA = ROLL_REF - V3I_YANG * VPARITY).

PSF backends
------------
``"builtin"`` (default, fast, data-free: :mod:`jwst_klipprep.psf.builtin`), ``"stpsf"`` (needs
stpsf and a valid ``$STPSF_PATH`` whose ``version.txt`` is >= 2.1.0; checked before stpsf is
imported; computed with the telescope wavefront ``opd`` (default none), the instrument wavefront
(``si_wfe``, on when the data have it), no distortion and no jitter, on a stamp of at most 256
pixels with stpsf's optical axis at the true mask centre, placed by a Fourier shift and
normalised by the unocculted PSF of the same stamp), or ``"auto"`` (stpsf when valid, else
builtin). The backend and its optics are chosen in :mod:`jwst_klipprep.psf.models`.

Layout: this module holds `simulate_dataset`; ``_setups`` (instrument setups, DQ values, dither
patterns, conventions, `SimulatedDataset`), ``_scene`` (SIAF look-ups, observation plan,
geometry), ``_detector`` (defects, flat, background, flux) and ``_products`` (arrays, metadata,
association, truth) are private to it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from astropy.time import Time, TimeDelta

from jwst_klipprep.psf import builtin
from jwst_klipprep.psf.models import (
    StpsfOptions,
    psf_frame,
    resolve_backend,
    si_wfe_available,
    stpsf_data_path,
)
from jwst_klipprep.psf.opd import read_opd

from ._detector import (
    _detector_defects,
    _flux_for_peak_snr,
    _glowstick,
)
from ._products import (
    _build_model,
    _exposure_arrays,
    _truth,
    _truth_exposure,
    _write_asn,
)
from ._scene import (
    _add_geometry,
    _dither_pattern,
    _plan,
    _siaf_values,
    _true_mask_center_yx,
)
from ._setups import (
    SETUPS,
    SimulatedDataset,
)

__all__ = ["SimulatedDataset", "simulate_dataset", "stpsf_data_path", "SETUPS"]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------


def simulate_dataset(
    outdir,
    *,
    instrument="NIRCAM",
    coronagraph=None,
    nints=10,
    seed=0,
    psf_backend="builtin",
    with_background=True,
    companion_contrast=1e-4,
    companion_separation_arcsec=1.5,
    companion_pa_deg=60.0,
    n_science_rolls=2,
    roll_ref_deg=65.0,
    roll_step_deg=10.0,
    n_reference=5,
    reference_flux_ratio=2.0,
    peak_snr=300.0,
    cosmic_rays_per_integration=3,
    psf_nlambda=3,
    psf_oversample=2,
    program="09999",
    opd=None,
    opd_slice=None,
    si_wfe=True,
    pupil_npix=None,
):
    """Write a synthetic coronagraphic dataset (calints files, ASN, truth) to ``outdir``.

    Parameters
    ----------
    outdir : str or os.PathLike
        Output folder (created if needed; existing files of the same names are overwritten).
    instrument : {"NIRCAM", "MIRI"}
        Instrument (case-insensitive).
    coronagraph : str, optional
        Occulter in any accepted spelling. NIRCam: MASKA335R (default) or MASKA430R; MIRI:
        4QPM_1140 / MASK1140 (default), 4QPM_1550 / MASK1550 or 4QPM_1065 / MASK1065. The filter,
        subarray and aperture follow (F444W / SUB320A335R / NRCA5_MASK335R, F1140C / MASK1140 /
        MIRIM_MASK1140, ...).
    nints : int
        Integrations per exposure.
    seed : int
        Seed of every random choice; the same arguments and seed write identical data.
    psf_backend : {"builtin", "stpsf", "auto"}
        PSF model (see the module docstring).
    with_background : bool
        Also write one SCI_BG and one REF_BG exposure (sky only).
    companion_contrast : float
        Companion flux / star flux (both unocculted totals); 0 for no companion.
    companion_separation_arcsec, companion_pa_deg : float
        Companion separation and sky position angle (east of north).
    n_science_rolls : int
        Number of science exposures, at ROLL_REF = ``roll_ref_deg + k * roll_step_deg``.
    roll_ref_deg, roll_step_deg : float
        First science roll and the roll step, degrees.
    n_reference : {1, 5, 9}
        Reference-star dither positions (5: 5-POINT-BOX, 15 mas steps for NIRCam / 10 mas for
        MIRI; 9: 9-point small grid), one exposure each.
    reference_flux_ratio : float
        Reference star flux / science star flux.
    peak_snr : float
        Per-integration signal-to-noise ratio at the peak of the occulted science star.
    cosmic_rays_per_integration : int
        Unflagged outliers (10-1000 sigma, log-uniform, single pixels) per integration.
    psf_nlambda, psf_oversample : int
        PSF wavelength sampling and detector oversampling.
    program : str
        Five-digit program number used in file names and headers.
    opd : str or path-like, optional
        stpsf only: telescope wavefront (OPD) file in a form of `jwst_klipprep.psf.opd`
        (2-D FITS in metres on the pupil grid, a cube with ``opd_slice``, a MAST
        wavefront-sensing file): the data get a known wavefront. None: no telescope wavefront.
    opd_slice : int, optional
        Slice of an OPD cube.
    si_wfe : bool
        stpsf only: include the instrument wavefront (when the stpsf data have it).
    pupil_npix : int, optional
        stpsf pupil grid; default the OPD's grid, else 1024.

    Returns
    -------
    SimulatedDataset
        Paths written and the truth dictionary (also in ``truth.json``).

    Raises
    ------
    ValueError
        For an unsupported instrument / coronagraph / dither, an invalid argument, or
        ``psf_backend="stpsf"`` without valid stpsf data.
    """
    t_start = time.perf_counter()
    inst = str(instrument).strip().upper()
    if inst not in ("NIRCAM", "MIRI"):
        raise ValueError(f"instrument must be 'NIRCAM' or 'MIRI', got {instrument!r}")
    if coronagraph is None:
        coronagraph = "MASKA335R" if inst == "NIRCAM" else "4QPM_1140"
    spec = builtin.resolve_coronagraph(inst, coronagraph)
    if (inst, spec.name) not in SETUPS:
        valid = ", ".join(SETUPS[k]["coronmsk"] for k in SETUPS if k[0] == inst)
        raise ValueError(f"coronagraph {coronagraph!r} is not simulated; valid: {valid}")
    nints = int(nints)
    if nints < 1 or int(n_science_rolls) < 1:
        raise ValueError("nints and n_science_rolls must be >= 1")
    if not (companion_contrast >= 0 and reference_flux_ratio > 0 and peak_snr > 0):
        raise ValueError("companion_contrast must be >= 0, reference_flux_ratio and peak_snr > 0")
    _dither_pattern(inst, n_reference)  # validates n_reference before anything is written
    program = f"{int(program):05d}"
    setup = SETUPS[(inst, spec.name)]
    backend = resolve_backend(psf_backend)
    options = None
    if backend == "stpsf":
        opd_spec = None if opd is None else read_opd(opd, npix=pupil_npix, slice=opd_slice)
        options = StpsfOptions(
            opd=opd_spec, si_wfe=bool(si_wfe) and si_wfe_available(),
            pupil_npix=opd_spec.npix if opd_spec is not None else int(pupil_npix or 1024),
        )  # fmt: skip
    elif opd is not None:
        raise ValueError(f"opd={opd!r} needs psf_backend='stpsf' (the {backend} optics have no "
                         "wavefront input)")
    filter_name = setup["filter"]
    shape = setup["shape"]
    pixel_scale = builtin.default_pixel_scale(inst, filter=filter_name)
    fallback = (*setup["crpix_fallback"], setup["v3yangle_fallback"], *setup["v2v3_fallback"])
    xref, yref, v3yangle, v2ref, v3ref = _siaf_values(inst, setup["aperture"], fallback)
    mask_yx = _true_mask_center_yx(inst, setup["aperture"], filter_name, (xref, yref))
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    plan = _plan(
        inst, setup, rng, n_science_rolls=int(n_science_rolls), roll_ref_deg=float(roll_ref_deg),
        roll_step_deg=float(roll_step_deg), n_reference=int(n_reference),
        with_background=bool(with_background), program=program,
    )  # fmt: skip
    companion = (float(companion_separation_arcsec), float(companion_pa_deg),
                 float(companion_contrast))  # fmt: skip
    _add_geometry(plan, mask_yx=mask_yx, pixel_scale=pixel_scale, v3yangle=v3yangle,
                  companion=companion, rng=rng)  # fmt: skip
    keep_clear = [e["companion_yx"] for e in plan if e["companion_yx"] is not None]
    detector = _detector_defects(rng, shape, mask_yx, keep_clear, inst)
    detector["flat"] = 1.0 + setup["flat_error"] * rng.standard_normal(shape)
    detector["background"] = _glowstick(shape, mask_yx, spec.rotation_deg, setup["glowstick"])

    # every distinct PSF once: the star in each exposure, the companion in each science roll
    t_psf = time.perf_counter()
    psf_kw = dict(instrument=inst, filter_name=filter_name, canonical=spec.name, shape=shape,
                  center_yx=mask_yx, pixel_scale=pixel_scale, nlambda=int(psf_nlambda),
                  oversample=int(psf_oversample), options=options)  # fmt: skip
    for e in plan:
        e["psf"] = e["companion_psf"] = None
        if e["star_offset_yx_arcsec"] is not None:
            e["psf"] = psf_frame(backend, offset_yx_arcsec=e["star_offset_yx_arcsec"], **psf_kw)
        if e["companion_yx"] is not None:
            e["companion_psf"] = psf_frame(
                backend, offset_yx_arcsec=e["companion_offset_yx_arcsec"], **psf_kw
            )
    t_psf = time.perf_counter() - t_psf
    # star brightness: the requested S/N at the occulted peak of the first science exposure
    flux_sci = _flux_for_peak_snr(
        float(plan[0]["psf"].max()), float(peak_snr), setup["gain"], setup["read_noise"],
        float(np.mean(setup["pedestal_range"])),
    )  # fmt: skip
    fluxes = {"SCI": flux_sci, "REF": flux_sci * float(reference_flux_ratio)}

    tint = setup["tframe"] * (setup["nframes"] + setup["groupgap"]) * (setup["ngroups"] - 1)
    tgap = setup["tframe"] * (setup["nframes"] + setup["groupgap"])
    start = Time("2025-06-01T04:00:00.000", scale="utc")
    paths = {}
    truth_exposures = []
    for e in plan:
        flux = fluxes.get(e["kind"], 0.0)
        arrays, record = _exposure_arrays(
            e, setup, detector, rng, nints=nints, flux=flux, contrast=companion[2],
            clear=[mask_yx, *keep_clear], cosmic_rays=int(cosmic_rays_per_integration),
        )  # fmt: skip
        model = _build_model(
            arrays, exp=e, setup=setup, instrument=inst, filter_name=filter_name,
            program=program, start=start, nints=nints, tint=tint, tgap=tgap,
            crpix=(xref, yref), v3yangle=v3yangle, v2v3=(v2ref, v3ref), pixel_scale=pixel_scale,
        )  # fmt: skip
        model.save(outdir / e["filename"])
        model.close()
        start = start + TimeDelta(nints * (tint + tgap) + 600.0, format="sec")
        paths[e["filename"]] = e["kind"]
        truth_exposures.append(_truth_exposure(e, record, nints=nints, tint=tint, flux=flux,
                                               contrast=companion[2], setup=setup))  # fmt: skip

    asn_path = _write_asn(outdir, plan, program=program, instrument=inst,
                          filter_name=filter_name, setup=setup)  # fmt: skip
    truth = _truth(
        seed=seed, inst=inst, setup=setup, spec=spec, pixel_scale=pixel_scale, mask_yx=mask_yx,
        crpix=(xref, yref), v3yangle=v3yangle, backend=backend, psf_nlambda=psf_nlambda,
        psf_oversample=psf_oversample, companion=companion, flux_sci=flux_sci,
        reference_flux_ratio=reference_flux_ratio, peak_snr=peak_snr, defects=detector["truth"],
        exposures=truth_exposures, options=options,
    )  # fmt: skip
    truth_path = outdir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    log.info(
        "wrote %d %s exposures (%d integrations each, %s PSF) to %s in %.1f s (PSFs %.1f s)",
        len(plan), inst, nints, backend, outdir, time.perf_counter() - t_start, t_psf,
    )  # fmt: skip
    return SimulatedDataset(
        outdir=outdir, asn_path=asn_path, truth_path=truth_path, paths=paths, truth=truth
    )
