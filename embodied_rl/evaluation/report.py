"""The pipeline's report: ``report.md`` and a self-contained ``report.html``.

:func:`write_pipeline_report` reads what the pipeline's stages left in a run directory
(``config.json``, ``<stage>/stage.json``, training ``metrics.csv`` files, transfer results
``transfer/<policy>/transfer.json`` with their sensitivity plots, rollout GIFs) and writes
into ``<run>/report/``:

- ``learning_curves.png``: BC and IQL losses and PPO's return and KL over training;
- ``success.png``: success rate of every policy on every domain, with 95% Wilson intervals;
- ``report.md``: the tables, linking the figures;
- ``report.html``: one file, every figure and GIF embedded as a data URI, no scripts and no
  network access, so it opens anywhere and can be attached to a message.

Metrics are read from the one layout every trainer writes (``step,name,value,wall_s``) and
from the wide PPO layout (``step,<metric>,...``) of runs made before it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from embodied_rl.utils.io import atomic_path, write_text_atomic

POLICY_STAGES = ("bc", "iql", "ppo")
STAGE_TITLES = {"bc": "BC", "iql": "IQL (offline)", "ppo": "PPO fine-tuned"}


def read_metrics(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (steps, values)}`` from a ``metrics.csv`` in either layout."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if header[:3] == ["step", "name", "value"]:
        for row in body:
            if len(row) >= 3 and row[2] not in ("", "nan"):
                series[row[1]].append((float(row[0]), float(row[2])))
    else:
        for row in body:
            for name, value in zip(header[1:], row[1:], strict=False):
                try:
                    series[name].append((float(row[0]), float(value)))
                except ValueError:
                    continue
    return {
        name: (np.array([s for s, _ in points]), np.array([v for _, v in points]))
        for name, points in series.items()
        if points
    }


def _plot_learning_curves(run: Path, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("bc", ("train/bc_loss", "train/token_loss"), "BC loss"),
        ("iql", ("train/actor_loss", "train/value_loss", "train/critic_loss"), "IQL losses"),
        ("ppo", ("episode_return",), "PPO episode return"),
        ("ppo", ("ref_kl", "approx_kl"), "PPO KL to the reference"),
    ]
    drawn = []
    for stage, names, title in panels:
        metrics = read_metrics(run / stage / "metrics.csv")
        found = [
            (n, metrics[n]) for n in names if n in metrics and np.isfinite(metrics[n][1]).any()
        ]
        if title.startswith("PPO KL"):
            found = found[:1]
        if found:
            drawn.append((title, found))
    if not drawn:
        return None
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.2 * len(drawn), 3.2), squeeze=False)
    for ax, (title, found) in zip(axes[0], drawn, strict=True):
        for name, (steps, values) in found:
            ax.plot(steps, values, label=name.split("/")[-1])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(found) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _transfer_results(run: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for stage in POLICY_STAGES:
        path = run / "transfer" / stage / "transfer.json"
        if path.exists():
            out[stage] = json.loads(path.read_text())
    return out


def _domain_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [result["source"], *result["targets"]]


def _plot_success(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        return None
    stages = list(results)
    domains = [r["domain"]["name"] for r in _domain_rows(results[stages[0]])]
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(domains) + 2), 3.4))
    x = np.arange(len(domains))
    for i, stage in enumerate(stages):
        rows = {r["domain"]["name"]: r for r in _domain_rows(results[stage])}
        rates = np.array([rows[d]["success_rate"] if d in rows else np.nan for d in domains])
        low = np.array([rows[d]["ci_low"] if d in rows else np.nan for d in domains])
        high = np.array([rows[d]["ci_high"] if d in rows else np.nan for d in domains])
        ax.bar(
            x + (i - (len(stages) - 1) / 2) * width, rates, width,
            yerr=[rates - low, high - rates], capsize=3, label=STAGE_TITLES.get(stage, stage),
        )  # fmt: skip
    ax.set_xticks(x, [d if len(d) < 28 else d[:25] + "..." for d in domains], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _success_table(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for stage, result in results.items():
        for r in _domain_rows(result):
            rows.append(
                [
                    STAGE_TITLES.get(stage, stage),
                    r["domain"]["name"],
                    r["domain"]["backend"],
                    str(r["episodes"]),
                    f"{r['success_rate']:.0%}",
                    f"[{r['ci_low']:.0%}, {r['ci_high']:.0%}]",
                    f"{r['mean_return']:.2f}",
                ]
            )
    return rows


SUCCESS_HEADER = ["policy", "domain", "backend", "episodes", "success", "95% CI", "mean return"]


def _stage_rows(run: Path) -> list[list[str]]:
    rows = []
    for stage in ("collect", "bc", "iql", "ppo", "transfer"):
        marker = run / stage / "stage.json"
        if not marker.exists():
            continue
        summary = json.loads(marker.read_text())
        details = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in summary.items()
            if k not in ("stage", "seconds", "path", "policies") and not isinstance(v, list | dict)
        )
        rows.append([stage, f"{summary.get('seconds', 0):.0f}", details])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table (cells escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #1d1f23; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #d0d4da; padding: .3em .7em; text-align: left; }
th { background: #eef1f5; }
img { max-width: 100%; border: 1px solid #e3e6ea; margin: .3em 0; }
img.sweep { max-width: 460px; }
.gifs { display: flex; gap: 1em; flex-wrap: wrap; } .gifs figure { margin: 0; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f5f7fa; padding: .8em; overflow-x: auto; font-size: .8em; }
"""


def html_page(title: str, parts: list[str]) -> str:
    """A self-contained HTML page (the reports' style) around the HTML ``parts``."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def write_pipeline_report(run: str | Path) -> list[Path]:
    """Write ``<run>/report/report.md``, ``report.html`` and their figures; returns the paths."""
    run = Path(run)
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    results = _transfer_results(run)
    curves = _plot_learning_curves(run, out / "learning_curves.png")
    success = _plot_success(results, out / "success.png")
    sensitivity = sorted((run / "transfer" / "ppo").glob("sensitivity_*.png"))
    gifs = [p for s in ("bc", "ppo") if (p := run / "transfer" / f"rollouts_{s}.gif").exists()]
    stage_rows, success_rows = _stage_rows(run), _success_table(results)
    task = config.get("task", "?")
    title = f"embodied-rl pipeline report: {task}"

    md = [f"# {title}", ""]
    md += ["## Stages", "", markdown_table(["stage", "seconds", "summary"], stage_rows), ""]
    if curves:
        md += ["## Learning curves", "", f"![learning curves]({curves.name})", ""]
    if success_rows:
        md += ["## Success per stage and domain", "", markdown_table(SUCCESS_HEADER, success_rows)]
        md += ["", f"![success]({success.name})", ""] if success else [""]
    if sensitivity:
        md += ["## Sensitivity of the final policy", ""]
        md += [f"![{p.stem}](../transfer/ppo/{p.name})" for p in sensitivity] + [""]
    if gifs:
        md += ["## Rollouts", ""]
        md += [f"![{p.stem}](../transfer/{p.name})" for p in gifs] + [""]
    md += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    md_path = out / "report.md"
    write_text_atomic(md_path, "\n".join(md))

    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Stages</h2>"]
    parts.append(html_table(["stage", "seconds", "summary"], stage_rows))
    if curves:
        parts += [
            "<h2>Learning curves</h2>",
            f'<img alt="learning curves" src="{_data_uri(curves)}">',
        ]
    if success_rows:
        parts += [
            "<h2>Success per stage and domain</h2>",
            html_table(SUCCESS_HEADER, success_rows),
        ]
        if success:
            parts.append(f'<img alt="success per domain" src="{_data_uri(success)}">')
    if sensitivity:
        parts.append("<h2>Sensitivity of the final policy</h2>")
        parts += [f'<img class="sweep" alt="{p.stem}" src="{_data_uri(p)}">' for p in sensitivity]
    if gifs:
        parts.append('<h2>Rollouts</h2><div class="gifs">')
        for p in gifs:
            stage = p.stem.split("_", 1)[1]
            caption = html.escape(STAGE_TITLES.get(stage, stage))
            parts.append(
                f'<figure><img alt="{p.stem}" src="{_data_uri(p)}"><figcaption>{caption}'
                "</figcaption></figure>"
            )
        parts.append("</div>")
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>"]
    html_path = out / "report.html"
    write_text_atomic(html_path, html_page(title, parts))
    return [md_path, html_path, *(p for p in (curves, success) if p)]
