"""crop_frames, coadd_frames and blur_frames inside the klipprep pipeline (skipped by default)."""

import numpy as np
import pytest

from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.pipeline.klipprep_pipeline import STEP_ORDER, KlipPrepPipeline
from jwst_klipprep.simulate import simulate_dataset

OPTIONAL = ("crop_frames", "coadd_frames", "blur_frames")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("sim"), nints=3, n_reference=1, seed=4,
                            with_background=False)


def test_order_and_default_skip():
    order = list(STEP_ORDER)
    assert order[0] == "crop_frames"
    assert order.index("pad_frames") < order.index("coadd_frames") < order.index("blur_frames")
    pipeline = KlipPrepPipeline()
    assert all(getattr(pipeline, alias).skip for alias in (*OPTIONAL, "pad_frames"))


@pytest.mark.slow
def test_optional_steps_in_the_pipeline(dataset):
    kw = dict(save_summary=False, save_diagnostics=False)
    default = KlipPrepPipeline.call(str(dataset.asn_path), **kw,
                                    steps={"pad_frames": {"skip": False, "npix": [4]}})
    result = KlipPrepPipeline.call(
        str(dataset.asn_path), **kw,
        steps={"crop_frames": {"skip": False, "npix": [10]},
               "pad_frames": {"skip": False, "npix": [4]},
               "coadd_frames": {"skip": False, "nframes": 2},
               "blur_frames": {"skip": False, "fwhm": "1.5"}})
    for plain, model in zip(default, result, strict=True):
        for alias in OPTIONAL:
            assert alias not in plain.meta.instance["klipprep"]
            assert model.meta.cal_step.instance[alias] == "COMPLETE", alias
        ny, nx = plain.data.shape[-2:]
        assert model.data.shape == (2, ny - 20, nx - 20)  # 3 integrations -> blocks of 2 and 1
        assert model.meta.exposure.nints == 2
        # the star is still recorded where it is: the array centre after the crop
        assert get_center_yx(model, "star") == pytest.approx(((ny - 21) / 2, (nx - 21) / 2))
        assert model.meta.dither.x_offset == 0.0
        assert np.isfinite(model.data).all()  # fill_nans ran after every step
        assert model.meta.instance["klipprep"]["blur_frames"]["fwhm"] == 1.5
