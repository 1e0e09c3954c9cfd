"""The report in three forms: a table for the terminal, a JSON file, a PNG plot.

Files are written to a temporary name and renamed, so a reader never sees
half of one.
"""

import os
import tempfile
from pathlib import Path

from loraplex.evaluate.results import EvalReport, Figure
from loraplex.evaluate.scores import METRICS

DIGITS = {"loss": 3, "exact": 3, "rouge-l": 3, "bleu-4": 1, "judge": 3}


def format_figure(metric: str, figure: Figure | None) -> str:
    if figure is None or figure.value is None:
        return "-" if figure is None or not figure.failed else f"failed {figure.failed}"
    d = DIGITS.get(metric, 3)
    text = f"{figure.value:.{d}f} [{figure.low:.{d}f}, {figure.high:.{d}f}]"
    return text + (f" ({figure.failed} failed)" if figure.failed else "")


def table(report: EvalReport) -> str:
    """One row per model: n, each metric with its 95% interval, answers/s."""
    header = ["model", "n", *report.metrics, "answers/s"]
    rows = [header]
    for m in report.models:
        n = max((f.n for f in [*m.metrics.values(), m.judge] if f), default=0)
        cells = [m.served_as if m.served_as != m.model else m.model, str(n)]
        cells += [format_figure(metric, m.figure(metric)) for metric in report.metrics]
        cells.append("-" if m.answers_per_s is None else f"{m.answers_per_s:.2f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += _judge_lines(report)
    if report.partial:
        lines.append("partial: the run was interrupted; figures cover what was answered")
    return "\n".join(lines)


def _judge_lines(report: EvalReport) -> list[str]:
    lines = []
    for m in report.models:
        j = m.judge
        if j is None:
            continue
        line = f"judge: {m.model} vs {j.against}: {j.win} win, {j.tie} tie, {j.loss} loss"
        line += f", {j.invalid} invalid, {j.failed} failed"
        if j.invalid_samples:
            line += f" (invalid verdicts, e.g. {j.invalid_samples[0]!r})"
        lines.append(line)
    return lines


def write_atomically(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(report: EvalReport, path: Path) -> None:
    write_atomically(path, report.model_dump_json(indent=2).encode() + b"\n")


def write_plot(report: EvalReport, path: Path) -> None:
    """One panel per metric: each model's value with its 95% interval."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report.metrics
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.2 * len(metrics), 0.6 * len(report.models) + 1.6)
    )
    axes = [axes] if len(metrics) == 1 else list(axes)
    names = [m.served_as for m in report.models]
    for ax, metric in zip(axes, metrics, strict=True):
        figures = [m.figure(metric) for m in report.models]
        for y, f in enumerate(figures):
            if f is None or f.value is None:
                continue
            ax.errorbar(
                f.value, y, xerr=[[f.value - f.low], [f.high - f.value]], fmt="o", capsize=4
            )
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.set_ylim(-0.5, len(names) - 0.5)
        ax.invert_yaxis()
        better = "higher" if METRICS[metric].higher_is_better else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{report.data.path} (n={report.data.examples}), 95% intervals", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())
