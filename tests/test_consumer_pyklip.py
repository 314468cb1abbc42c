"""A real consumer: pyKLIP's ``JWSTData`` with its default arguments on the pipeline's products.

pyKLIP reads the star from STARCENX/Y and, by default (``center_include_offset=True``), adds the
primary XOFFSET/YOFFSET over sqrt(PIXAR_A2); it sets NON_SCIENCE pixels to NaN, and its ADI+RDI
covariances need finite pixels.  The products must give the right companion with those defaults.
"""

import warnings

import numpy as np
import pytest
from astropy.io import fits

pyklip = pytest.importorskip("pyklip")

from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline  # noqa: E402
from jwst_klipprep.simulate import simulate_dataset  # noqa: E402

NUMBASIS = (1, 5, 10)


def _make_products(folder, data=None, **options):
    """The demo's dataset (4 integrations) through the pipeline, saved as FITS files."""
    folder.mkdir(parents=True, exist_ok=True)
    data = data or simulate_dataset(folder / "input", nints=4, seed=0)
    result = KlipPrepPipeline.call(str(data.asn_path), save_summary=False, save_diagnostics=False,
                                   **options)
    science, reference = [], []
    for model in result:
        path = folder / model.meta.filename.replace("_calints", "_klipprep")
        model.save(path)
        (science if model.meta.asn.exptype == "science" else reference).append(str(path))
    return science, reference, data.truth, folder, data


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return _make_products(tmp_path_factory.mktemp("pyklip"))[:4]


def _offline_filter_table(monkeypatch):
    """pyKLIP asks the SVO filter service first: make that fail at once (its own table is used)."""
    from astroquery.svo_fps import SvoFps

    def offline(*args, **kwargs):
        raise ConnectionError("offline test: no SVO filter service")

    monkeypatch.setattr(SvoFps, "get_filter_list", offline)


def _klip(science, reference, mode, outdir):
    from pyklip.instruments.JWST import JWSTData
    from pyklip.parallelized import klip_dataset

    dataset = JWSTData(science, reference)  # default arguments: STARCENX/Y + XOFFSET/YOFFSET
    outdir.mkdir(exist_ok=True)
    klip_dataset(dataset, mode=mode, outputdir=str(outdir), fileprefix=mode.replace("+", "_"),
                 annuli=1, subsections=1, movement=1, numbasis=list(NUMBASIS),
                 calibrate_flux=False, numthreads=1, psf_library=dataset.psflib, highpass=False,
                 verbose=False)
    # (KL, frames, wavelength, y, x), derotated north up, east left, star at output_centers
    with warnings.catch_warnings():  # the corners are NaN in every derotated frame
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(dataset.output[:, :, 0], axis=1), dataset.output_centers[0]


def _gaussian_fit(image, guess_yx, half=3):
    from scipy.optimize import curve_fit

    iy, ix = (int(round(v)) for v in guess_yx)
    yy, xx = np.mgrid[iy - half: iy + half + 1, ix - half: ix + half + 1]
    stamp = image[iy - half: iy + half + 1, ix - half: ix + half + 1]

    def model(coords, amp, y0, x0, sigma, base):
        y, x = coords
        return amp * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma**2)) + base

    p, _ = curve_fit(model, (yy.ravel(), xx.ravel()), stamp.ravel(),
                     p0=(stamp.max(), iy, ix, 1.0, 0.0))
    return np.array(p[1:3])


def _companion(image, center_xy, truth):
    """S/N and fitted position error (px) of the companion in a north-up KLIP image."""
    sep = truth["companion"]["separation_arcsec"] / truth["pixel_scale_arcsec"]
    pa = np.radians(truth["companion"]["pa_deg"])
    expected = np.array([center_xy[1] + sep * np.cos(pa), center_xy[0] - sep * np.sin(pa)])
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    r_comp = np.hypot(yy - expected[0], xx - expected[1])
    r_star = np.hypot(yy - center_xy[1], xx - center_xy[0])
    aperture = r_comp <= 1.5
    annulus = (np.abs(r_star - sep) < 2.0) & (r_comp > 5)
    snr = np.nansum(image[aperture]) / (np.nanstd(image[annulus]) * np.sqrt(aperture.sum()))
    return snr, float(np.hypot(*(_gaussian_fit(image, expected) - expected)))


@pytest.mark.slow
def test_products_header_is_consistent_for_pyklip(products):
    science, reference, _, _ = products
    for path in science + reference:
        with fits.open(path) as hdul:
            primary, sci = hdul[0].header, hdul["SCI"].header
            assert primary["XOFFSET"] == 0.0 and primary["YOFFSET"] == 0.0, path
            assert "XOFFORIG" in primary and "YOFFORIG" in primary
            # the star is where the pipeline put it: the array centre
            ny, nx = hdul["SCI"].data.shape[-2:]
            assert sci["STARCENX"] == pytest.approx((nx + 1) / 2)
            assert sci["STARCENY"] == pytest.approx((ny + 1) / 2)
            # statistical error (+) the 30 mas systematic floor of a model without an OPD
            # (recenter_frames docs, "Uncertainty"): 0.48 px at 0.063"/px
            assert 0.3 < sci["STARERRX"] < 1.0 and 0.3 < sci["STARERRY"] < 1.0
            assert not np.isnan(hdul["SCI"].data).any()
    with fits.open(reference[1]) as hdul:  # a dithered reference keeps its commanded offset
        assert abs(hdul[0].header["XOFFORIG"]) + abs(hdul[0].header["YOFFORIG"]) > 0


@pytest.mark.slow
def test_pyklip_reads_the_true_star(products):
    """The star pyKLIP's default reading gives is the true star moved with the pixels.

    Within the centring accuracy on these data (<= 0.11 px); the dither counted twice put the
    dithered references 0.24 px off.
    """
    from stdatamodels.jwst import datamodels

    science, reference, truth, _ = products
    by_name = {e["filename"]: e for e in truth["exposures"]}
    for path in science + reference:
        with datamodels.open(path) as model:
            rec = model.meta.instance["klipprep"]
            moved = np.mean(rec["align_frames"]["applied_shift_yx"], axis=0)
            pad = rec.get("pad_frames", {}).get("npix_left_right_bottom_top", (0, 0, 0, 0))
            left, _, bottom, _ = pad  # not padded by default
            e = by_name[model.meta.filename.replace("_klipprep", "_calints")]
            true_yx = np.array(e["star_center_yx"]) + moved + (
                bottom, left)
        with fits.open(path) as hdul:
            primary, sci = hdul[0].header, hdul["SCI"].header
            scale = np.sqrt(sci["PIXAR_A2"])
            read_yx = (sci["STARCENY"] - 1 + primary["YOFFSET"] / scale,
                       sci["STARCENX"] - 1 + primary["XOFFSET"] / scale)
        assert np.hypot(*(np.subtract(read_yx, true_yx))) < 0.15, path


@pytest.mark.slow
def test_pyklip_default_reader_finds_the_companion(products, monkeypatch):
    _offline_filter_table(monkeypatch)
    science, reference, truth, folder = products
    rdi, center = _klip(science, reference, "RDI", folder / "rdi")
    adi_rdi, _ = _klip(science, reference, "ADI+RDI", folder / "adi_rdi")
    snr, position_error = _companion(rdi[NUMBASIS.index(10)], center, truth)
    assert snr >= 25, snr
    assert position_error <= 0.1, position_error
    snr_adi, position_error_adi = _companion(adi_rdi[NUMBASIS.index(10)], center, truth)
    assert snr_adi >= 25 and position_error_adi <= 0.1, (snr_adi, position_error_adi)
    # ADI+RDI really used the science frames as references (it silently gave RDI with NaNs)
    difference = np.nanmax(np.abs(adi_rdi - rdi))
    assert difference > 0.05 * np.nanmax(rdi[NUMBASIS.index(10)]), difference


if __name__ == "__main__":  # python tests/test_consumer_pyklip.py: print the numbers
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="pyklip"))
    data = None
    for fill in (True, False):  # the default products, then the NaNs kept
        sci, ref, truth, out, data = _make_products(root / f"fill_{fill}", data, fill_nans=fill)
        images = {}
        for mode in ("RDI", "ADI+RDI"):
            images[mode], centre = _klip(sci, ref, mode, out / mode.replace("+", "_"))
            for kl, image in zip(NUMBASIS, images[mode], strict=True):
                s, err = _companion(image, centre, truth)
                print(f"fill_nans={fill!s:5s} {mode:8s} KL {kl:2d}: companion S/N {s:5.1f}, "
                      f"position error {err:.3f} px")
        print(f"fill_nans={fill!s:5s} max |ADI+RDI - RDI| = "
              f"{np.nanmax(np.abs(images['ADI+RDI'] - images['RDI'])):.4g} "
              f"(RDI KL10 peak {np.nanmax(images['RDI'][-1]):.4g})")
        if fill:  # what the products did before: the commanded offsets left in XOFFSET/YOFFSET
            old = []
            for path in sci + ref:
                with fits.open(path) as hdul:
                    hdul[0].header["XOFFSET"] = hdul[0].header["XOFFORIG"]
                    hdul[0].header["YOFFSET"] = hdul[0].header["YOFFORIG"]
                    old.append(path.replace(".fits", "_oldoffsets.fits"))
                    hdul.writeto(old[-1])
            image, centre = _klip(old[:len(sci)], old[len(sci):], "RDI", out / "old")
            s, err = _companion(image[-1], centre, truth)
            print(f"XOFFSET kept (dither counted twice) RDI KL 10: companion S/N {s:5.1f}, "
                  f"position error {err:.3f} px")
