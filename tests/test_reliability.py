"""Issue 11's bad and weak cases, each with what it does now.

Expected errors go through ``strun`` (its ``main``, in-process, for speed; a few real
subprocesses check the whole command) and must give a short message naming the file / member /
parameter, exit status 1, no traceback, and write nothing.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from conftest import make_model
from helpers import write_asn
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.base import InputError, ParameterError
from jwst_klipprep.steps.align_frames_step import AlignFramesStep
from jwst_klipprep.steps.pad_frames_step import PadFramesStep
from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep
from jwst_klipprep.steps.subtract_median_step import SubtractMedianStep

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


def strun(args, capsys, monkeypatch):
    """Run ``strun args`` in-process; return (exit status, stdout + stderr)."""
    from stpipe._cli.strun import main

    monkeypatch.setattr(sys, "argv", ["strun", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out + out.err


def offline_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRDS_", "STPIPE_")) and k.lower() not in (
               "http_proxy", "https_proxy")}
    # any HTTP request fails at once instead of reaching the network
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               PYTHONPATH=os.pathsep.join(sys.path))
    return env


def strun_subprocess(args, cwd):
    exe = os.path.join(os.path.dirname(sys.executable), "strun")
    proc = subprocess.run([exe, *map(str, args)], cwd=cwd, env=offline_env(),
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def assert_short_error(rc, out, *fragments):
    assert rc == 1, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())
    for fragment in fragments:
        assert fragment in flat, out


def products(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(
        ("_calints.fits", ".json")) and p.is_file())


def save(model, folder, name):
    model.meta.filename = name
    model.save(folder / name)
    return folder / name


# --------------------------------------------------------------------------------------------
# Associations (bad 4; weak: member listed twice)


def _asn_variant(tmp_path, change):
    path = write_asn(tmp_path, kinds=("science", "psf"))
    asn = json.loads(path.read_text())
    change(asn)
    path.write_text(json.dumps(asn))
    return path


ASN_CASES = {
    "empty member list": (lambda a: a["products"][0].update(members=[]),
                          ["has no members", "non-empty"]),
    "products as an object": (lambda a: a.update(products={"name": "x", "members": []}),
                              ["'products' must be a list of objects", "got dict"]),
    "members as strings": (
        lambda a: a["products"][0].update(members=[m["expname"]
                                                   for m in a["products"][0]["members"]]),
        ["member 0 is a str", "each member must be an object"]),
    "member listed twice": (
        lambda a: a["products"][0]["members"].append(dict(a["products"][0]["members"][0])),
        ["jw01234001001_03106_00001_nrcalong_calints.fits' is listed twice",
         "remove the duplicate"]),
    "unknown exptype": (lambda a: a["products"][0]["members"][1].update(exptype="flat"),
                        ["has exptype 'flat'", "science, psf, background"]),
}


@pytest.mark.parametrize("case", list(ASN_CASES))
def test_bad_association_short_error(case, tmp_path, capsys, monkeypatch):
    change, fragments = ASN_CASES[case]
    asn = _asn_variant(tmp_path, change)
    out_dir = tmp_path / "out"
    rc, out = strun(["align_frames", asn, f"--output_dir={out_dir}"], capsys, monkeypatch)
    assert_short_error(rc, out, f"{asn.name}:", *fragments)
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_real_strun_prints_no_traceback(tmp_path):
    """The whole command, offline: an expected error is one message and exit status 1."""
    asn = _asn_variant(tmp_path, ASN_CASES["member listed twice"][0])
    rc, out = strun_subprocess(["pad_frames", asn.name, "--output_dir=out"], tmp_path)
    assert_short_error(rc, out, "ERROR RUNNING STEP 'PadFramesStep'", "is listed twice")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------------------------
# Parameters (weak: sigma=nan, npix=100000, --steps.x.y caught after earlier steps ran)


def test_sigma_nan_refused(tmp_path, capsys, monkeypatch):
    path = save(make_model(), tmp_path, "x_calints.fits")
    rc, out = strun(["fix_bad_pixels", path, "--sigma=nan", f"--output_dir={tmp_path}"],
                    capsys, monkeypatch)
    assert_short_error(rc, out, "fix_bad_pixels: parameter sigma=nan must be a finite number",
                       "[2.0, 100.0]")
    assert products(tmp_path) == []


def test_sigma_nan_in_python():
    with pytest.raises(ParameterError, match="sigma=nan"):
        from jwst_klipprep.steps.fix_bad_pixels_step import FixBadPixelsStep

        FixBadPixelsStep.call(make_model(), sigma=float("nan"))


def test_huge_pad_refused_before_opening(tmp_path, capsys, monkeypatch):
    path = save(make_model(), tmp_path, "x_calints.fits")
    rc, out = strun(["pad_frames", path, "--npix=100000", f"--output_dir={tmp_path}"],
                    capsys, monkeypatch)
    assert_short_error(rc, out, "pad_frames: invalid npix=['100000']",
                       "npix must be <= 4096 pixels per side")
    assert products(tmp_path) == []


def test_pad_too_big_for_memory_refused(monkeypatch):
    from jwst_klipprep.steps import pad_frames_step

    # a 3 x 24 x 28 cube padded by 100 px: 3 * 224 * 228 * 4 bytes * 6 arrays = 3.7 MB
    monkeypatch.setattr(pad_frames_step, "MAX_OUTPUT_BYTES", 3_000_000)
    with pytest.raises(InputError, match=r"would make a 0\.0 GiB product .*use a smaller --npix"):
        PadFramesStep.call(make_model(), npix=100)
    monkeypatch.setattr(pad_frames_step, "MAX_OUTPUT_BYTES", 4_000_000)
    assert PadFramesStep.call(make_model(), npix=100).data.shape == (3, 224, 228)


@pytest.mark.parametrize("option, fragment", [
    (["--steps.pad_frames.skip=False", "--steps.pad_frames.npix=-3"],
     "klipprep --steps.pad_frames: pad_frames: invalid npix"),
    ("--steps.fix_bad_pixels.footprint=4", "footprint must be odd, got 4"),
    ("--steps.fix_bad_pixels.sigma=nan", "sigma=nan must be a finite number"),
    ("--steps.fix_bad_pixels.sigma=abc", "'steps/fix_bad_pixels/sigma': the value \"abc\""),
])
def test_pipeline_substep_parameters_checked_before_any_step(option, fragment, tmp_path,
                                                             capsys, monkeypatch):
    asn = write_asn(tmp_path, kinds=("science", "psf"))
    out_dir = tmp_path / "out"
    options = [option] if isinstance(option, str) else option
    rc, out = strun(["klipprep", asn, *options, f"--output_dir={out_dir}"], capsys, monkeypatch)
    assert_short_error(rc, out, fragment)
    assert "Step subtract_background running" not in out
    assert not out_dir.exists() or not any(out_dir.iterdir())


# --------------------------------------------------------------------------------------------
# Data (bad 5: SCI x 1e30; weak: ERR, truncated file, reference without valid pixel)


def test_absurd_values_reported(tmp_path, capsys, monkeypatch):
    model = make_model(nints=2, ny=40, nx=44)
    model.data = model.data * 1e30
    path = save(model, tmp_path, "huge_calints.fits")
    for alias in ("align_frames", "recenter_frames", "subtract_median"):
        rc, out = strun([alias, path, f"--output_dir={tmp_path}"], capsys, monkeypatch)
        assert_short_error(rc, out, "huge_calints.fits: SCI holds absurd values",
                           "check its units and calibration")
        assert "Eigenvalues" not in out and "shift_yx must be finite" not in out
    assert products(tmp_path) == []


def test_zero_err_refused(tmp_path, capsys, monkeypatch):
    model = make_model()
    model.err = np.zeros_like(model.err)
    path = save(model, tmp_path, "zero_err_calints.fits")
    rc, out = strun(["fix_bad_pixels", path, f"--output_dir={tmp_path}"], capsys, monkeypatch)
    assert_short_error(rc, out, "zero_err_calints.fits: ERR is zero, negative or NaN in every "
                       "usable pixel")
    assert products(tmp_path) == []


def test_some_bad_err_warned(caplog):
    model = make_model()
    model.err[1, 10:12, 10:12] = -1.0
    ReplaceNansStep.call(model)
    # the 4 negative values and make_model's NaN ERR at (0, 7, 8)
    assert "ERR is zero, negative or NaN in 5 usable pixel(s)" in caplog.text


def test_truncated_file(tmp_path, capsys, monkeypatch):
    path = save(make_model(nints=3, ny=80, nx=90), tmp_path, "cut_calints.fits")
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 3)
    rc, out = strun(["replace_nans", path, f"--output_dir={tmp_path}"], capsys, monkeypatch)
    assert_short_error(rc, out, "cut_calints.fits: cannot be opened as a JWST datamodel "
                       "(truncated or corrupt file?)")
    assert products(tmp_path) == []


def test_reference_without_valid_pixel_names_the_file():
    sci = make_model(nints=2, ny=60, nx=64, filename="sci_calints.fits")
    ref = make_model(nints=2, ny=60, nx=64, seed=1, filename="ref_calints.fits")
    sci.meta.asn.exptype, ref.meta.asn.exptype = "science", "psf"
    sci.dq[:, 15:45, 15:49] |= DO_NOT_USE  # the whole fit region flagged, the border usable
    with pytest.raises(InputError, match=r"sci_calints.fits: the alignment reference has no "
                       r"valid pixel inside the fit region \(fit_radius=10.0 px"):
        AlignFramesStep.call([sci, ref], fit_radius=10.0, use_dither_offsets=False)


@pytest.mark.parametrize("change, fragment", [
    (lambda m: setattr(m.meta.instrument, "filter", "F356W"),
     "FILTER='F356W' (reference 'F444W')"),
    (lambda m: setattr(m.meta.instrument, "name", "MIRI"), "INSTRUMENT='MIRI' (reference"),
    (lambda m: setattr(m.meta.instrument, "coronagraph", "MASKA430R"),
     "CORONAGRAPH='MASKA430R' (reference 'MASKA335R')"),
])
def test_align_refuses_another_setup(change, fragment):
    sci = make_model(filename="sci_calints.fits")
    ref = make_model(seed=1, filename="ref_calints.fits")
    sci.meta.asn.exptype, ref.meta.asn.exptype = "science", "psf"
    change(ref)
    with pytest.raises(InputError, match=re.escape("ref_calints.fits: " + fragment)):
        AlignFramesStep.call([sci, ref], use_dither_offsets=False)


# --------------------------------------------------------------------------------------------
# Numerics that degrade (bad 3: NaN header; weak: dead integration aborts subtract_median)


def _with_dead_integration(nints=4, dead=1, **kwargs):
    model = make_model(nints=nints, ny=60, nx=64, **kwargs)
    model.data[dead] = np.nan
    return model


@pytest.mark.parametrize("method", ["masked", "border", "sigma_clip"])
def test_dead_integration_skipped_by_subtract_median(method, caplog):
    model = _with_dead_integration()
    result = SubtractMedianStep.call(model, method=method, border_width=8)
    rec = result.meta.instance["klipprep"]["subtract_median"]
    assert rec["dead_integrations"] == [1]
    assert np.all(result.dq[1] & DO_NOT_USE)
    assert np.all(np.isnan(result.data[1]))
    # the live integrations lost their ~1.0 pedestal (make_model's star sits on 1.0)
    live = np.delete(np.asarray(rec["level"]), 1)
    np.testing.assert_allclose(live, 1.0, atol=0.05)
    assert "integration(s) [1] dead" in caplog.text


def test_dead_integration_align_frames_header_finite(tmp_path):
    sci = make_model(nints=3, ny=60, nx=64, filename="sci_calints.fits")
    ref = _with_dead_integration(nints=3, dead=2, seed=1, filename="ref_calints.fits")
    sci.meta.asn.exptype, ref.meta.asn.exptype = "science", "psf"
    result = AlignFramesStep.call([sci, ref], use_dither_offsets=False)
    aligned = result[1]
    rec = aligned.meta.instance["klipprep"]["align_frames"]
    assert rec["failed"] == [False, False, True]
    path = tmp_path / "ref_aligned.fits"
    aligned.save(path)  # failed before: "Floating point nan values are not allowed"
    with fits.open(path) as hdul:
        header = hdul["SCI"].header
        assert np.isfinite(header["ALGERRX"]) and np.isfinite(header["ALGERRY"])
        assert header["ALGERRX"] == pytest.approx(np.median(
            np.asarray(rec["shift_err_yx"])[:2, 1]))


def test_dead_first_integration_not_used_as_reference():
    sci = _with_dead_integration(nints=3, dead=0, filename="sci_calints.fits")
    sci.meta.asn.exptype = "science"
    result = AlignFramesStep.call(sci, use_dither_offsets=False)
    rec = result.meta.instance["klipprep"]["align_frames"]
    # integration 1 is the reference: it fits itself with zero shift
    assert np.allclose(np.asarray(rec["shift_yx"])[1], 0.0, atol=1e-3)
    assert rec["failed"] == [True, False, False]


def test_every_integration_dead_refused():
    model = make_model()
    model.data[:] = np.nan
    with pytest.raises(InputError, match="every integration is dead"):
        ReplaceNansStep.call(model)


def test_non_psf_file_fails_clearly(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (101, 101))
    image[70:80, 10:20] += 50  # a blob far from the centre: not an occulted PSF
    hdu = fits.PrimaryHDU(image)
    hdu.header["PIXELSCL"] = 0.063
    hdu.writeto(tmp_path / "notpsf.fits")
    path = save(make_model(nints=2, ny=80, nx=90), tmp_path, "star_calints.fits")
    rc, out = strun(["recenter_frames", path, "--psf_model=file",
                     f"--psf_file={tmp_path / 'notpsf.fits'}", f"--output_dir={tmp_path}"],
                    capsys, monkeypatch)
    assert_short_error(rc, out, "star_calints.fits: recenter_frames", "notpsf.fits is an "
                       "occulted PSF of this mask and filter")
    assert products(tmp_path) == ["notpsf.fits"]


# --------------------------------------------------------------------------------------------
# Reruns on own products (weak: the pipeline pads and re-centres again without a warning)


def test_step_on_its_own_product_warns(caplog):
    padded = PadFramesStep.call(make_model(), npix=2)
    padded.meta.filename = "x_padded.fits"
    again = PadFramesStep.call(padded, npix=2)
    assert again.data.shape == (3, 32, 36)
    assert "x_padded.fits: was already processed by pad_frames (cal_step COMPLETE)" in (
        caplog.text)


def test_pipeline_on_its_own_products_warns(caplog):
    from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline

    model = make_model()
    model.meta.cal_step.instance["pad_frames"] = "COMPLETE"
    model.meta.cal_step.instance["recenter_frames"] = "COMPLETE"
    step = KlipPrepPipeline()
    step.open_input(model)
    assert "was already processed by recenter_frames, pad_frames" in caplog.text


# --------------------------------------------------------------------------------------------
# Offline: importing pysiaf makes no HTTP request


_SPY = textwrap.dedent("""
    import requests
    calls = []
    def spy(self, method, url, *args, **kwargs):
        calls.append(url)
        raise requests.ConnectionError("blocked by the test")
    requests.Session.request = spy
    {setup}
    import pysiaf
    print("CALLS", len(calls))
""")


@pytest.mark.parametrize("setup, expected", [
    ("import jwst_klipprep.steps.update_nircam_centers_step", 0),
    ("pass", 1),  # control: plain pysiaf asks GitHub at import (the test can fail)
])
def test_pysiaf_import_is_offline(setup, expected):
    proc = subprocess.run([sys.executable, "-c", _SPY.format(setup=setup)], env=offline_env(),
                          capture_output=True, text=True, timeout=120)
    assert f"CALLS {expected}" in proc.stdout, proc.stdout + proc.stderr


def test_input_error_is_a_value_error_and_an_stpipe_exit():
    from stpipe.exceptions import StpipeExitException

    exc = ParameterError("pad_frames: bad")
    assert isinstance(exc, ValueError) and isinstance(exc, StpipeExitException)
    assert exc.exit_status == 1 and str(exc) == "pad_frames: bad"


def test_unknown_dq_flag_is_a_parameter_error(tmp_path, capsys, monkeypatch):
    path = save(make_model(), tmp_path, "x_calints.fits")
    rc, out = strun(["replace_nans", path, "--dq_flags=DO_NOT_USE,BOGUS",
                     f"--output_dir={tmp_path}"], capsys, monkeypatch)
    assert_short_error(rc, out, "replace_nans: parameter dq_flags='DO_NOT_USE,BOGUS'",
                       "unknown DQ flag 'BOGUS'")
    assert products(tmp_path) == []


def test_comma_separated_flags_work_under_strun(tmp_path, capsys, monkeypatch):
    """strun turned --dq_flags=A,B into a list, which the string parameter refused."""
    from stpipe._cmdline import step_from_cmdline

    path = save(make_model(), tmp_path, "x_calints.fits")
    step = step_from_cmdline(["replace_nans", str(path), "--dq_flags=DO_NOT_USE,OUTLIER",
                              f"--output_dir={tmp_path}"])
    assert step.dq_flags == "DO_NOT_USE,OUTLIER"
    with datamodels.open(tmp_path / "x_nanrep.fits") as result:
        outlier = dqflags.pixel["OUTLIER"]
        assert result.dq[0, 2, 3] & (DO_NOT_USE | outlier) == DO_NOT_USE | outlier


def test_err_of_another_shape_refused():
    model = make_model()
    model.err = np.ones((3, 10, 10), np.float32)
    with pytest.raises(InputError, match=r"ERR has shape \(3, 10, 10\) but SCI has \(3, 24, 28\)"):
        ReplaceNansStep.call(model)


def test_dead_integration_recenter_frames_completes(caplog):
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

    model = _with_dead_integration(nints=3, dead=1)
    model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = 32.5, 30.5
    result = RecenterFramesStep.call(model, psf_model="builtin", fit_radius=8.0, iterations=0)
    assert result.meta.cal_step.instance["recenter_frames"] == "COMPLETE"
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert np.all(np.isfinite(rec["star_offset_yx"]))
    with fits.open(_saved(result)) as hdul:
        assert np.isfinite(hdul["SCI"].header["STAROFFX"])
    assert "integration(s) [1] are dead" in caplog.text


def _saved(model):
    import tempfile

    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "x_recentered.fits")
    model.save(path)
    return path


def test_fix_bad_pixels_zero_err_is_not_evidence():
    """ERR = 0 on some pixels made them 'outliers' (and the whole frame when ERR was all 0)."""
    from jwst_klipprep.steps.fix_bad_pixels_step import FixBadPixelsStep

    rng = np.random.default_rng(3)
    model = make_model(nints=4, ny=40, nx=40, seed=3)
    yy, xx = np.mgrid[:40, :40]
    model.data = (1.0 + 0.01 * xx + rng.normal(0, 0.1, (4, 40, 40))).astype(np.float32)
    model.err = np.full((4, 40, 40), 0.1, np.float32)
    model.dq[:] = 0
    model.err[:, 5:12, 5:12] = 0.0
    model.err[:, 20:24, 30:33] = -1.0
    result = FixBadPixelsStep.call(model, find=["temporal", "spatial"])
    found = result.meta.instance["klipprep"]["fix_bad_pixels"]["found"]
    assert found["temporal"] + found["spatial"] <= 1  # noise only: 6400 pixels at 5 sigma


def test_empty_list_refused():
    with pytest.raises(InputError, match="input: no exposure to process"):
        AlignFramesStep.call([])


def test_pipeline_completes_with_a_dead_integration(tmp_path):
    """One all-NaN integration used to abort subtract_median and the pipeline."""
    from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline

    asn = write_asn(tmp_path, kinds=("science", "psf"), nints=3, ny=64, nx=64)
    path = tmp_path / "jw01234001001_03106_00001_nrcalong_calints.fits"
    with datamodels.open(path) as model:
        model.data[1] = np.nan
        model.save(path)
    result = KlipPrepPipeline.call(str(asn), steps={
        "recenter_frames": {"psf_model": "builtin", "fit_radius": 10.0}})
    sci = result[0]
    assert all(v in ("COMPLETE", "SKIPPED") for v in sci.meta.cal_step.instance.values())
    assert sci.meta.instance["klipprep"]["subtract_median"]["dead_integrations"] == [1]
    assert np.all(sci.dq[1] & DO_NOT_USE)
    usable = np.isfinite(sci.data[[0, 2]]) & ((sci.dq[[0, 2]] & DO_NOT_USE) == 0)
    assert usable.mean() > 0.5  # the live integrations were processed


@pytest.mark.parametrize("args, fragment", [
    (["subtract_median", "--psfmask=nofile.fits"], "subtract_median: parameter psfmask="),
    (["recenter_frames", "--psf_model=file", "--psf_file=nofile.fits"],
     "recenter_frames: parameter psf_file="),
    (["fix_bad_pixels", "--find=custom", "--custom_mask=nofile.fits"],
     "fix_bad_pixels: parameter custom_mask="),
])
def test_missing_parameter_file_refused_up_front(args, fragment, tmp_path, capsys, monkeypatch):
    path = save(make_model(), tmp_path, "x_calints.fits")
    rc, out = strun([args[0], path, *args[1:], f"--output_dir={tmp_path}"], capsys, monkeypatch)
    assert_short_error(rc, out, fragment + "'nofile.fits': file not found")
    assert products(tmp_path) == []


def test_pipeline_without_science_refused_before_any_step(tmp_path, capsys, monkeypatch):
    asn = write_asn(tmp_path, kinds=("psf", "psf"))
    out_dir = tmp_path / "out"
    rc, out = strun(["klipprep", asn, f"--output_dir={out_dir}"], capsys, monkeypatch)
    assert_short_error(rc, out, "test_asn.json: no science exposure",
                       "--steps.align_frames.skip=True")
    assert "Step subtract_background running" not in out
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_truncated_member_of_an_association_is_named(tmp_path, capsys, monkeypatch):
    """A broken member inside an ASN: the error names that member, not only the ASN."""
    good = save(make_model(nints=2, ny=40, nx=44), tmp_path, "good_calints.fits")
    bad = save(make_model(nints=2, ny=40, nx=44, seed=1), tmp_path, "bad_calints.fits")
    with open(bad, "r+b") as handle:
        handle.truncate(bad.stat().st_size // 3)
    asn = tmp_path / "two_asn.json"
    asn.write_text(json.dumps({
        "asn_type": "coron3", "asn_pool": "test", "products": [{"name": "two", "members": [
            {"expname": good.name, "exptype": "science"},
            {"expname": bad.name, "exptype": "psf"}]}]}))
    rc, out = strun(["replace_nans", str(asn), f"--output_dir={tmp_path}"], capsys, monkeypatch)
    assert_short_error(rc, out, "bad_calints.fits (member of two_asn.json): cannot be opened as "
                       "a JWST datamodel (truncated or corrupt file?)")
