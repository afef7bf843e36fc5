"""Terminal reports: the metrics table printed after a run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

HEADLINE = {
    "emotion_intensity": ["mae", "mse", "mae_sum", "mse_sum", "pearson_r", "acc2", "acc4", "wa", "f1_weighted", "acc6"],
    "sentiment": ["mae", "pearson_r", "acc2", "f1", "acc2_has0", "acc7"],
    "classification": ["accuracy", "f1_macro", "f1_weighted"],
    "multilabel_binary": ["mean_acc", "mean_f1"],
    "multi_regression": ["mae", "pearson_r"],
}


def headline_metrics(task_kind: str, metrics: dict) -> list[str]:
    names = [n for n in HEADLINE.get(task_kind, []) if n in metrics]
    return names or sorted(metrics)[:8]


def metrics_table(metrics: dict[str, dict], task_kind: str, title: str = "metrics") -> Table:
    splits = [s for s in ("val", "test") if s in metrics]
    table = Table(title=title)
    table.add_column("metric")
    for s in splits:
        table.add_column(s, justify="right")
    for name in headline_metrics(task_kind, metrics[splits[0]]):
        table.add_row(name, *(f"{metrics[s].get(name, float('nan')):.4f}" for s in splits))
    return table


def print_metrics(metrics: dict[str, dict], task_kind: str, title: str = "metrics", console: Console | None = None):
    (console or Console()).print(metrics_table(metrics, task_kind, title))
