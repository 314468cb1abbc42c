"""Simulator products: per-exposure arrays, datamodel metadata, the association, truth."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
from astropy.time import TimeDelta
from stdatamodels.jwst import datamodels
from stdatamodels.validate import ValidationWarning

from jwst_klipprep.psf import builtin

from ._detector import (
    _free_pixels,
)
from ._setups import (
    _ARCSEC_PER_RAD,
    _DEAD,
    _DNU,
    _HOT,
    _JUMP,
    _NON_SCIENCE,
    _OTHER_BAD,
    _REFPIX,
    _TARGET_RADEC,
    _WARM,
    CONVENTIONS,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _int_times(start_mjd, nints, tint_s, tgap_s):
    dtype = [
        ("integration_number", ">i4"),
        ("int_start_MJD_UTC", ">f8"),
        ("int_mid_MJD_UTC", ">f8"),
        ("int_end_MJD_UTC", ">f8"),
        ("int_start_BJD_TDB", ">f8"),
        ("int_mid_BJD_TDB", ">f8"),
        ("int_end_BJD_TDB", ">f8"),
    ]
    table = np.zeros(nints, dtype=dtype)
    day = 86400.0
    bjd_offset = 0.00418  # ~361 s barycentric correction, constant over the visit
    for i in range(nints):
        t0 = start_mjd + i * (tint_s + tgap_s) / day
        t1 = t0 + tint_s / day
        table[i] = (
            i + 1,
            t0,
            0.5 * (t0 + t1),
            t1,
            t0 + bjd_offset,
            0.5 * (t0 + t1) + bjd_offset,
            t1 + bjd_offset,
        )
    return table


def _set_meta(
    model,
    *,
    exp,
    setup,
    instrument,
    filter_name,
    program,
    start,
    nints,
    tint,
    tgap,
    crpix,
    v3yangle,
    v2v3,
    pixel_scale,
):
    """Fill the metadata of one exposure (keywords as in real stage-2 calints)."""
    meta = model.meta
    meta.filename = exp["filename"]
    meta.telescope = "JWST"
    meta.origin = "jwst_klipprep.simulate"
    meta.instrument.name = instrument
    meta.instrument.detector = setup["detector"]
    if setup["channel"]:
        meta.instrument.channel = setup["channel"]
    if setup["module"]:
        meta.instrument.module = setup["module"]
    meta.instrument.filter = filter_name
    if setup["pupil"]:
        meta.instrument.pupil = setup["pupil"]
    meta.instrument.coronagraph = setup["coronmsk"]

    end = start + TimeDelta(nints * (tint + tgap), format="sec")
    meta.observation.date = start.strftime("%Y-%m-%d")
    meta.observation.time = start.strftime("%H:%M:%S.%f")[:12]
    meta.observation.date_beg = start.isot
    meta.observation.date_end = end.isot
    meta.observation.program_number = program
    meta.observation.observation_number = f"{exp['obs']:03d}"
    meta.observation.visit_number = "001"
    meta.observation.visit_group = exp["vg"][:2]
    meta.observation.sequence_id = exp["vg"][2]
    meta.observation.activity_id = exp["vg"][3:]
    meta.observation.exposure_number = str(exp["expnum"])
    meta.observation.visit_id = f"{program}{exp['obs']:03d}001"
    meta.observation.obs_id = f"V{program}{exp['obs']:03d}001P00000000{exp['vg']}"
    meta.observation.template = setup["template"]
    meta.observation.observation_label = exp["obslabel"]
    meta.observation.bkgdtarg = exp["bkgdtarg"]
    meta.program.title = "jwst_klipprep synthetic coronagraphy"
    meta.program.pi_name = "Synthetic, Data"
    meta.program.category = "CAL"

    meta.target.proposer_name = exp["targprop"]
    meta.target.catalog_name = exp["targname"]
    meta.target.type = "FIXED"
    meta.target.ra, meta.target.dec = _TARGET_RADEC

    meta.exposure.type = setup["exp_type"]
    meta.exposure.nints = nints
    meta.exposure.ngroups = setup["ngroups"]
    meta.exposure.nframes = setup["nframes"]
    meta.exposure.groupgap = setup["groupgap"]
    meta.exposure.frame_divisor = setup["nframes"]
    meta.exposure.readpatt = setup["readpatt"]
    meta.exposure.frame_time = setup["tframe"]
    meta.exposure.group_time = setup["tframe"] * (setup["nframes"] + setup["groupgap"])
    meta.exposure.integration_time = tint
    meta.exposure.exposure_time = tint * nints
    meta.exposure.effective_exposure_time = tint * nints
    meta.exposure.duration = nints * (tint + tgap)
    meta.exposure.elapsed_exposure_time = nints * (tint + tgap)
    meta.exposure.start_time = start.mjd
    meta.exposure.end_time = end.mjd
    meta.exposure.mid_time = 0.5 * (start.mjd + end.mjd)
    meta.exposure.start_time_mjd = start.mjd
    meta.exposure.end_time_mjd = end.mjd
    meta.exposure.mid_time_mjd = 0.5 * (start.mjd + end.mjd)
    meta.exposure.psf_reference = exp["is_psf"]
    meta.exposure.prime_parallel = "PRIME"
    meta.exposure.count = exp["expnum"]

    ny, nx = setup["shape"]
    meta.subarray.name = setup["subarray"]
    meta.subarray.xstart, meta.subarray.ystart = setup["substrt"]
    meta.subarray.xsize, meta.subarray.ysize = nx, ny
    meta.subarray.fastaxis = setup["fastaxis"]
    meta.subarray.slowaxis = setup["slowaxis"]
    meta.aperture.name = setup["aperture"]
    meta.aperture.pps_name = setup["aperture"]

    meta.dither.primary_type = exp["patttype"]
    if exp["smgrdpat"]:
        meta.dither.small_grid_pattern = exp["smgrdpat"]
    meta.dither.position_number = exp["patt_num"]
    meta.dither.total_points = exp["numdthpt"]
    meta.dither.x_offset = float(exp["offset_xy"][0])
    meta.dither.y_offset = float(exp["offset_xy"][1])

    pa_aper = (exp["roll_ref"] + v3yangle) % 360.0
    rho = math.radians(pa_aper)
    cdelt = pixel_scale / 3600.0
    w = meta.wcsinfo
    w.crpix1, w.crpix2 = crpix
    w.ctype1, w.ctype2 = "RA---TAN", "DEC--TAN"
    w.cunit1, w.cunit2 = "deg", "deg"
    w.cdelt1 = w.cdelt2 = cdelt
    w.pc1_1, w.pc1_2 = -math.cos(rho), math.sin(rho)
    w.pc2_1, w.pc2_2 = math.sin(rho), math.cos(rho)
    # sky position of the reference pixel (mask centre): target minus the star's offset
    sdy, sdx = exp["star_offset_yx_px"] if exp["star_offset_yx_px"] is not None else (0.0, 0.0)
    xi = cdelt * (w.pc1_1 * -sdx + w.pc1_2 * -sdy)
    eta = cdelt * (w.pc2_1 * -sdx + w.pc2_2 * -sdy)
    ra0, dec0 = _TARGET_RADEC
    w.crval1 = ra0 + xi / math.cos(math.radians(dec0))
    w.crval2 = dec0 + eta
    w.ra_ref, w.dec_ref = w.crval1, w.crval2
    w.roll_ref = exp["roll_ref"]
    w.v3yangle = v3yangle
    w.vparity = -1
    w.v2_ref, w.v3_ref = v2v3
    meta.aperture.position_angle = pa_aper
    meta.pointing.pa_v3 = exp["roll_ref"]

    meta.photometry.pixelarea_arcsecsq = pixel_scale**2
    meta.photometry.pixelarea_steradians = (pixel_scale / _ARCSEC_PER_RAD) ** 2
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    for step in (
        "assign_wcs",
        "dq_init",
        "saturation",
        "linearity",
        "dark_sub",
        "jump",
        "ramp_fit",
        "gain_scale",
        "flat_field",
        "photom",
    ):
        setattr(meta.cal_step, step, "COMPLETE")
    meta.cal_step.bkg_subtract = "SKIPPED"
    model.int_times = _int_times(start.mjd, nints, tint, tgap)


def _write_asn(outdir, plan, *, program, instrument, filter_name, setup):
    product = f"jw{program}-c1000_t001_{instrument.lower()}_{filter_name.lower()}-" + (
        f"{setup['pupil'].lower()}-{setup['subarray'].lower()}"
        if instrument == "NIRCAM"
        else setup["subarray"].lower()
    )
    asn = {
        "asn_type": "coron3",
        "asn_rule": "candidate_Asn_Lv3Coron",
        "version_id": None,
        "code_version": "jwst_klipprep.simulate",
        "degraded_status": "No known degraded exposures in association.",
        "program": program,
        "constraints": "synthetic dataset written by jwst_klipprep.simulate",
        "asn_id": "c1000",
        "target": "t001",
        "asn_pool": f"jw{program}_synthetic_pool",
        "products": [
            {
                "name": product,
                "members": [{"expname": e["filename"], "exptype": e["exptype"]} for e in plan],
            }
        ],
    }
    path = Path(outdir) / "asn.json"
    path.write_text(json.dumps(asn, indent=2) + "\n")
    return path


def _exposure_arrays(exp, setup, detector, rng, *, nints, flux, contrast, clear, cosmic_rays):
    """SCI/ERR/DQ/VAR cubes of one exposure, and what was injected.

    The noiseless model per integration i is ``(flux * psf + flux * contrast * companion_psf
    + pedestal[i] * background) * flat``; the noise is Gaussian with the Poisson + read-noise
    variance of that model. Returns (arrays dict, record dict).
    """
    shape = detector["flags"].shape
    ny, nx = shape
    gain, read_noise, flat_error = setup["gain"], setup["read_noise"], setup["flat_error"]
    lo, hi = setup["pedestal_range"]
    pedestal = rng.uniform(lo, hi) + setup["pedestal_jitter"] * rng.standard_normal(nints)
    signal = np.zeros(shape)
    if exp["psf"] is not None and flux > 0:
        signal += flux * exp["psf"]
    if exp["companion_psf"] is not None:
        signal += flux * contrast * exp["companion_psf"]
    model = signal[None] + pedestal[:, None, None] * detector["background"][None]
    model *= detector["flat"][None]
    var_p = np.clip(model, 0.0, None) / gain
    var_r = np.full(model.shape, read_noise**2)
    var_f = (flat_error * model) ** 2
    data = model + np.sqrt(var_p + var_r) * rng.standard_normal(model.shape, dtype=np.float32)
    err = np.sqrt(var_p + var_r + var_f)

    # two hot pixels that appeared in this exposure only
    extra_hot = _free_pixels(rng, 2, shape, detector["taken"], clear, 6.0)
    dq2d = detector["flags"].copy()
    bad2d = detector["bad"].copy()
    for y, x in extra_hot:
        dq2d[y, x] |= _DNU | _HOT
        bad2d[y, x] = True
    dq = np.repeat(dq2d[None], nints, axis=0)
    # JUMP_DET flags on valid data (0.05 % of the pixels per integration), and unflagged
    # cosmic-ray-like outliers (one integration each, away from the star core and companion)
    forbidden = detector["taken"] | set(extra_hot)
    jumps, crs = [], []
    for i in range(nints):
        jump_pixels = _free_pixels(rng, max(1, int(5e-4 * ny * nx)), shape, forbidden)
        for y, x in jump_pixels:
            dq[i, y, x] |= _JUMP
            jumps.append([i, y, x])
        for y, x in _free_pixels(rng, cosmic_rays, shape, forbidden | set(jump_pixels), clear, 8.0):
            amp = round(float(10 ** rng.uniform(1.0, 3.0)), 3)
            data[i, y, x] += amp * err[i, y, x]
            crs.append([i, y, x, amp])
    nan = np.repeat(bad2d[None], nints, axis=0)
    for arr in (data, err, var_p, var_r, var_f):
        arr[nan] = np.nan
    arrays = {
        "data": data.astype(np.float32),
        "err": err.astype(np.float32),
        "dq": dq,
        "var_poisson": var_p.astype(np.float32),
        "var_rnoise": var_r.astype(np.float32),
        "var_flat": var_f.astype(np.float32),
    }
    record = {
        "pedestal": [float(p) for p in pedestal],
        "noise_sigma_sky": math.sqrt(float(np.mean(pedestal)) / gain + read_noise**2),
        "extra_hot": [list(p) for p in extra_hot],
        "nan_pixels": int(bad2d.sum()),
        "jumps": jumps,
        "cosmic_rays": crs,
        "defects": detector["truth"],
    }
    return arrays, record


def _build_model(arrays, **meta_kw):
    """A CubeModel validated once against its schema; any invalid value raises.

    Validation on each assignment costs ~3 ms per attribute, so the metadata are set without it
    and the whole model is validated strictly at the end.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=ValidationWarning)
        model = datamodels.CubeModel(**arrays, validate_on_assignment=False, strict_validation=True)
        if meta_kw["instrument"] == "NIRCAM":
            model.area = np.ones(arrays["data"].shape[1:], dtype=np.float32)
        _set_meta(model, **meta_kw)
        model.validate()
    return model


def _as_list(value):
    return None if value is None else [float(v) for v in value]


def _truth_exposure(exp, record, *, nints, tint, flux, contrast, setup):
    defects = dict(record["defects"])
    defects["hot"] = defects["hot"] + record["extra_hot"]
    defects["hot_exposure_only"] = record["extra_hot"]
    return {
        "filename": exp["filename"],
        "exptype": exp["exptype"],
        "kind": exp["kind"],
        "targprop": exp["targprop"],
        "is_psf": exp["is_psf"],
        "nints": nints,
        "integration_time_s": tint,
        "roll_ref": exp["roll_ref"],
        "pa_aper": exp["pa_aper"],
        "dither_position": exp["patt_num"],
        "xoffset_arcsec": exp["offset_xy"][0],
        "yoffset_arcsec": exp["offset_xy"][1],
        "ta_error_yx_arcsec": _as_list(exp["ta_yx"]),
        "star_offset_yx_arcsec": _as_list(exp["star_offset_yx_arcsec"]),
        "star_offset_yx_px": _as_list(exp["star_offset_yx_px"]),
        "star_center_yx": _as_list(exp["star_center_yx"]),
        "flux_scale": flux,
        "companion_yx": _as_list(exp["companion_yx"]),
        "companion_flux_scale": flux * contrast if exp["companion_yx"] is not None else 0.0,
        "pedestal": record["pedestal"],
        "noise_sigma_sky": record["noise_sigma_sky"],
        "dq_defects": defects,
        "nan_pixels_per_integration": record["nan_pixels"],
        "jump_det": record["jumps"],
        "cosmic_rays": record["cosmic_rays"],
    }


def _truth(*, seed, inst, setup, spec, pixel_scale, mask_yx, crpix, v3yangle, backend,
           psf_nlambda, psf_oversample, companion, flux_sci, reference_flux_ratio, peak_snr,
           defects, exposures, options=None):  # fmt: skip
    if backend == "builtin":
        fidelity = builtin.FIDELITY_NOTE
    else:
        opd = "None" if options.opd is None else repr(options.opd.record()["file"])
        fidelity = (f"stpsf with pupilopd={opd}, include_si_wfe={options.si_wfe}, "
                    f"pupil npix {options.pupil_npix}, add_distortion=False, no jitter")
    return {
        "generator": "jwst_klipprep.simulate.simulate_dataset",
        "seed": int(seed),
        "instrument": inst,
        "filter": setup["filter"],
        "coronagraph": setup["coronmsk"],
        "coronagraph_model": spec.name,
        "pupil": setup["pupil"],
        "subarray": setup["subarray"],
        "aperture": setup["aperture"],
        "detector": setup["detector"],
        "pixel_scale_arcsec": pixel_scale,
        "shape": list(setup["shape"]),
        "mask_center_yx": list(mask_yx),
        "crpix": list(crpix),
        "v3i_yang_deg": v3yangle,
        "vparity": -1,
        "target_radec_deg": list(_TARGET_RADEC),
        "conventions": CONVENTIONS,
        "psf_backend": backend,
        "psf": {
            "nlambda": int(psf_nlambda),
            "oversample": int(psf_oversample),
            "fidelity": fidelity,
            "opd": None if options is None or options.opd is None else options.opd.record(),
            "si_wfe": None if options is None else bool(options.si_wfe),
            "pupil_npix": None if options is None else int(options.pupil_npix),
        },  # fmt: skip
        "companion": {
            "separation_arcsec": companion[0],
            "pa_deg": companion[1],
            "contrast": companion[2],
        },
        "star": {
            "flux_scale_science": flux_sci,
            "reference_flux_ratio": float(reference_flux_ratio),
            "peak_snr_target": float(peak_snr),
        },
        "noise_model": {
            "units": "MJy/sr",
            "gain_e_per_unit_per_integration": setup["gain"],
            "read_noise": setup["read_noise"],
            "flat_error_rms": setup["flat_error"],
            "var_poisson": "max(model, 0) / gain (noiseless model)",
            "var_rnoise": "read_noise**2",
            "var_flat": "(flat_error_rms * model)**2; the flat error is a fixed realised pattern",
        },
        "background_model": {
            "description": "pedestal[i] * (1 + glowstick) * flat; no starlight in BG exposures",
            "glowstick_amplitude": setup["glowstick"],
            "glowstick_width_px": 2.0,
            "glowstick_rotation_deg": spec.rotation_deg,
        },
        "detector_defects": defects,
        "dq_flag_values": {
            "hot": int(_DNU | _HOT),
            "dead": int(_DNU | _DEAD),
            "cluster_2x2": int(_DNU | _HOT),
            "cluster_3x3": int(_DNU | _DEAD),
            "bad_column": int(_DNU | _OTHER_BAD),
            "non_science": int(_DNU | _NON_SCIENCE),
            "reference_pixel": int(_DNU | _REFPIX),
            "warm": int(_WARM),
            "jump_det": int(_JUMP),
        },
        "exposures": exposures,
    }
