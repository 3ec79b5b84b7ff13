"""Results of self-improvement runs: method entries per round and a plot.

`round_methods(metrics, prefix)` turns `run_self_improvement`'s per-round
metrics into `results` method entries named '<prefix>round<r>/<eval>'
(eval: 'greedy', 'mcts'); `plot_rounds` draws accuracy (95% interval bars)
against the round, one line per run and evaluation.
"""

from __future__ import annotations

from typing import Sequence


def round_methods(metrics: Sequence[dict], prefix: str = "") -> dict:
    """{'<prefix>round<r>/<eval>': summary} of every evaluated round."""
    out = {}
    for record in metrics:
        for name, summary in record.get("eval", {}).items():
            out[f"{prefix}round{record['round']}/{name}"] = summary
    return out


def round_table(methods: dict, lines: dict[str, str]) -> str:
    """A markdown table: one row per round, one column per line
    (label -> method prefix), accuracy with its 95% interval."""
    rounds = sorted({int(k.split("round")[1].split("/")[0])
                     for k in methods})
    header = "| round | " + " | ".join(lines) + " |"
    rows = [header, "| --- |" + " ---: |" * len(lines)]
    for r in rounds:
        cells = []
        for prefix in lines.values():
            m = methods.get(prefix.format(r=r))
            if m is None:
                cells.append("")
                continue
            lo, hi = m["accuracy_ci95"]
            cells.append(f"{100 * m['accuracy']:.1f}% ({100 * lo:.1f}-"
                         f"{100 * hi:.1f}), n={m['n']}")
        rows.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_rounds(methods: dict, path: str, lines: dict[str, str], *,
                title: str | None = None) -> None:
    """A PNG of accuracy against round.

    Args:
      methods: results method entries (`round_methods`).
      path: the PNG.
      lines: label -> a method-name pattern with '{r}' for the round
        (e.g. 'round{r}/greedy').
      title: the plot's title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pattern in lines.items():
        points = []
        for r in range(100):
            m = methods.get(pattern.format(r=r))
            if m is not None:
                points.append((r, m))
        if not points:
            continue
        x = [r for r, _ in points]
        y = [100 * m["accuracy"] for _, m in points]
        err = [[100 * (m["accuracy"] - m["accuracy_ci95"][0])
                for _, m in points],
               [100 * (m["accuracy_ci95"][1] - m["accuracy"])
                for _, m in points]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("held-out accuracy (%), 95% interval")
    ax.set_xticks(sorted({int(k.split("round")[1].split("/")[0])
                          for k in methods}))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
