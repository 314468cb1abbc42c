"""``klipprep demo`` end to end on a small dataset (the CLI entry point included)."""

import json

import pytest

from jwst_klipprep.cli import main


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--nints", "2"]) == 0
    out = capsys.readouterr().out
    assert "update_nircam_centers:" in out
    assert "-> (+0.000, +0.000) px" in out  # the mask centre lands on the truth
    assert "final star position:" in out
    output = tmp_path / "demo" / "output"
    assert next(output.glob("*_klipprep.png")).stat().st_size > 10_000
    assert next(output.glob("*_klipprep_summary.ecsv")).exists()
    report = json.loads((tmp_path / "demo" / "demo_report.json").read_text())
    assert report["pipeline_s"] > 0 and any("align_frames" in line for line in report["report"])
    assert len(sorted(output.glob("*_klipprep.fits"))) == 7


def test_simulate_cli(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "sim"), "--nints", "1", "--no-background"]) == 0
    assert "wrote 7 exposures" in capsys.readouterr().out
    assert (tmp_path / "sim" / "truth.json").exists()


def test_bad_nints(capsys):
    assert main(["simulate", "x", "--nints", "0"]) == 2
    assert "--nints must be >= 1" in capsys.readouterr().err
