"""The HTML report of `ladder compare --html report.html`: one offline file, plots inlined.

    ladder compare runs/a runs/b --html report.html
    write_report(comparison, eval_cfg, registry, "report.html")

It holds the comparison table (scores, deltas, 95% CIs, significance), then per task one
figure with three plots: the score of every registered checkpoint of the compared runs
against training step (a sweep point's seeds as a band of their seed sd: step_curves) and against
GPU-hours (heartbeat device-hours at that step, see
evals/store/registry.py), and the project's score over time (every checkpoint in the registry
scored with the same settings, by save time, with the best-so-far line), the task settings
(generation, prompt format), and the examples that flipped between the baseline and each
candidate. Also: each checkpoint labelled with the settings its run tried (`lr=0.001`), the
training curves of the compared runs, one figure per recipe with the metrics the recipe declares
(SFT's loss, DPO's margin and accuracy, GRPO's reward) and the held-out loss, and the config keys
on which they differ.
PNGs are base64 data URIs, so the file needs no network and no other file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from evals.analysis.compare import Comparison, delta_text, mark, run_dirs
from evals.analysis.seed_noise import point_of, seed_std
from evals.store.cache import task_specs
from evals.store.registry import Registry, averaged_from

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.avg td { font-weight: bold; border-top: 2px solid #888; }
.up { color: #067d17; font-weight: bold; } .down { color: #b00020; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; }
.scroll { overflow-x: auto; max-width: 100%; }
td { overflow-wrap: anywhere; max-width: 36em; }
code, pre { background: #f6f6f6; font-size: 12px; }
"""


def _series(registry: Registry, settings_key: str, rows: list[dict]) -> list[tuple[dict, float]]:
    out = []
    for r in rows:
        res = registry.results(r["content_hash"], [settings_key])
        if res:
            out.append((r, res[0]["score"]))
    return out


def task_figure(
    task: str, metric: str, settings_key: str, c: Comparison, registry: Registry
) -> str:
    """One PNG (base64) with the three plots of a task."""
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax_step, ax_hours, ax_time = axes
    runs, averages = [], []
    for run_dir in run_dirs(c):
        rows = registry.checkpoints(run_dir=str(run_dir))
        pts = _series(registry, settings_key, [r for r in rows if not averaged_from(r)])
        averages += _series(registry, settings_key, [r for r in rows if averaged_from(r)])
        if not pts:
            continue
        pts.sort(key=lambda p: p[0]["step"] or 0)
        runs.append(pts)
        label = _plain(pts[0][0]["run_name"] or run_dir.name)
        hrs = [(r["device_hours"], s) for r, s in pts if r["device_hours"] is not None]
        if hrs:
            ax_hours.plot([h for h, _ in hrs], [s for _, s in hrs], marker="o", label=label)
    step_curves(ax_step, runs, averages)
    for e in c.entries:  # the compared checkpoints themselves, ringed
        ax_step.scatter(
            [e.result["step"]],
            [e.result["tasks"][task]["score"]],
            s=140,
            facecolors="none",
            edgecolors="black",
            zorder=5,
        )
    everything = [
        (r, s) for r, s in _series(registry, settings_key, registry.checkpoints()) if r["saved_at"]
    ]
    everything.sort(key=lambda p: p[0]["saved_at"])
    if everything:
        times = [datetime.strptime(r["saved_at"], "%Y-%m-%dT%H:%M:%SZ") for r, _ in everything]
        scores = [s for _, s in everything]
        best = [max(scores[: i + 1]) for i in range(len(scores))]
        ax_time.scatter(times, scores, s=18, alpha=0.6, label="checkpoints")
        ax_time.step(times, best, where="post", color="black", label="best so far")
        ax_time.tick_params(
            axis="x", labelrotation=20
        )  # dates are long; the other axes keep theirs
    titles = [
        f"{task}/{metric} vs training step",
        f"{task}/{metric} vs GPU-hours",
        f"project: {task}/{metric} over time",
    ]
    xlabels = ["step", "GPU-hours (device-hours)", "checkpoint saved at (UTC)"]
    for ax, title, xlabel in zip(axes, titles, xlabels):
        _label(ax, title, xlabel, metric)
    return _png(fig)


Series = list[tuple[dict, float]]  # one run's (registry row, score) by step


def seed_band(members: list[Series]) -> list[tuple[int, float, float, int]]:
    """(step, mean, seed sd, seeds) at each step that two or more of a point's seeds scored."""
    by_step: dict[int, list[float]] = {}
    for pts in members:
        for r, s in pts:
            if r["step"] is not None:
                by_step.setdefault(int(r["step"]), []).append(s)
    return [
        (step, float(np.mean(v)), seed_std(v), len(v))
        for step, v in sorted(by_step.items())
        if len(v) > 1
    ]


def step_curves(ax, runs: list[Series], averages: Series = ()) -> None:
    """Score against step: a run per line, except a sweep point with several seeds (sweep.seeds),
    drawn as its mean over seeds in a band of one seed standard deviation either side
    (evals/analysis/seed_noise.py), its seeds faint inside it; an averaged checkpoint
    (trainer.average_last, `ladder average`) is a star at its last averaged step."""
    points: dict[str, list[Series]] = {}
    for pts in runs:
        r = pts[0][0]
        points.setdefault(point_of(r.get("config_json"), r["run_name"]), []).append(pts)
    for point, members in points.items():
        band = seed_band(members) if len(members) > 1 else []
        if not band:
            for pts in members:
                label = _plain(pts[0][0]["run_name"] or point)
                ax.plot([r["step"] for r, _ in pts], [s for _, s in pts], marker="o", label=label)
            continue
        steps, mean, sd = ([b[i] for b in band] for i in range(3))
        (line,) = ax.plot(
            steps, mean, marker="o", label=f"{_plain(point)}: mean of {len(members)} seeds"
        )
        lo, hi = [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, label="± 1 seed sd")
        for pts in members:
            ax.plot(
                [r["step"] for r, _ in pts],
                [s for _, s in pts],
                color=line.get_color(),
                alpha=0.35,
                linewidth=0.8,
            )
    for r, s in averages:
        n = len(averaged_from(r))
        label = f"{_plain(r['run_name'] or '?')}: average of {n} checkpoints"
        ax.scatter(
            [r["step"]], [s], marker="*", s=160, c="gold", edgecolors="black", zorder=6, label=label
        )


def _label(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _png(fig) -> str:
    """The figure as a base64 PNG for a data URI; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(c: Comparison) -> tuple[list[str], list[dict]]:
    """The config keys whose values differ between the compared checkpoints' runs."""
    flats = []
    for e in c.entries:
        f = Path(e.checkpoint) / "ladder_config.yaml"
        flats.append(_flatten(OmegaConf.to_container(OmegaConf.load(f))) if f.exists() else {})
    keys = sorted({k for f in flats for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    return differ, flats


def _comparison_table(c: Comparison) -> str:
    esc = html.escape
    head = "".join(
        f"<th>{esc(e.label)}{' (baseline)' if i == c.baseline else ''}</th>"
        + ("" if i == c.baseline else f"<th>Δ {esc(e.label)} [95% CI]</th>")
        for i, e in enumerate(c.entries)
    )
    rows = []
    lines = [
        (
            f"{t}/{c.metrics[t]}",
            [e.scores[t] for e in c.entries],
            [e.deltas[t] for e in c.entries],
            "",
        )
        for t in c.tasks
    ]
    lines.append(
        ("average", [e.average for e in c.entries], [e.average_delta for e in c.entries], "avg")
    )
    for name, scores, deltas, cls in lines:
        cells = ""
        for i, (s, d) in enumerate(zip(scores, deltas)):
            cells += f"<td>{s:.1f}</td>"
            if i != c.baseline:
                css = {"▲": "up", "▼": "down"}.get(mark(d), "")
                cells += f'<td class="{css}">{esc(delta_text(d))}</td>'
        rows.append(f'<tr class="{cls}"><td>{esc(name)}</td>{cells}</tr>')
    return f"<table><tr><th>task</th>{head}</tr>{''.join(rows)}</table>"


# Keys that differ between any two runs but say nothing about what was tried.
NOT_SETTINGS = (
    "trainer.run_name",
    "trainer.run_root",
    "trainer.resume",
    "sweep.",
    "tracker.",
    "ledger.",
    "registry.",
    "launcher.",
    "eval.",
    "trainer.checkpoint_url",
    "trainer.log_every",
)
MAX_FLIPS = 40  # example rows shown per task and checkpoint; the counts are always complete


def swept_settings(c: Comparison) -> list[str]:
    """Per entry, the settings on which the compared runs differ ("optim.lr=0.001, seed=2"): a
    sweep point's name says nothing, its settings say what it tried. Keys keep their node
    (`data.name=reverse`, not `name=reverse`): a bare leaf is ambiguous across nodes."""
    differ, flats = config_diff(c)
    keys = [k for k in differ if not k.startswith(NOT_SETTINGS)]
    return [", ".join(f"{k}={f.get(k, '—')}" for k in keys) for f in flats]


def _recipe(run_dir: Path) -> tuple[str, str]:
    """(recipe name, loss) a run trained with, from its config.yaml; ("sft", "sft") if unknown."""
    f = Path(run_dir) / "config.yaml"
    try:
        cfg = OmegaConf.load(f) if f.exists() else None
        name, loss = OmegaConf.select(cfg, "recipe.name"), OmegaConf.select(cfg, "recipe.loss")
    except Exception:  # an unreadable config: the run still gets its curves
        name = loss = None
    loss = str(loss) if loss else "sft"
    return (str(name) if name else loss), loss


def _heldout(run_dir: Path) -> list[tuple[int, float]]:
    held = []
    for f in sorted(Path(run_dir).glob("checkpoints/step_*/eval/*.json")):
        tasks = json.loads(f.read_text()).get("tasks", {})
        losses = [t["heldout_loss"] for t in tasks.values() if t.get("heldout_loss") is not None]
        if losses:
            held.append((int(f.parent.parent.name.split("_")[1]), losses[0]))
    return sorted(held)


def _plain(label: str) -> str:
    """A folder name as a plot label: a compared run's folder is not always ours, and matplotlib
    reads `$...$` as mathtext (and raises on a bad one), as budget.plot_report escapes too."""
    return label.replace("$", r"\$")


def training_figures(runs: list[Path]) -> list[tuple[str, str]]:
    """Per recipe among the runs, one PNG of its headline metrics against step (metrics.jsonl),
    and the held-out loss where the checkpoints have one: SFT's loss, DPO's loss, margin and
    accuracy, GRPO's reward, KL, length and generation share. A DPO or GRPO loss never shares an
    axis with SFT's, which measures something else. Each recipe declares its headline metrics
    (training/recipes/headline.py); this draws what it declares. Returns (title, base64 PNG)."""
    import matplotlib

    from training.recipes.losses import loss_spec
    from training.recipes.registry import recipe_class
    from training.run.metrics import read_metrics

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[tuple[Path, str, list[dict]]]] = {}
    names: dict[str, str] = {}
    for run_dir in runs:
        name, loss = _recipe(run_dir)
        try:
            family = loss_spec(loss).family
        except Exception:  # a loss this version does not know: draw it as its own recipe
            family = loss
        metrics = Path(run_dir) / "metrics.jsonl"
        rows = read_metrics(metrics) if metrics.exists() else []
        families.setdefault(family, []).append((Path(run_dir), loss, rows))
        names.setdefault(family, name)
    out = []
    for family, members in families.items():
        try:
            headline = recipe_class(members[0][1]).headline
        except Exception:
            headline = recipe_class("sft").headline
        panels = [
            (h, f"{h.label} vs step ({h.key})", h.key)
            for h in headline
            if any(h.read(r) is not None for _, _, rows in members for r in rows)
        ]
        held = [(run_dir, _heldout(run_dir)) for run_dir, _, _ in members]
        n = len(panels) + (1 if any(pts for _, pts in held) else 0)
        if n == 0:
            continue
        fig, axes = plt.subplots(1, n, figsize=(max(6, 4.2 * n), 3.8), squeeze=False)
        for ax, (h, title, ylabel) in zip(axes[0], panels):
            for run_dir, _, rows in members:
                pts = [(r["step"], h.read(r)) for r in rows if h.read(r) is not None]
                if pts:
                    ax.plot([s for s, _ in pts], [v for _, v in pts], label=_plain(run_dir.name))
            _label(ax, title, "step", ylabel)
        if len(panels) < n:
            ax = axes[0][-1]
            for run_dir, pts in held:
                if pts:
                    ax.plot(
                        [s for s, _ in pts],
                        [v for _, v in pts],
                        marker="o",
                        label=_plain(run_dir.name),
                    )
            _label(ax, "held-out loss vs step (checkpoints on disk)", "step", "loss per token")
        title = f"{names[family].upper()} runs: {', '.join(h.label for h, _, _ in panels)}"
        out.append((title, _png(fig)))
    return out


def flips(c: Comparison, task: str) -> list[tuple[str, list[dict], int, int]]:
    """Per candidate: (label, the examples whose score changed against the baseline, how many
    improved, how many regressed)."""
    esc_base = {e["id"]: e for e in c.entries[c.baseline].result["tasks"][task]["examples"]}
    out = []
    for i, e in enumerate(c.entries):
        if i == c.baseline:
            continue
        changed = []
        for ex in e.result["tasks"][task]["examples"]:
            b = esc_base.get(ex["id"])
            if b is not None and b["score"] != ex["score"]:
                changed.append(
                    {
                        "id": ex["id"],
                        "baseline": b["score"],
                        "candidate": ex["score"],
                        "target": ex.get("target"),
                        "baseline_output": b.get("output"),
                        "candidate_output": ex.get("output"),
                    }
                )
        up = sum(x["candidate"] > x["baseline"] for x in changed)
        out.append((e.label, changed, up, len(changed) - up))
    return out


def _flips_html(c: Comparison, task: str) -> str:
    esc = html.escape
    parts = []
    base = c.entries[c.baseline].label
    for label, changed, up, down in flips(c, task):
        parts.append(
            f"<h3>{esc(label)} against {esc(base)}: {up} example(s) flipped better, {down} worse</h3>"
        )
        if not changed:
            continue
        rows = "".join(
            f"<tr><td>{esc(str(x['id']))}</td><td>{x['baseline']:g} → {x['candidate']:g}</td>"
            f"<td>{esc(str(x['target'] if x['target'] is not None else ''))}</td>"
            f"<td>{esc(str(x['baseline_output'] if x['baseline_output'] is not None else ''))}</td>"
            f"<td>{esc(str(x['candidate_output'] if x['candidate_output'] is not None else ''))}</td></tr>"
            for x in changed[:MAX_FLIPS]
        )
        more = f"<p>… and {len(changed) - MAX_FLIPS} more.</p>" if len(changed) > MAX_FLIPS else ""
        parts.append(
            "<table><tr><th>example</th><th>score</th><th>target</th><th>baseline output</th>"
            f"<th>candidate output</th></tr>{rows}</table>{more}"
        )
    return "".join(parts)


def write_report(c: Comparison, eval_cfg: DictConfig, registry: Registry, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(c, eval_cfg, registry))
    return path


def report_html(c: Comparison, eval_cfg: DictConfig, registry: Registry) -> str:
    """The report as one HTML page (figures inline), for `ladder compare --html`."""
    esc = html.escape
    keys = {s.name: s.settings_key for s in task_specs(eval_cfg)}
    base = c.entries[c.baseline]
    parts = [
        f"<h1>Ladder comparison: eval suite {esc(c.suite)}</h1>",
        f"<p>Baseline <b>{esc(base.label)}</b>. Deltas are in points with 95% confidence intervals from a "
        "paired bootstrap over examples (2000 resamples, seed 0); ▲/▼ mark intervals that exclude 0. "
        "Against step, a sweep point with several seeds is drawn as its mean over seeds in a band "
        "of ± one seed standard deviation; ★ marks an averaged checkpoint. "
        f"Registry: <code>{esc(str(registry.path))}</code>. Generated {datetime.now():%Y-%m-%d %H:%M}.</p>",
        "<h2>Scores</h2>",
        _comparison_table(c),
        "<h2>Checkpoints</h2><div class='scroll'><table><tr><th>label</th>"
        "<th>settings that differ</th><th>checkpoint</th><th>step</th><th>content hash</th></tr>"
        + "".join(
            f"<tr><td>{esc(e.label)}</td><td>{esc(setting)}</td><td>{esc(str(e.checkpoint))}</td>"
            f"<td>{e.result['step']}</td><td><code>{e.result['content_hash'][:16]}</code></td></tr>"
            for e, setting in zip(c.entries, swept_settings(c))
        )
        + "</table></div>",
    ]
    figures = training_figures(run_dirs(c))
    if figures:
        parts.append("<h2>Training</h2>")
    for title, png in figures:
        parts.append(
            f'<h3>{esc(title)}</h3><img alt="{esc(title)}: training metrics and held-out loss vs '
            f'step" src="data:image/png;base64,{png}">'
        )
    for task in c.tasks:
        metric = c.metrics[task]
        png = task_figure(task, metric, keys[task], c, registry)
        info = base.result["tasks"][task]
        parts.append(
            f"<h2>{esc(task)}/{esc(metric)}</h2>"
            f'<img alt="{esc(task)}/{esc(metric)} vs training step, GPU-hours and time" '
            f'src="data:image/png;base64,{png}">'
            f"<p>{info['n']} examples, task version {esc(str(info.get('task_version')))}; generation "
            f"<code>{esc(json.dumps(info.get('generation')))}</code>; prompt format "
            f"<code>{esc(json.dumps(info.get('prompt_format')))}</code></p>" + _flips_html(c, task)
        )
    differ, flats = config_diff(c)
    parts.append("<h2>Config differences</h2>")
    if differ:
        head = "".join(f"<th>{esc(e.label)}</th>" for e in c.entries)
        rows = "".join(
            f"<tr><td>{esc(k)}</td>"
            + "".join(f"<td>{esc(str(f.get(k, '—')))}</td>" for f in flats)
            + "</tr>"
            for k in differ
        )
        parts.append(f"<div class='scroll'><table><tr><th>key</th>{head}</tr>{rows}</table></div>")
    else:
        parts.append("<p>The compared checkpoints come from runs with identical configs.</p>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ladder comparison: {esc(c.suite)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
