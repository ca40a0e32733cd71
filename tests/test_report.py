"""HTML reports: written by the recorder callback at job end and multirun end with
``recorder.report=true``, self-contained, and rendered by headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from arena_recording.analysis.load import load
from arena_recording.analysis.report import REPORT_NAME, render_report, write_report
from arena_recording.cli import main

CHROMIUM = shutil.which("chromium")
PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A multirun of the CartPole demo with reports turned on from the command line."""
    out = tmp_path_factory.mktemp("sweep")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "arena_recording.demo.cartpole",
            "-m",
            "+recorder=[core,variations]",
            "recorder.report=true",
            f"hydra.sweep.dir={out}",
            "eval.num_episodes=64",
            "variations.gravity.sampler.high=12,40",
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in PNG.findall(page)]


def test_reports_are_written_at_job_end_and_multirun_end(sweep):
    for where in (sweep / "0", sweep / "1", sweep):
        page = (where / REPORT_NAME).read_text()
        assert page.startswith("<!DOCTYPE html>") and "Factor ranking" in page, where
    assert "Jobs" in (sweep / REPORT_NAME).read_text()
    assert "<h2>Jobs</h2>" not in (sweep / "0" / REPORT_NAME).read_text()


def test_sweep_report_is_self_contained_and_complete(sweep):
    page = (sweep / REPORT_NAME).read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing to fetch
    assert "<script" not in page and "<link" not in page
    pngs = images(page)
    # jobs, ranking, and one plot per analysable factor (gravity, force_mag, label; tau is constant)
    assert len(pngs) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    for text in (
        "Wilson interval",
        "No problems found",
        "gravity.sampler.high",
        "PAWN",
        "RBD-FAST S1",
        "delta S1",
        "(dummy)",
        "noise level",
        "tau left out: it is constant",
        "Factors (from the manifest)",
    ):
        assert text in page, text


def test_report_shows_data_quality_warnings_and_why_there_is_no_ranking(sweep, tmp_path):
    records = tmp_path / "episodes.jsonl"
    lines = (sweep / "0" / "episodes.jsonl").read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:3] + lines[4:]) + '{"seq": 99, "run')  # no manifest beside
    page = render_report(load(records))
    assert "missing record(s) (seq 3)" in page
    assert "skipped 1 incomplete or unreadable line(s)" in page
    assert "No ranking: no factor to analyse" in page
    assert "success" in page and len(images(page)) == 0


def test_report_command(sweep, tmp_path, capsys):
    out = tmp_path / "run.html"
    assert main(["report", str(sweep / "1"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "Evaluation report: 1" in out.read_text()
    assert main(["report", str(sweep / "1"), "--outcome", "length", "--out", str(out)]) == 0
    assert "Factor ranking: effect on length" in out.read_text()


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    path = write_report(sweep, out=tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500  # text, tables and plots, not a blank or error page
    white = max(colours)[0] / (image.width * image.height)
    assert white < 0.95
