"""A real consumer: jwst's own coronagraphic PSF subtraction (stack_refs, klip) on our products."""

import numpy as np
import pytest
from jwst.coron.klip_step import KlipStep
from jwst.coron.stack_refs_step import StackRefsStep
from jwst.datamodels import ModelContainer

from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline
from jwst_klipprep.simulate import simulate_dataset
from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("consumer"), nints=4, seed=1,
                            companion_contrast=3e-5, companion_separation_arcsec=1.0)


def _residuals(models, truth, prepared):
    """Companion S/N and inner residual rms of each science roll after jwst's KLIP."""
    by_name = {e["filename"]: e for e in truth["exposures"]}
    science = [m for m in models if m.meta.asn.exptype == "science"]
    stack = StackRefsStep.call(ModelContainer([m for m in models if m.meta.asn.exptype == "psf"]))
    out = []
    for model in science:
        e = by_name[model.meta.filename.replace("_klipprep", "_calints")]
        star = np.array(e["star_center_yx"])
        companion = np.array(e["companion_yx"])
        if prepared:  # where our steps moved them: the recorded star, the same displacement
            moved = np.array(get_center_yx(model, "star")) - star
            star, companion = star + moved, companion + moved
        image = np.mean(KlipStep.call(model, stack, truncate=20).data, axis=0)
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        r_comp = np.hypot(yy - companion[0], xx - companion[1])
        r_star = np.hypot(yy - star[0], xx - star[1])
        separation = np.hypot(*(companion - star))
        aperture = r_comp <= 1.5
        annulus = (np.abs(r_star - separation) < 2.0) & (r_comp > 5)
        snr = image[aperture].sum() / (np.std(image[annulus]) * np.sqrt(aperture.sum()))
        inner = (r_star > 4) & (r_star < 20) & (r_comp > 5)
        out.append((snr, np.std(image[inner])))
    return np.array(out)


@pytest.mark.slow
def test_jwst_klip_finds_the_companion(dataset, monkeypatch):
    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "True")  # jwst's own steps, offline
    # default products: padded, no NaN left (fill_nans), as jwst's klip needs
    prepared = KlipPrepPipeline.call(str(dataset.asn_path), save_summary=False,
                                     save_diagnostics=False)
    for model in prepared:
        assert np.isfinite(model.data).all(), model.meta.filename
    raw = ReplaceNansStep.call(ModelContainer(str(dataset.asn_path)))
    raw = ModelContainer([m for m in raw if m.meta.asn.exptype != "background"])
    good = _residuals(list(prepared), dataset.truth, prepared=True)
    bad = _residuals(list(raw), dataset.truth, prepared=False)
    assert np.all(good[:, 0] > 5), good
    assert good[:, 1].mean() < 0.8 * bad[:, 1].mean(), (good, bad)


if __name__ == "__main__":  # python tests/test_consumer_jwst_klip.py: print the numbers
    import os
    import tempfile

    os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "True"
    data = simulate_dataset(tempfile.mkdtemp(), nints=4, seed=1, companion_contrast=3e-5,
                            companion_separation_arcsec=1.0)
    prep = KlipPrepPipeline.call(str(data.asn_path), save_summary=False, save_diagnostics=False)
    raw = ReplaceNansStep.call(ModelContainer(str(data.asn_path)))
    raw = ModelContainer([m for m in raw if m.meta.asn.exptype != "background"])
    for label, models, flag in (("prepared", prep, True), ("raw", raw, False)):
        for roll, (snr, rms) in enumerate(_residuals(list(models), data.truth, flag), 1):
            print(f"{label} roll {roll}: companion S/N {snr:.1f}, inner residual rms {rms:.3f}")
