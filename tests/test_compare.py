"""`ladder compare` and `ladder leaderboard` on the shared tiny run's real checkpoints.

The synthetic suite with 100 examples is what the run scored on each save, so these tests
read the eval cache and never load a model; they exercise the CLI, the paired bootstrap,
the registry queries and the HTML report.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ladder_cli

from evals.analysis.bootstrap import paired_delta
from evals.runner import evaluate_checkpoint
from launch.cli import main as ladder_main
from training.common.checkpoint_hash import hashed_files
from training.config.compose import compose

SUITE = "eval.max_examples=100"  # the settings the run evaluated with on save: all cache hits


def run_compare(*args, cwd=None):
    proc = ladder_cli("compare", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_compare_marks_the_late_checkpoint_significantly_better(trained_run, tmp_path):
    early, late = trained_run.checkpoints[0], trained_run.checkpoints[-1]
    out = tmp_path / "c.json"
    proc = run_compare("--json", str(out), str(early), str(late), SUITE)
    c = json.loads(out.read_text())
    assert c["baseline"] == "shared@0"
    d = c["entries"][1]["deltas"]["reverse"]
    assert d["significant"] and d["lo"] > 0 and d["delta"] >= 50 and d["n"] == 100
    assert c["entries"][1]["average_delta"]["significant"]
    late_row = next(line for line in proc.stdout.splitlines() if "shared@150" in line)
    assert "▲" in late_row, proc.stdout
    assert "2 of 2 task results came from the eval cache" in proc.stdout
    assert "loading model" not in proc.stderr


def test_a_checkpoint_compared_with_itself_is_no_different(trained_run, tmp_path, capsys):
    late = trained_run.checkpoints[-1]
    out = tmp_path / "self.json"
    assert ladder_main(["compare", "--json", str(out), str(late), str(late), SUITE]) == 0
    d = json.loads(out.read_text())["entries"][1]["deltas"]["reverse"]
    assert d["delta"] == 0 and d["lo"] == 0 and d["hi"] == 0 and not d["significant"]
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("│")]
    assert (
        len(rows) == 2 and "shared@150 (2)" in rows[1] and "·" in rows[1]
    )  # reverse only: the average of one task would repeat it
    assert not any("▲" in r or "▼" in r for r in rows)
    assert "are the same checkpoint (same content hash)" in " ".join(printed.split())


def test_paired_bootstrap_detects_a_small_consistent_gain_and_is_reproducible():
    base = [{"id": str(i), "score": float(i % 2)} for i in range(400)]
    cand = [
        dict(e, score=1.0) if i % 20 == 0 else e for i, e in enumerate(base)
    ]  # 20 of 400 flip 0 -> 1
    d = paired_delta(base, cand)
    assert d.delta == pytest.approx(5.0) and d.significant
    again = paired_delta(base, cand)
    assert (again.lo, again.hi) == (d.lo, d.hi)


def copy_as_run(src: Path, root: Path, run_name: str, **changes) -> Path:
    """Another run's checkpoint with the same weights (so its scores come from the cache) and a
    different config: the cheapest real way to get a sweep of runs to compare."""
    dst = root / run_name / "checkpoints" / src.name
    dst.mkdir(parents=True)
    for f in hashed_files(src):
        shutil.copy(f, dst / f.name)
    cfg = yaml.safe_load((src / "ladder_config.yaml").read_text())
    cfg["trainer"]["run_name"] = run_name
    for key, value in changes.items():
        node, leaf = cfg, key.split(".")
        for part in leaf[:-1]:
            node = node[part]
        node[leaf[-1]] = value
    (dst / "ladder_config.yaml").write_text(yaml.safe_dump(cfg))
    meta = json.loads((src / "ladder_meta.json").read_text())
    (dst / "ladder_meta.json").write_text(json.dumps({**meta, "run_name": run_name}))
    (dst / "COMPLETE").write_text("done\n")
    return dst


@pytest.fixture(scope="module")
def sweep(trained_run):
    """Two more runs beside the shared one (same run root, so the same registry and cache)."""
    root = Path(trained_run.run_dir).parent
    cfg = compose([SUITE])
    a = copy_as_run(
        trained_run.checkpoints[0], root, "lrs-a", **{"sweep.name": "lrs", "optim.lr": 0.003}
    )
    b = copy_as_run(
        trained_run.checkpoints[-1],
        root,
        "lrs-b",
        # a long value, as a real path is: the config-differences table must not overflow
        **{"sweep.name": "lrs", "optim.lr": 0.001, "tracker.project": "p-" + "x" * 180},
    )
    for ckpt in (a, b):  # runs register their checkpoints as they evaluate them
        evaluate_checkpoint(ckpt, cfg.eval)
    shutil.copy(
        Path(trained_run.run_dir) / "metrics.jsonl", root / "lrs-b" / "metrics.jsonl"
    )  # its loss curve
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    """`ladder compare sweep:lrs --html`: the sweep's two runs, their plots and config differences."""
    html_file = tmp_path_factory.mktemp("report") / "report.html"
    assert (
        ladder_main(
            ["compare", "--html", str(html_file), "sweep:lrs", SUITE, f"trainer.run_root={sweep}"]
        )
        == 0
    )
    return html_file


def test_compare_a_sweep_writes_an_offline_html_report(report):
    html = report.read_text()
    assert "lrs-a@0" in html and "lrs-b@150" in html
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 2 and all(
        base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs
    )  # loss, task
    assert not re.search(r'(src|href)="https?://', html)  # one file, nothing fetched
    for title in (
        "reverse/exact_match",
        "Config differences",
        "optim.lr",
        "trainer.run_name",
        "SFT runs: loss",
    ):
        assert title in html, title
    # each point labelled by what it tried, each key with its node
    assert "<td>optim.lr=0.003</td>" in html and "<td>optim.lr=0.001</td>" in html
    assert f"<td>p-{'x' * 180}</td>" in html  # in the config differences, wrapped
    # lrs-a is the untrained step 0 and lrs-b the trained step 150: examples flip from wrong to right
    flipped = re.search(
        r"lrs-b@150 against lrs-a@0: (\d+) example\(s\) flipped better, (\d+) worse", html
    )
    assert flipped and int(flipped.group(1)) > 0, html[-3000:]


def test_leaderboard_ranks_and_filters(sweep, tmp_path, capsys):
    out = tmp_path / "lb.json"
    # --all: lrs-a stands for a run by a copy of the shared run's step 0, hidden by default
    args = [SUITE, f"trainer.run_root={sweep}", "--json", str(out), "--all"]
    assert ladder_main(["leaderboard", "--sweep", "lrs", *args]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["run_name"], r["step"]) for r in rows] == [("lrs-b", 150), ("lrs-a", 0)]
    assert rows[0]["scores"]["reverse"] > rows[1]["scores"]["reverse"]
    assert "lrs-b" in capsys.readouterr().out
    assert (
        ladder_main(["leaderboard", "--sweep", "lrs", "--lr", "0.001", "--rung", "tiny", *args])
        == 0
    )
    assert [r["run_name"] for r in json.loads(out.read_text())["rows"]] == ["lrs-b"]


def test_leaderboard_marks_checkpoints_pruned_from_disk(sweep, tmp_path, capsys, trained_run):
    gone = copy_as_run(trained_run.checkpoints[0], sweep, "pruned-run", **{"sweep.name": "pruned"})
    evaluate_checkpoint(gone, compose([SUITE]).eval)
    shutil.rmtree(gone)  # as keep_last would
    out = tmp_path / "lb.json"
    assert (
        ladder_main(
            [
                "leaderboard",
                "--all",  # a copy of step 0: hidden by default
                "--sweep",
                "pruned",
                SUITE,
                f"trainer.run_root={sweep}",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    [row] = json.loads(out.read_text())["rows"]
    assert row["run_name"] == "pruned-run" and row["on_disk"] is False
    assert "(pruned from disk)" in capsys.readouterr().out


def test_compare_and_leaderboard_errors_are_clear(sweep, capsys):
    assert ladder_main(["compare", "sweep:nope", f"trainer.run_root={sweep}"]) == 2
    err = capsys.readouterr().err
    assert "sweep 'nope' has no checkpoints" in err and "'lrs'" in err
    assert ladder_main(["leaderboard", "--recipe", "dpo", f"trainer.run_root={sweep}"]) == 2
    err = capsys.readouterr().err
    assert (
        "no checkpoints in the registry" in err and "match --recipe dpo" in err and "{" not in err
    )
    assert ladder_main(["leaderboard", "--sweep", "nope", f"trainer.run_root={sweep}"]) == 2
    assert "match --sweep nope; the sweeps it knows: lrs" in capsys.readouterr().err
    assert ladder_main(["compare", str(sweep / "lrs-a" / "checkpoints" / "step_000123")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs Debian's chromium package (apt install chromium)",
)
def test_html_report_renders_in_headless_chromium(report, tmp_path):
    html_file = report
    shot = tmp_path / "shot.png"
    chrome = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    subprocess.run(
        [*chrome, f"--screenshot={shot}", "--window-size=1300,1400", html_file.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    # the page fits a 1,400-pixel window: a script added to a copy reports the widest element
    probe = tmp_path / "probe.html"
    probe.write_text(
        html_file.read_text().replace(
            "</body>",
            "<script>document.body.dataset.overflow = String(document.documentElement.scrollWidth"
            " > window.innerWidth)</script></body>",
        )
    )
    probed = subprocess.run(
        [*chrome, "--window-size=1400,900", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-overflow="false"' in probed, re.findall(r"data-overflow=\"\w+\"", probed)
    dom = subprocess.run(
        [*chrome, "--dump-dom", html_file.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for title in (
        "Ladder comparison: eval suite synthetic",
        "reverse/exact_match vs training step, GPU-hours",
        "Config differences",
    ):
        assert title in dom, title
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1300, 1400)
    # The plot region must hold many colours (lines, text, markers), not a blank page.
    colours = img.crop((0, 300, 1300, 1400)).getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
