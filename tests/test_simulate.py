"""Known-answer tests of the synthetic coronagraphy dataset writer."""

import contextlib
import importlib.util
import json
import math
import os
import warnings

import numpy as np
import pytest
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags
from stdatamodels.validate import ValidationWarning

from jwst_klipprep.psf.builtin import coronagraphic_psf
from jwst_klipprep.simulate import SimulatedDataset, simulate_dataset, stpsf_data_path

DNU = dqflags.pixel["DO_NOT_USE"]


@pytest.fixture(scope="module")
def nircam(tmp_path_factory):
    """Reduced NIRCam set: 2 rolls, 5 dithered references, 2 backgrounds, 2 integrations."""
    out = tmp_path_factory.mktemp("nircam")
    return simulate_dataset(out, nints=2, seed=3, psf_nlambda=1)


@pytest.fixture(scope="module")
def miri(tmp_path_factory):
    out = tmp_path_factory.mktemp("miri")
    return simulate_dataset(out, instrument="MIRI", nints=2, n_reference=1, seed=4, psf_nlambda=1)


_MODELS = {}


@pytest.fixture(scope="module", autouse=True)
def _close_models():
    yield
    while _MODELS:
        _MODELS.popitem()[1].close()


@contextlib.contextmanager
def _open(ds, name):
    """Open a written file once per test module (opening validates; ~0.2 s each); read-only use."""
    path = ds.outdir / name
    if path not in _MODELS:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=ValidationWarning)
            _MODELS[path] = datamodels.open(path)
    yield _MODELS[path]


def _defect_pixels(exposure, shape):
    d = exposure["dq_defects"]
    pixels = {tuple(p) for key in ("hot", "dead", "non_science") for p in d[key]}
    for y0, x0, size in d["clusters"]:
        pixels |= {(y0 + i, x0 + j) for i in range(size) for j in range(size)}
    pixels |= {(y, d["bad_column"]) for y in range(shape[0])}
    pixels |= {(y, c) for c in d["reference_pixel_columns"] for y in range(shape[0])}
    return pixels


def test_files_asn_and_truth(nircam):
    assert isinstance(nircam, SimulatedDataset)
    kinds = list(nircam.paths.values())
    assert kinds == ["SCI", "SCI", "REF", "REF", "REF", "REF", "REF", "SCI_BG", "REF_BG"]
    for name in nircam.paths:
        assert (nircam.outdir / name).is_file()
        assert name.startswith("jw09999") and name.endswith("_nrcalong_calints.fits")
    with open(nircam.asn_path) as f:
        asn = json.load(f)
    assert asn["asn_type"] == "coron3" and asn["asn_pool"] and asn["asn_id"] == "c1000"
    members = asn["products"][0]["members"]
    assert [m["exptype"] for m in members] == (["science"] * 2 + ["psf"] * 5 + ["background"] * 2)
    for m in members:
        assert (nircam.asn_path.parent / m["expname"]).is_file()
    with open(nircam.truth_path) as f:
        assert json.load(f) == json.loads(json.dumps(nircam.truth))
    t = nircam.truth
    assert t["instrument"] == "NIRCAM" and t["coronagraph"] == "MASKA335R"
    assert t["shape"] == [320, 320] and t["pixel_scale_arcsec"] == 0.0629
    assert t["psf_backend"] == "builtin" and "conventions" in t
    assert {"separation_arcsec", "pa_deg", "contrast"} <= set(t["companion"])


def test_metadata_mirrors_real_files(nircam):
    t = nircam.truth
    cy, cx = t["mask_center_yx"]
    # true mask centre = SIAF (150.2, 174.6) + F444W shift (0.177, -0.205); CRPIX = SIAF
    assert (cx + 1, cy + 1) == pytest.approx((150.377, 174.395))
    assert t["crpix"] == pytest.approx([150.2, 174.6])
    for e in t["exposures"]:
        with _open(nircam, e["filename"]) as m:
            assert isinstance(m, datamodels.CubeModel)
            assert m.data.shape == (2, 320, 320) and m.data.dtype.newbyteorder("=") == np.float32
            meta = m.meta
            assert meta.instrument.name == "NIRCAM" and meta.instrument.detector == "NRCALONG"
            assert meta.instrument.filter == "F444W" and meta.instrument.pupil == "MASKRND"
            assert meta.instrument.coronagraph == "MASKA335R"
            assert meta.exposure.type == "NRC_CORON" and meta.exposure.nints == 2
            assert meta.subarray.name == "SUB320A335R" and meta.aperture.name == "NRCA5_MASK335R"
            assert (meta.subarray.xsize, meta.subarray.ysize) == (320, 320)
            assert meta.wcsinfo.crpix1 == pytest.approx(150.2)
            assert meta.wcsinfo.crpix2 == pytest.approx(174.6)
            assert meta.wcsinfo.roll_ref == pytest.approx(e["roll_ref"])
            assert meta.dither.x_offset == pytest.approx(e["xoffset_arcsec"])
            assert meta.dither.y_offset == pytest.approx(e["yoffset_arcsec"])
            assert meta.exposure.psf_reference is (e["kind"] == "REF")
            assert meta.bunit_data == "MJy/sr" and meta.filename == e["filename"]
            assert len(m.int_times) == 2
            assert meta.target.proposer_name == e["targprop"]
            if e["kind"].endswith("_BG"):
                assert "BACKGROUND" in meta.target.proposer_name
                assert meta.observation.bkgdtarg is True
    sci = [e for e in t["exposures"] if e["kind"] == "SCI"]
    assert abs(sci[1]["roll_ref"] - sci[0]["roll_ref"]) == pytest.approx(10.0)
    refs = [e for e in t["exposures"] if e["kind"] == "REF"]
    offs = {(e["xoffset_arcsec"], e["yoffset_arcsec"]) for e in refs}
    assert len(offs) == 5 and max(max(abs(a), abs(b)) for a, b in offs) == pytest.approx(0.015)


def test_noise_arrays_and_defects(nircam):
    t = nircam.truth
    shape = tuple(t["shape"])
    for e in t["exposures"]:
        with _open(nircam, e["filename"]) as m:
            var = m.var_poisson.astype(float) + m.var_rnoise + m.var_flat
            err2 = m.err.astype(float) ** 2
            good = np.isfinite(m.data)
            np.testing.assert_allclose(err2[good], var[good], rtol=1e-5)
            assert np.all(np.isfinite(m.err[good])) and np.all(m.var_flat[good] < 0.1 * var[good])
            # NaN exactly where DO_NOT_USE is set, and the truth's defects are among them
            np.testing.assert_array_equal(~good, (m.dq & DNU) > 0)
            bad = _defect_pixels(e, shape)
            ys, xs = np.array(sorted(bad)).T
            assert np.all(np.isnan(m.data[:, ys, xs]))
            assert (~good[0]).sum() == len(bad) == e["nan_pixels_per_integration"]
            hot = np.array(e["dq_defects"]["hot"])
            assert np.all(m.dq[:, hot[:, 0], hot[:, 1]] & dqflags.pixel["HOT"])
            dead = np.array(e["dq_defects"]["dead"])
            assert np.all(m.dq[:, dead[:, 0], dead[:, 1]] & dqflags.pixel["DEAD"])
            assert np.all(m.dq[:, :, e["dq_defects"]["bad_column"]] & DNU)
            # defects are constant over integrations
            np.testing.assert_array_equal(m.dq[0] & DNU, m.dq[-1] & DNU)
            # informational flags sit on valid data
            jumps = np.array(e["jump_det"])
            assert np.all(m.dq[jumps[:, 0], jumps[:, 1], jumps[:, 2]] & dqflags.pixel["JUMP_DET"])
            assert np.all(np.isfinite(m.data[jumps[:, 0], jumps[:, 1], jumps[:, 2]]))


def test_pedestal_recoverable_from_sky(nircam):
    t = nircam.truth
    for e in t["exposures"]:
        with _open(nircam, e["filename"]) as m:
            # a 60x60 corner box ~10 arcsec from the star
            box = m.data[:, 0:60, 240:300].reshape(2, -1)
            med = np.nanmedian(box, axis=1)
        sigma_med = 1.25 * e["noise_sigma_sky"] / math.sqrt(box.shape[1])
        halo = 0.0 if e["kind"].endswith("_BG") else 0.01  # residual stellar halo, MJy/sr
        assert np.all(np.abs(med - np.array(e["pedestal"])) < 5 * sigma_med + halo)
        assert 0.1 <= np.mean(e["pedestal"]) <= 0.3 + 0.05


def test_data_match_the_truth_model(nircam):
    """Reference exposures: data = flux_scale * PSF(star offset) + pedestal, chi2/pixel ~ 1."""
    t = nircam.truth
    cy, cx = t["mask_center_yx"]
    for e in (x for x in t["exposures"] if x["kind"] == "REF"):
        dy, dx = e["star_offset_yx_px"]
        assert e["star_center_yx"] == pytest.approx([cy + dy, cx + dx])
        # the star offset is the TA error plus the dither offset plus < 5 mas jitter
        ta_y, ta_x = e["ta_error_yx_arcsec"]
        expect = (ta_y + e["yoffset_arcsec"], ta_x + e["xoffset_arcsec"])
        got = e["star_offset_yx_arcsec"]
        assert math.hypot(got[0] - expect[0], got[1] - expect[1]) < 0.005
        model = e["flux_scale"] * coronagraphic_psf(
            offset_yx_arcsec=got, shape=(320, 320), center_yx=(cy, cx), nlambda=1
        )
        with _open(nircam, e["filename"]) as m:
            sl = (slice(None), slice(int(cy) - 20, int(cy) + 21), slice(int(cx) - 20, int(cx) + 21))
            resid = (m.data[sl] - model[sl[1:]] - np.array(e["pedestal"])[:, None, None]) / m.err[
                sl
            ]
        chi = resid[np.isfinite(resid) & (np.abs(resid) < 8)]  # drop cosmic-ray pixels
        assert chi.size > 0.9 * resid.size
        assert 0.85 < np.mean(chi**2) < 1.2
        assert abs(np.mean(chi)) < 0.1
        # a 10 mas error in the offset would be obvious in the same statistic
        wrong = e["flux_scale"] * coronagraphic_psf(
            offset_yx_arcsec=(got[0] + 0.01, got[1]),
            shape=(320, 320),
            center_yx=(cy, cx),
            nlambda=1,
        )
        with _open(nircam, e["filename"]) as m:
            bad = (m.data[sl] - wrong[sl[1:]] - np.array(e["pedestal"])[:, None, None]) / m.err[sl]
        assert np.nanmean(np.clip(bad, -8, 8) ** 2) > 2.0
        break  # one exposure is enough; the others share the code path


def test_cosmic_rays_are_unflagged_outliers(nircam):
    t = nircam.truth
    e = t["exposures"][-1]  # background: no star, model = pedestal
    assert len(e["cosmic_rays"]) == 2 * 3
    with _open(nircam, e["filename"]) as m:
        for i, y, x, amp in e["cosmic_rays"]:
            assert 10 <= amp <= 1000
            assert not m.dq[i, y, x] & DNU
            excess = (m.data[i, y, x] - e["pedestal"][i]) / m.err[i, y, x]
            assert excess == pytest.approx(amp, abs=6)
            other = 1 - i
            assert abs(m.data[other, y, x] - e["pedestal"][other]) < 6 * m.err[other, y, x]


def test_companion_rotates_with_roll(nircam):
    t = nircam.truth
    sci = [e for e in t["exposures"] if e["kind"] == "SCI"]
    angles = []
    for e in sci:
        vy = e["companion_yx"][0] - e["star_center_yx"][0]
        vx = e["companion_yx"][1] - e["star_center_yx"][1]
        sep = math.hypot(vy, vx) * t["pixel_scale_arcsec"]
        assert sep == pytest.approx(t["companion"]["separation_arcsec"], rel=1e-9)
        angles.append(math.degrees(math.atan2(-vx, vy)))  # counter-clockwise from +y
    # a sky-fixed source appears rotated by -delta_roll on the detector
    d_roll = sci[1]["roll_ref"] - sci[0]["roll_ref"]
    assert (angles[1] - angles[0]) == pytest.approx(-d_roll, abs=1e-9)
    # and lies at PA - PA_APER on the detector
    assert angles[0] == pytest.approx(t["companion"]["pa_deg"] - sci[0]["pa_aper"], abs=1e-9)
    assert all(e["companion_yx"] is None for e in t["exposures"] if e["kind"] != "SCI")


def test_association_opens_in_jwst(miri):
    from jwst.datamodels import ModelContainer, ModelLibrary

    # all members, backgrounds included, open in a ModelContainer (coron3 reads it this way)
    with ModelContainer(str(miri.asn_path)) as container:
        assert len(container) == 5
        assert [m.meta.asn.exptype for m in container] == (
            ["science", "science", "psf", "background", "background"]
        )
    library = ModelLibrary(str(miri.asn_path), asn_exptypes=["science", "psf"])
    with library:
        assert len(library) == 3
        model = library.borrow(2)
        assert model.meta.exposure.psf_reference is True
        library.shelve(model, 2, modify=False)


def test_seed_reproducible_and_auto_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("STPSF_PATH", raising=False)  # "auto" must then fall back to builtin
    kw = dict(nints=2, n_reference=1, n_science_rolls=1, with_background=False, psf_nlambda=1)
    a = simulate_dataset(tmp_path / "a", seed=11, psf_backend="auto", **kw)
    b = simulate_dataset(tmp_path / "b", seed=11, **kw)
    c = simulate_dataset(tmp_path / "c", seed=12, **kw)
    assert a.truth["psf_backend"] == "builtin"
    assert a.truth == b.truth and a.truth != c.truth
    name = next(iter(a.paths))
    with _open(a, name) as ma, _open(b, name) as mb, _open(c, name) as mc:
        np.testing.assert_array_equal(ma.data, mb.data)
        np.testing.assert_array_equal(ma.dq, mb.dq)
        assert not np.array_equal(ma.data, mc.data, equal_nan=True)


def test_miri_dataset(miri):
    t = miri.truth
    assert t["coronagraph"] == "4QPM_1140" and t["shape"] == [224, 288]
    assert t["mask_center_yx"] == pytest.approx([112.24, 119.75])
    assert list(miri.paths.values()) == ["SCI", "SCI", "REF", "SCI_BG", "REF_BG"]
    for e in t["exposures"]:
        with _open(miri, e["filename"]) as m:
            assert m.data.shape == (2, 224, 288)
            assert m.meta.exposure.type == "MIR_4QPM" and m.meta.subarray.name == "MASK1140"
            assert m.meta.instrument.detector == "MIRIMAGE" and m.meta.instrument.filter == "F1140C"
            assert (m.meta.wcsinfo.crpix1, m.meta.wcsinfo.crpix2) == pytest.approx((120.75, 113.24))
            # reference-pixel columns are flagged and NaN; sky level like raw MIRI (14-18 MJy/sr)
            assert np.all(m.dq[:, :, :4] & dqflags.pixel["REFERENCE_PIXEL"])
            assert np.all(np.isnan(m.data[:, :, :4]))
            assert 13.5 < np.nanmedian(m.data[0, 180:220, 230:280]) < 18.5
            if e["kind"].endswith("_BG"):  # sky only: the pedestal is what a sky box measures
                med = np.nanmedian(m.data[:, 180:220, 230:280].reshape(2, -1), axis=1)
                assert np.abs(med - e["pedestal"]) == pytest.approx([0, 0], abs=0.03)
        assert 14.0 - 0.2 < np.mean(e["pedestal"]) < 18.0 + 0.2


def test_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="instrument"):
        simulate_dataset(tmp_path, instrument="NIRISS")
    with pytest.raises(ValueError, match="MASKA335R"):
        simulate_dataset(tmp_path, coronagraph="MASKLWB")
    with pytest.raises(ValueError, match="n_reference"):
        simulate_dataset(tmp_path, n_reference=4)
    monkeypatch.delenv("STPSF_PATH", raising=False)
    with pytest.raises(ValueError, match="STPSF_PATH"):
        simulate_dataset(tmp_path, psf_backend="stpsf")
    with pytest.raises(ValueError, match="psf_backend"):
        simulate_dataset(tmp_path, psf_backend="webbpsf")
    assert not list(tmp_path.iterdir())


def test_stpsf_data_path_check(tmp_path, monkeypatch):
    monkeypatch.delenv("STPSF_PATH", raising=False)
    assert stpsf_data_path() is None
    monkeypatch.setenv("STPSF_PATH", str(tmp_path))
    assert stpsf_data_path() is None  # no version.txt
    (tmp_path / "version.txt").write_text("2.0.0\n")
    assert stpsf_data_path() is None  # too old for stpsf 2.2
    (tmp_path / "version.txt").write_text("2.2.0\n")
    assert stpsf_data_path() == tmp_path


_MINI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "stpsf-data-mini")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(_MINI) or importlib.util.find_spec("stpsf") is None,
    reason="needs stpsf (the [stpsf] extra) and ../shared/data/stpsf-data-mini",
)
def test_stpsf_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("STPSF_PATH", os.path.abspath(_MINI))
    ds = simulate_dataset(
        tmp_path,
        psf_backend="stpsf",
        nints=1,
        n_reference=1,
        n_science_rolls=1,
        with_background=False,
    )
    assert ds.truth["psf_backend"] == "stpsf"
