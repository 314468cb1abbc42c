"""The klipprep pipeline end to end on a small synthetic dataset."""

import warnings

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage, optimize
from stdatamodels.jwst import datamodels

from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline
from jwst_klipprep.simulate import simulate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("sim"), nints=3, n_reference=5, seed=2)


def _offset(a, b, center, r=20):
    """Shift (dy, dx) that moves the content of ``b`` onto ``a`` near ``center``.

    Independent of the package: scipy cubic-spline shifts and a least-squares fit of
    (dy, dx, flux scale, offset) on a box around the star.
    """
    cy, cx = (int(round(v)) for v in center)
    box = (slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
    a, b = np.nan_to_num(a)[box], np.nan_to_num(b)

    def resid(p):
        return (p[2] * ndimage.shift(b, p[:2], order=3, mode="nearest")[box] + p[3] - a).ravel()

    return optimize.least_squares(resid, [0, 0, 1, 0], x_scale=[0.1, 0.1, 0.1, 1]).x[:2]


def _median_frame(model):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns at the edge
        return np.nanmedian(model.data, axis=0)


@pytest.mark.slow
def test_pipeline_on_asn(dataset, tmp_path):
    out = tmp_path / "out"
    result = KlipPrepPipeline.call(str(dataset.asn_path), save_results=True,
                                   output_dir=str(out),
                                   steps={"pad_frames": {"skip": False, "npix": [10]}})
    # one product per science and reference exposure, no background, no intermediate files
    assert len(result) == 7
    written = sorted(p.name for p in out.glob("*.fits"))
    assert len(written) == 7 and all(n.endswith("_klipprep.fits") for n in written)
    table = Table.read(next(out.glob("*_klipprep_summary.ecsv")))
    assert list(table["role"]) == ["SCI", "SCI"] + ["REF"] * 5
    assert next(out.glob("*_klipprep.png")).stat().st_size > 10_000
    truth = {e["filename"]: e for e in dataset.truth["exposures"]}
    ref_star = None
    for model in result:
        statuses = model.meta.cal_step.instance
        for alias in ("subtract_background", "subtract_median", "fix_bad_pixels", "replace_nans",
                      "update_nircam_centers", "align_frames", "pad_frames"):
            assert statuses[alias] == "COMPLETE", alias
        assert model.data.shape == (3, 340, 340)
        assert model.err.shape == model.dq.shape == model.var_rnoise.shape == model.data.shape
        # one resampling: the shift applied equals the recorded align shift
        rec = model.meta.instance["klipprep"]
        assert "pending_shift_yx" not in rec
        e = truth[model.meta.filename.replace("_klipprep", "_calints")]
        if ref_star is None:
            ref_star = np.array(e["star_center_yx"])
        true_rel = np.array(e["star_center_yx"]) - ref_star
        measured = np.median(rec["align_frames"]["shift_yx"], axis=0)
        assert np.all(np.abs(measured - true_rel) < 0.15)  # PSF-shape bias of image matching
    # the pixels line up: an independent fit finds the true relative offsets between the inputs
    # (0.1-0.7 px here), and none left between the products
    first_in = first_out = None
    moved = 0.0
    for model in result:
        name = model.meta.filename.replace("_klipprep", "_calints")
        with datamodels.open(dataset.asn_path.parent / name) as src:
            frame_in = _median_frame(src)
        frame_out = _median_frame(model)
        star_in = np.array(truth[name]["star_center_yx"])
        if first_in is None:
            first_in, first_out, first_star = frame_in, frame_out, star_in
            continue
        fit_in = _offset(first_in, frame_in, first_star)
        np.testing.assert_allclose(fit_in, first_star - star_in, atol=0.1)
        moved = max(moved, np.abs(fit_in).max())
        centre = ((frame_out.shape[0] - 1) / 2, (frame_out.shape[1] - 1) / 2)
        assert np.abs(_offset(first_out, frame_out, centre)).max() < 0.03, name
    assert moved > 0.3  # the inputs were misaligned
    with datamodels.open(out / written[0]) as model:
        assert model.meta.cal_step.instance["align_frames"] == "COMPLETE"
        assert "pad_frames" in model.meta.instance["klipprep"]
        assert any("klipprep: 7 product(s)" in line for line in model.cal_logs.instance["klipprep"])


def test_pipeline_skips_steps_and_records_them(dataset):
    result = KlipPrepPipeline.call(
        str(dataset.asn_path), save_summary=False, save_diagnostics=False,
        steps={alias: {"skip": True} for alias in (
            "subtract_background", "subtract_median", "fix_bad_pixels", "align_frames")},
    )
    model = result[0]
    assert model.meta.cal_step.instance["fix_bad_pixels"] == "SKIPPED"
    assert model.meta.cal_step.instance["replace_nans"] == "COMPLETE"
    assert model.meta.cal_step.instance["pad_frames"] == "SKIPPED"
    assert model.data.shape == (3, 320, 320)  # no padding by default


def test_parameter_file_roundtrip(dataset, tmp_path):
    from stpipe._cmdline import step_from_cmdline

    pars = tmp_path / "pars.asdf"
    step_from_cmdline(["klipprep", str(dataset.asn_path), "--steps.pad_frames.npix=7",
                       "--steps.pad_frames.skip=False",
                       "--steps.fix_bad_pixels.skip=True", "--save_summary=False",
                       "--save_diagnostics=False", f"--output_dir={tmp_path}",
                       "--save-parameters", str(pars)])
    assert pars.exists()
    result = KlipPrepPipeline.call(str(dataset.asn_path), config_file=str(pars))
    assert result[0].data.shape == (3, 334, 334)
    assert result[0].meta.cal_step.instance["fix_bad_pixels"] == "SKIPPED"


@pytest.mark.slow
def test_pipeline_on_miri(tmp_path):
    data = simulate_dataset(tmp_path / "miri", instrument="MIRI", nints=2, n_reference=1,
                            seed=4)
    result = KlipPrepPipeline.call(str(data.asn_path), save_summary=False,
                                   save_diagnostics=False,
                                   steps={"pad_frames": {"skip": False, "npix": [4]}})
    assert len(result) == 3  # two rolls and one reference; the backgrounds were consumed
    truth = {e["filename"]: e for e in data.truth["exposures"]}
    for model in result:
        status = model.meta.cal_step.instance
        assert status["update_nircam_centers"] == "SKIPPED"
        assert status["recenter_frames"] == "SKIPPED"
        assert status["subtract_background"] == status["align_frames"] == "COMPLETE"
        rec = model.meta.instance["klipprep"]["subtract_background"]
        kind = truth[model.meta.filename]["kind"]
        assert rec["background_kind"] == f"{kind}_BG"
        assert model.data.shape == (2, 224 + 8, 288 + 8)


def test_step_order_is_the_documented_one():
    assert list(KlipPrepPipeline.step_defs) == [
        "crop_frames",
        "subtract_background", "subtract_median", "fix_bad_pixels", "replace_nans",
        "update_nircam_centers", "recenter_frames", "align_frames", "pad_frames",
        "coadd_frames", "blur_frames"]
