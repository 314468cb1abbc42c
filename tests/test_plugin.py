"""Plugin plumbing: entry point, offline CRDS behaviour, strun, ASN input, bad input."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from helpers import assert_unchanged, snapshot, write_asn
from stdatamodels.jwst import datamodels

from jwst_klipprep import integration
from jwst_klipprep.base import InputError
from jwst_klipprep.steps.pad_frames_step import PadFramesStep
from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep

DEVELOPER_ALIASES = {
    "subtract_background", "subtract_median", "fix_bad_pixels", "replace_nans",
    "update_nircam_centers", "recenter_frames", "align_frames", "pad_frames", "klipprep",
    "crop_frames", "coadd_frames", "blur_frames",
}


def test_entry_point_matches_classes():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="stpipe.steps") if e.value.startswith("jwst_klipprep")]
    steps = ep.load()()
    assert steps == integration.get_steps()
    aliases = [alias for _, alias, _ in steps]
    assert len(set(aliases)) == len(aliases)
    assert set(aliases) <= DEVELOPER_ALIASES
    for class_path, alias, is_pipeline in steps:
        module, name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        assert cls.class_alias == alias
        assert cls.__name__ == name
        from jwst.stpipe import Pipeline

        assert issubclass(cls, Pipeline) == is_pipeline


def test_aliases_do_not_collide_with_jwst():
    from jwst.stpipe.integration import get_steps as jwst_steps

    jwst_aliases = {alias for _, alias, _ in jwst_steps()}
    assert not jwst_aliases & {alias for _, alias, _ in integration.get_steps()}


def test_asn_input_processes_every_member(tmp_path):
    asn = write_asn(tmp_path)
    result = PadFramesStep.call(str(asn), npix=2, save_results=True, output_dir=str(tmp_path))
    assert len(result) == 3
    assert {m.meta.asn.exptype for m in result} == {"science", "psf", "background"}
    for model in result:
        assert model.data.shape == (3, 28, 32)
        assert model.meta.cal_step.instance["pad_frames"] == "COMPLETE"
    written = sorted(p.name for p in tmp_path.glob("*_padded.fits"))
    assert written == [f"jw0123400{i}001_03106_00001_nrcalong_padded.fits" for i in (1, 2, 3)]


def test_list_of_models_not_modified(cube, image):
    snaps = [snapshot(cube), snapshot(image)]
    result = ReplaceNansStep.call([cube, image])
    assert len(result) == 2
    assert_unchanged(cube, snaps[0])
    assert_unchanged(image, snaps[1])


def test_plain_fits_without_asdf(cube, tmp_path):
    path = tmp_path / "plain_calints.fits"
    cube.save(path)
    with fits.open(path) as hdul:
        del hdul["ASDF"]
        hdul.writeto(path, overwrite=True)
    result = ReplaceNansStep.call(str(path))
    assert np.all(np.isfinite(result.data))
    assert result.meta.exposure.type == "NRC_CORON"


def _strun(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRDS", "STPIPE"))}
    strun = os.path.join(os.path.dirname(sys.executable), "strun")
    return subprocess.run([strun, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_strun_offline_shows_plugin_log(tmp_path):
    asn = write_asn(tmp_path, kinds=("science", "psf"))
    proc = _strun("pad_frames", asn.name, "--npix=1,2,3,4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "pad_frames: jw01234001001_03106_00001_nrcalong_calints.fits: padded" in log
    assert "CRDS" not in log.replace("Results used CRDS context", "")
    with datamodels.open(tmp_path / "jw01234001001_03106_00001_nrcalong_padded.fits") as model:
        assert model.data.shape == (3, 31, 31)
        assert any("pad_frames: " in line for line in model.cal_logs.instance["pad_frames"])


def test_strun_in_process_single_file(cube, tmp_path, monkeypatch):
    from stpipe._cmdline import step_from_cmdline

    cube.save(tmp_path / "jw9_calints.fits")
    monkeypatch.chdir(tmp_path)
    step_from_cmdline(["replace_nans", "jw9_calints.fits", "--fill_value=7"])
    with datamodels.open(tmp_path / "jw9_nanrep.fits") as model:
        assert model.data[0, 2, 3] == 7.0


# ---------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nothere_calints.fits: file not found"):
        ReplaceNansStep.call(str(tmp_path / "nothere_calints.fits"))


def test_asn_with_missing_member(tmp_path):
    asn = write_asn(tmp_path)
    (tmp_path / "jw01234002001_03106_00001_nrcalong_calints.fits").unlink()
    with pytest.raises(InputError, match=r"member 'jw01234002001.*' \(exptype 'psf'\) not found"):
        PadFramesStep.call(str(asn), save_results=True, output_dir=str(tmp_path))
    assert not list(tmp_path.glob("*_padded.fits"))


def test_asn_not_json(tmp_path):
    bad = tmp_path / "bad_asn.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad_asn.json: not a readable association"):
        PadFramesStep.call(str(bad))


def test_non_coronagraphic(cube):
    cube.meta.exposure.type = "NRC_IMAGE"
    with pytest.raises(InputError, match=r"nrcalong_calints.fits: EXP_TYPE='NRC_IMAGE' is not "
                                         r"coronagraphic"):
        ReplaceNansStep.call(cube)


def test_non_jwst(cube):
    cube.meta.telescope = "HST"
    with pytest.raises(InputError, match="TELESCOP='HST' is not a JWST file"):
        ReplaceNansStep.call(cube)


def test_ramp_model(tmp_path):
    ramp = datamodels.RampModel((2, 3, 10, 10))
    ramp.meta.filename = "jw_uncal.fits"
    ramp.meta.exposure.type = "NRC_CORON"
    with pytest.raises(InputError, match="jw_uncal.fits: is a RampModel"):
        ReplaceNansStep.call(ramp)
    ramp.save(tmp_path / "jw_uncal.fits")
    with pytest.raises(InputError, match="jw_uncal.fits: is a RampModel"):
        ReplaceNansStep.call(str(tmp_path / "jw_uncal.fits"))


def test_not_a_datamodel_file(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("hello")
    with pytest.raises(InputError, match="table.txt: cannot be opened as a JWST datamodel"):
        ReplaceNansStep.call(str(path))


def test_bad_err_shape(cube):
    cube.err = np.zeros((3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"ERR has shape \(3, 5, 5\) but SCI has \(3, 24, 28\)"):
        ReplaceNansStep.call(cube)


def test_asn_json_written_by_helper_is_valid(tmp_path):
    asn = json.loads(write_asn(tmp_path).read_text())
    assert asn["asn_pool"] and len(asn["products"][0]["members"]) == 3


def test_default_parameters_of_every_step_are_valid():
    """validate_parameters (run before any step works) accepts every step's defaults."""
    for class_path, _, _ in integration.get_steps():
        module, name = class_path.rsplit(".", 1)
        step = getattr(importlib.import_module(module), name)()
        step.validate_parameters()


def test_pipeline_validates_its_substeps():
    from jwst_klipprep.base import ParameterError
    from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline

    pipe = KlipPrepPipeline(steps={"fix_bad_pixels": {"neg_sigma": float("nan")}})
    with pytest.raises(ParameterError, match="klipprep --steps.fix_bad_pixels: fix_bad_pixels: "
                       "parameter neg_sigma=nan"):
        pipe.validate_parameters()
    # a skipped step is not checked
    pipe.fix_bad_pixels.skip = True
    pipe.validate_parameters()
