"""`python -m bench.report [sweep.json] [sitting.json]`: bench/results/report.md and its plots (issue 13.6).

Reads the cost curves (`make bench BENCH_SWEEP=1`, bench/results/sweep.json) and a sitting of `make bench`
(bench/results/latest.json by default), draws with matplotlib (the bench extra, never a runtime dependency):

  plots/cost-curves.png          the four below on one page (the README shows it)
  plots/throughput-size.png      MB/s against line size, one line per path
  plots/cpu-size.png             CPU-s per MB against line size
  plots/throughput-containers.png  MB/s against container count
  plots/cpu-containers.png       CPU-s per million lines against container count

json-file is the reference (black), the floor (a plugin that throws every line away: dockerd's plugin adapter alone)
is drawn dashed. report.md holds the plots, the sitting's table of the short and 100-byte workloads, the sweep's
tables, the latency and the idle cost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PLOTS = RESULTS / "plots"
STYLE = {"json-file": {"color": "black", "linewidth": 2.5, "marker": "o"},
         "floor": {"color": "grey", "linestyle": "--", "marker": "."},
         "fluentd": {"color": "tab:red", "marker": "v"},
         "logbridge": {"color": "tab:blue", "marker": "s"},
         "logbridge+forward": {"color": "tab:green", "marker": "^"},
         "logbridge+loki": {"color": "tab:orange", "marker": "D"},
         "logbridge+es": {"color": "tab:purple", "marker": "P"}}
SIZE_BYTES = {"10 B": 10, "100 B": 100, "1 KB": 1000, "16 KB": 16_384, "40 KB": 40_000, "200 KB": 200_000}
PANELS = [("size", "mb_per_s", "MB/s until every line stored and acked", "throughput-size"),
          ("size", "cpu_per_mb", "CPU-s per MB (plugin + dockerd + receiver)", "cpu-size"),
          ("containers", "mb_per_s", "MB/s until every line stored and acked", "throughput-containers"),
          ("containers", "cpu_per_m", "CPU-s per million lines (plugin + dockerd + receiver)", "cpu-containers")]


def _series(summary: dict, sweep: str, key: str) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for x, by_path in summary.get(sweep, {}).items():
        xv = SIZE_BYTES[x] if sweep == "size" else int(x)
        for path, s in by_path.items():
            if s.get(key):
                xs, ys = out.setdefault(path, ([], []))
                xs.append(xv)
                ys.append(s[key]["median"])
    return out


def _panel(ax, summary: dict, sweep: str, key: str, ylabel: str) -> None:
    for path, (xs, ys) in _series(summary, sweep, key).items():
        ax.plot(xs, ys, label=path, **STYLE.get(path, {}))
    ax.set_xscale("log")
    if key.startswith("cpu"):
        ax.set_yscale("log")
    ax.set_xlabel("line size, bytes" if sweep == "size" else "containers at once")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if sweep == "size":
        ax.set_xticks(list(SIZE_BYTES.values()), list(SIZE_BYTES))
    else:
        ax.set_xticks([1, 10, 100], ["1", "10", "100"])


def plots(sweep: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    summary = sweep["summary"]
    written = []
    for sw, key, ylabel, name in PANELS:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _panel(ax, summary, sw, key, ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOTS / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(PLOTS / f"{name}.png")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, (sw, key, ylabel, _) in zip(axes.flat, PANELS, strict=True):
        _panel(ax, summary, sw, key, ylabel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9)
    fig.suptitle(f"{sweep['sweep_mb']} MB per point, median of {sweep['runs']} rounds; {sweep['git']}", y=0.94,
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(PLOTS / "cost-curves.png", dpi=100)
    plt.close(fig)
    written.insert(0, PLOTS / "cost-curves.png")
    return written


def report(sweep: dict, sitting: dict | None, sweep_md: str, sitting_name: str) -> str:
    from bench import run

    lines = ["# logbridge performance report", "",
             "The cost curves show how each driver's throughput and CPU grow with line size and container count; "
             "every point writes the same bytes. json-file (black) is the reference; `floor` (dashed) is a plugin "
             "that throws every line away, what dockerd's plugin adapter costs by itself: no plugin can beat it.", "",
             "![cost curves](plots/cost-curves.png)", ""]
    for _, _, _, name in PANELS:
        lines.append(f"- [{name}](plots/{name}.png)")
    lines.append("")
    if sitting:
        sitting = dict(sitting, summary=run.summarise(sitting["records"]))  # the columns added since it ran
        sitting["targets"] = run.targets(sitting["summary"])
        md = run.markdown(sitting)
        body = md.split("\n## ", 1)[1] if "\n## " in md else md
        lines += [f"## The committed sitting ({sitting_name}, {sitting['runs']} interleaved rounds)", "",
                  md.split("\n## ", 1)[0].split("\n", 2)[2].strip(), "", "## " + body]
    lines += ["", sweep_md.replace("# logbridge cost curves", "## The cost curves", 1).replace("\n## ", "\n### ")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    sweep_path = Path(argv[0]) if argv else RESULTS / "sweep.json"
    sitting_path = Path(argv[1]) if len(argv) > 1 else RESULTS / "latest.json"
    sweep = json.loads(sweep_path.read_text())
    sitting = json.loads(sitting_path.read_text()) if sitting_path.exists() else None
    from bench import sweep as sweep_mod

    for p in plots(sweep):
        print(f"wrote {p}")
    out = RESULTS / "report.md"
    out.write_text(report(sweep, sitting, sweep_mod.markdown(sweep), sitting_path.name))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
