"""``klipprep associate``: groups and roles from the headers of a simulated two-filter program."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from batch_helpers import copy_to, set_header, small_program, truncate
from jwst.datamodels import ModelContainer

from jwst_klipprep.base import check_asn
from jwst_klipprep.batch import associate, format_groups
from jwst_klipprep.cli import main
from jwst_klipprep.roles import classify_members

# jwst's association loader warns when member names hold a folder (ASN written elsewhere)
_PATH_WARNING = "ignore:Input association file contains path information:UserWarning"
_EXPTYPE = {"SCI": "science", "REF": "psf", "SCI_BG": "background", "REF_BG": "background"}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """F444W and F410M (FILTER rewritten) folders of one program, plus files to be skipped."""
    root = tmp_path_factory.mktemp("download")
    f444w = small_program(root / "f444w", seed=1)
    f410m = small_program(root / "f410m", filter_name="F410M", seed=2)
    # not for the association: a product of ours, a target acquisition, a rate file
    extra = root / "f444w"
    first = next(iter(f444w))
    shutil.copy(first, extra / first.name.replace("_calints", "_klipprep"))
    ta = extra / "jw01184001001_02102_00001_nrcalong_calints.fits"
    shutil.copy(first, ta)
    set_header(ta, EXP_TYPE="NRC_TACQ")
    (extra / "notes.txt").write_text("not a FITS file\n")
    return root, f444w, f410m


def _roles(group):
    return {e.path.name: role for e, role in group.members}


def test_two_filters_exact_groups_and_roles(program, tmp_path, caplog):
    root, f444w, f410m = program
    caplog.set_level(logging.INFO, logger="jwst_klipprep.batch")
    groups = associate([root / "f444w", root / "f410m"], tmp_path / "asns")
    assert [g.name for g in groups] == ["jw01184_f410m_mask335r", "jw01184_f444w_mask335r"]
    for group, truth in zip(groups, (f410m, f444w), strict=True):
        assert _roles(group) == {p.name: kind for p, kind in truth.items()}
        assert group.count("SCI") == 2 and group.count("REF") == 1
        assert group.warnings == []
        asn = json.loads(group.asn_path.read_text())
        assert group.asn_path.name == f"{group.name}_asn.json"
        assert asn["asn_type"] == "coron3" and asn["program"] == "01184"
        assert asn["products"][0]["name"] == group.name
        members = asn["products"][0]["members"]
        # science first, then psf, then background; names relative to the ASN folder
        assert [m["exptype"] for m in members] == ["science"] * 2 + ["psf"] + ["background"] * 2
        for member in members:
            path = (group.asn_path.parent / member["expname"]).resolve()
            assert path.parent == next(iter(truth)).parent.resolve()
            assert member["exptype"] == _EXPTYPE[truth[next(p for p in truth
                                                            if p.name == path.name)]]
        check_asn(group.asn_path)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2  # the _klipprep product and the NRC_TACQ exposure (txt: ignored)
    assert any("NRC_TACQ is not coronagraphic" in s for s in skipped)
    assert any("suffix 'klipprep'" in s for s in skipped)


@pytest.mark.filterwarnings(_PATH_WARNING)
def test_asn_opens_as_the_pipeline_opens_it_and_roles_match_subtract_background(program,
                                                                                tmp_path):
    root, f444w, _ = program
    (group,) = associate([root / "f444w"], tmp_path)
    with ModelContainer(str(group.asn_path)) as models:
        assert len(models) == 5
        kinds = {m.meta.filename: r.kind for m, r in zip(models, classify_members(list(models)),
                                                         strict=True)}
    assert kinds == {p.name: kind for p, kind in f444w.items()} == _roles(group)


def test_backgrounds_without_a_target_name_follow_the_observation_number(program, tmp_path):
    root, f444w, _ = program
    folder = tmp_path / "renamed"
    folder.mkdir()
    for path, kind in f444w.items():
        new = copy_to(path, folder)
        if kind.endswith("_BG"):
            set_header(new, TARGPROP=f"SKY-{kind}")
    (group,) = associate([folder])  # default: the ASN next to the data, plain member names
    assert group.asn_path.parent == folder.resolve()
    members = json.loads(group.asn_path.read_text())["products"][0]["members"]
    assert all("/" not in m["expname"] for m in members)
    roles = _roles(group)
    # the SCI_BG exposure (obs 4) is nearest to the reference (obs 3): same rule as the step
    bg = {name: role for name, role in roles.items() if role.endswith("_BG")}
    assert sorted(bg.values()) == ["REF_BG", "REF_BG"]
    with ModelContainer(str(group.asn_path)) as models:
        step_roles = {m.meta.filename: r.kind for m, r in zip(models, classify_members(
            list(models)), strict=True)}
    assert step_roles == roles
    assert "no science background: subtract_background will use the reference ones" in \
        group.warnings


def test_detectors_units_and_missing_references(program, tmp_path, caplog):
    root, f444w, _ = program
    folder = tmp_path / "mixed"
    folder.mkdir()
    copies = {copy_to(p, folder): kind for p, kind in f444w.items() if kind != "REF"}
    sci = [p for p, kind in copies.items() if kind == "SCI"]
    set_header(sci[0], 1, BUNIT="DN/s")
    set_header(sci[1], DETECTOR="NRCBLONG")
    with caplog.at_level(logging.WARNING, logger="jwst_klipprep.batch"):
        groups = associate([folder], tmp_path / "asns")
    # never mix detectors: two groups, named apart by the detector
    assert [g.name for g in groups] == ["jw01184_f444w_mask335r_nrcalong",
                                        "jw01184_f444w_mask335r_nrcblong"]
    assert [g.key[2] for g in groups] == ["NRCALONG", "NRCBLONG"]
    assert _roles(groups[1]) == {sci[1].name: "SCI"}
    assert "no reference (psf) exposure: only ADI is possible" in groups[0].warnings
    assert "mixed units (BUNIT): DN/s, MJy/sr" in groups[0].warnings
    assert sum("mixed units" in r.getMessage() for r in caplog.records) == 1


def test_headers_only_truncated_files_and_no_science(program, tmp_path, caplog, monkeypatch):
    root, f444w, _ = program
    folder = tmp_path / "cut"
    folder.mkdir()
    sci = copy_to(next(p for p, k in f444w.items() if k == "SCI"), folder)

    def no_data(self):
        raise AssertionError("associate read pixel data")

    with monkeypatch.context() as patch:  # the data are never read
        patch.setattr(fits.ImageHDU, "data", property(no_data))
        patch.setattr(fits.BinTableHDU, "data", property(no_data))
        (group,) = associate([sci], tmp_path / "asns")
    assert _roles(group) == {sci.name: "SCI"}
    # a file cut inside its SCI data (interrupted download) is skipped with a warning
    with fits.open(sci) as hdul:
        data_start = hdul.fileinfo(1)["datLoc"]
    truncate(sci, data_start + 100)
    ref = copy_to(next(p for p, k in f444w.items() if k == "REF"), folder)
    with caplog.at_level(logging.WARNING, logger="jwst_klipprep.batch"):
        assert associate([sci, ref], tmp_path / "none", write=False) == []
    messages = [r.getMessage() for r in caplog.records]
    assert any(sci.name in m and "incomplete file" in m for m in messages)
    assert any("no science exposure" in m and ref.name in m for m in messages)
    assert not (tmp_path / "none").exists()


def test_cli_associate(program, tmp_path, capsys):
    root, _, _ = program
    assert main(["associate", str(root / "f444w"), str(root / "f410m"), "-o",
                 str(tmp_path / "asns")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("jw01184_f444w_mask335r "))
    assert row.split()[:6] == ["jw01184_f444w_mask335r", "NRCALONG", "2", "1", "1", "1"]
    assert "SYNTH-STAR / SYNTH-REF" in row
    assert "NRC_TACQ is not coronagraphic" in out
    assert sorted(p.name for p in (tmp_path / "asns").iterdir()) == [
        "jw01184_f410m_mask335r_asn.json", "jw01184_f444w_mask335r_asn.json"]
    assert main(["associate", str(tmp_path / "asns"), "-o", str(tmp_path / "x")]) == 1


def test_format_groups_exposure_times(program, tmp_path):
    root, f444w, _ = program
    (group,) = associate([root / "f444w"], tmp_path, write=False)
    effexptm = [fits.getval(p, "EFFEXPTM") for p, k in f444w.items() if k == "SCI"]
    assert group.exptime("SCI") == pytest.approx(sum(effexptm))
    text = format_groups([group])
    assert f"{sum(effexptm):.0f}" in text.splitlines()[2].split()
    assert Path(group.members[0][0].path).exists()


def test_one_product_per_exposure_cal_and_calints(program, tmp_path, caplog):
    """A MAST download has both _cal and _calints files: the _calints one is used."""
    root, f444w, _ = program
    folder = tmp_path / "both"
    folder.mkdir()
    sci = next(p for p, k in f444w.items() if k == "SCI")
    cal = folder / sci.name.replace("_calints", "_cal")
    shutil.copy(sci, cal)  # listed first: "..._cal.fits" < "..._calints.fits"
    calints = copy_to(sci, folder)
    other = tmp_path / "copy"
    other.mkdir()
    twin = copy_to(sci, other)
    caplog.set_level(logging.INFO, logger="jwst_klipprep.batch")
    (group,) = associate([folder, twin], write=False)
    assert [e.path for e, _ in group.members] == [calints]
    notes = [r.getMessage() for r in caplog.records if "same exposure" in r.getMessage()]
    assert len(notes) == 2
    assert any(str(cal) in n and f"{calints.name} is used" in n for n in notes)
    assert any(str(twin) in n for n in notes)


def test_across_programs_joins_the_reference_program(program, tmp_path):
    """References observed in another program: separate groups by default (the science alone,
    the references without science are dropped), one association with ``across_programs``."""
    root, f444w, _ = program
    data = tmp_path / "data"
    data.mkdir()
    moved = {}
    for path, role in f444w.items():
        copy_to(path, data)
        if role in ("REF", "REF_BG"):
            set_header(data / path.name, PROGRAM="01194")
        moved[path.name] = role
    by_program = associate([data], tmp_path / "asns", write=False)
    assert [g.name for g in by_program] == ["jw01184_f444w_mask335r"]
    assert by_program[0].count("REF") == 0
    joined = associate([data], tmp_path / "asns", across_programs=True)
    assert [g.name for g in joined] == ["jw01184_f444w_mask335r"]
    assert _roles(joined[0]) == moved
    assert json.loads(joined[0].asn_path.read_text())["program"] == "01184"
