"""Helpers shared by the test modules (importable because tests/ has no __init__.py)."""

import json

import numpy as np
from conftest import make_model


def snapshot(model):
    """Copies of every array of a model, to check later that it was not modified."""
    names = ["data", "err", "dq", "var_poisson", "var_rnoise", "var_flat"]
    out = {n: np.array(getattr(model, n)) for n in names if getattr(model, n, None) is not None}
    out["crpix"] = (model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2)
    return out


def assert_unchanged(model, snap):
    for name, value in snap.items():
        if name == "crpix":
            assert (model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2) == value
        else:
            np.testing.assert_array_equal(np.asarray(getattr(model, name)), value, err_msg=name)
    assert "klipprep" not in model.meta.instance


def write_asn(folder, kinds=("science", "psf", "background"), **kwargs):
    """Write one small calints file per member kind and an ASN; return the ASN path."""
    members = []
    for i, kind in enumerate(kinds):
        name = f"jw0123400{i + 1}001_03106_00001_nrcalong_calints.fits"
        model = make_model(seed=i, filename=name, **kwargs)
        model.save(folder / name)
        model.close()
        members.append({"expname": name, "exptype": kind})
    asn = {
        "asn_type": "coron3", "asn_rule": "candidate_Asn_Lv3Coron", "asn_pool": "test_pool",
        "program": "01234", "asn_id": "c1000", "version_id": None,
        "products": [{"name": "jw01234-c1000_t001_nircam_f444w-maskrnd", "members": members}],
    }
    path = folder / "test_asn.json"
    path.write_text(json.dumps(asn))
    return path
