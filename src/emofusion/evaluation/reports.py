"""Terminal reports: the metrics table printed after a run, with the trivial baselines beside the model.

Each model value is compared with the best closed-form baseline of the same split on the same metric
(:mod:`emofusion.evaluation.baselines`); a value that does not beat it is marked ``†`` and the caption says
so. The caption also names the validation metric that chose the checkpoint.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from emofusion.evaluation.baselines import beats_baselines, best_baseline

HEADLINE = {
    "emotion_intensity": ["mae", "mse", "mae_sum", "mse_sum", "pearson_r", "acc2", "acc4", "wa", "f1_weighted", "acc6"],
    "sentiment": ["mae", "pearson_r", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5"],
    "classification": ["accuracy", "f1_macro", "f1_weighted"],
    "multilabel_binary": ["mean_acc", "mean_f1"],
    "multi_regression": ["mae", "pearson_r"],
}
FLAG = "†"


def headline_metrics(task_kind: str, metrics: dict) -> list[str]:
    names = [n for n in HEADLINE.get(task_kind, []) if n in metrics]
    return names or sorted(metrics)[:8]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


def flagged(metrics: dict[str, dict], baselines: dict[str, dict] | None, names) -> list[tuple[str, str, float, str, float]]:
    """(split, metric, model value, best baseline, its value) for every value that does not beat the best
    trivial baseline of its split."""
    out = []
    for split, values in metrics.items():
        base = (baselines or {}).get(split)
        if not base:
            continue
        for name in names:
            if name not in values:
                continue
            verdict = beats_baselines(values[name], base, name)
            if verdict is False:
                best = best_baseline(base, name)
                out.append((split, name, values[name], best[0], best[1]))
    return out


def metrics_table(
    metrics: dict[str, dict], task_kind: str, title: str = "metrics", baselines: dict | None = None,
    info: dict | None = None,
) -> Table:
    splits = [s for s in ("val", "test") if s in metrics] or list(metrics)
    names = headline_metrics(task_kind, metrics[splits[0]])
    monitor = (info or {}).get("monitor")
    if monitor and monitor not in names and monitor in metrics[splits[0]]:
        names = [monitor, *names]
    baselines = baselines or {}
    shown_split = splits[-1]  # baselines of the last split (test) beside the model
    base_names = list(baselines.get(shown_split, {}))
    bad = {(s, n) for s, n, *_ in flagged({s: metrics[s] for s in splits}, baselines, names)}
    table = Table(title=title)
    table.add_column("metric")
    for s in splits:
        table.add_column(s, justify="right")
    for b in base_names:
        table.add_column(b, justify="right", style="dim")
    for name in names:
        label = f"{name} *" if name == monitor else name
        cells = []
        for s in splits:
            text = _fmt(metrics[s].get(name, float("nan")))
            cells.append(f"{text} {FLAG}" if (s, name) in bad else text)
        cells += [_fmt(baselines[shown_split][b].get(name)) for b in base_names]
        table.add_row(label, *cells)
    table.caption = "\n".join(caption_lines(metrics, baselines, names, info))
    return table


def caption_lines(metrics, baselines, names, info) -> list[str]:
    lines = []
    info = info or {}
    if info.get("monitor"):
        where = f" at step {info['best_step']}" if info.get("best_step") is not None else ""
        trained = f" ({info['steps_trained']} steps trained" if info.get("steps_trained") is not None else ""
        if trained:
            trained += ", stopped early)" if info.get("stopped_early") else ", full budget)"
        lines.append(f"* checkpoint chosen by val/{info['monitor']} ({info.get('monitor_mode', 'min')}){where}"
                     f"{trained}")
    if baselines:
        shown = ([s for s in ("val", "test") if s in metrics] or list(metrics))[-1]
        lines.append(f"dim columns: trivial baselines fitted on the train labels, scored on {shown} with the same "
                     "metric code")
    splits = [s for s in ("val", "test") if s in metrics] or list(metrics)
    failures = flagged({s: metrics[s] for s in splits}, baselines, names)
    for split, name, value, base, base_value in failures:
        if split == splits[-1] or name == info.get("monitor"):
            lines.append(f"{FLAG} {split} {name} {_fmt(value)} does not beat the trivial baseline {base} "
                         f"({_fmt(base_value)})")
    return lines


def print_metrics(
    metrics: dict[str, dict], task_kind: str, title: str = "metrics", console: Console | None = None,
    baselines: dict | None = None, info: dict | None = None,
):
    (console or Console()).print(metrics_table(metrics, task_kind, title, baselines, info))
