"""The klipprep pipeline end to end on a small synthetic dataset."""

import numpy as np
import pytest
from astropy.table import Table
from stdatamodels.jwst import datamodels

from jwst_klipprep._arrays import get_center_yx
from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline
from jwst_klipprep.simulate import simulate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("sim"), nints=3, n_reference=5, seed=2)


@pytest.mark.slow
def test_pipeline_on_asn(dataset, tmp_path):
    out = tmp_path / "out"
    result = KlipPrepPipeline.call(str(dataset.asn_path), save_results=True,
                                   output_dir=str(out), steps={"pad_frames": {"npix": [10]}})
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
    # every star now sits at the same place (to the alignment accuracy)
    stars = np.array([get_center_yx(m, "star") for m in result])
    assert np.ptp(stars, axis=0).max() < 1e-6
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
    assert model.data.shape == (3, 480, 480)  # default pad 80


def test_parameter_file_roundtrip(dataset, tmp_path):
    from stpipe._cmdline import step_from_cmdline

    pars = tmp_path / "pars.asdf"
    step_from_cmdline(["klipprep", str(dataset.asn_path), "--steps.pad_frames.npix=7",
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
                                   save_diagnostics=False, steps={"pad_frames": {"npix": [4]}})
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
