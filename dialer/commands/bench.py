"""`dialer bench` commands: the discrete-event pacing benchmark."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Benchmarks: pacing policies in the discrete-event simulator.\n\n"
                  "Example: dialer bench pacing --scenario benchmarks/scenarios/anchor-n20.toml",
                  no_args_is_help=True)

DEFAULT_POLICIES = ["progressive", "vicidial", "vicidial-average", "predictive"]


def _fmt_pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def results_table(summaries: list[dict[str, Any]]) -> str:
    """The markdown table of docs/pacing.md's reporting protocol."""
    lines = [
        "| scenario | policy | occupancy (95% CI) | abandon (95% CI) | days > 3% | occupancy / U* | U* | 429s | cap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['scenario']} | {s['policy']} | {s['occupancy']:.3f} ± {s['occupancy_ci']:.3f} | "
            f"{_fmt_pct(s['abandon'])} ± {_fmt_pct(s['abandon_ci'])} | "
            f"{s['days_over_cap'] * 100:.0f}% ({s['days_over_cap_count']}/{s['days']}) | "
            f"{s['occupancy_over_u_star']:.3f} | {s['u_star']:.3f} | {s['rejected_429']} | "
            f"{'FAILS' if s['fails_cap'] else 'ok'} |"
        )
    return "\n".join(lines)


def write_plot(summaries: list[dict[str, Any]], path: Path) -> None:
    """Occupancy against abandon rate, one panel per scenario, one point (with 95% CI bars) per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(s["scenario"] for s in summaries))
    cols = min(3, len(scenarios))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for i, name in enumerate(scenarios):
        ax = axes[i // cols][i % cols]
        cells = [s for s in summaries if s["scenario"] == name]
        for s in cells:
            ax.errorbar(
                s["abandon"] * 100,
                s["occupancy"],
                xerr=s["abandon_ci"] * 100,
                yerr=s["occupancy_ci"],
                fmt="o",
                capsize=3,
                label=s["policy"],
            )
        ax.axhline(cells[0]["u_star"], color="k", linestyle="--", linewidth=1, label="U* (upper bound)")
        ax.axvline(3.0, color="r", linestyle=":", linewidth=1, label="3% cap")
        ax.set_title(name)
        ax.set_xlabel("abandon rate (%)")
        ax.set_ylabel("occupancy")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(0, max(5.0, 1.5 * max(c["abandon"] * 100 for c in cells)))
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, loc="lower right")
    for j in range(len(scenarios), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command("pacing")
def pacing(
    scenario: list[Path] = typer.Option(..., "--scenario", "-s", help="Scenario TOML file (repeatable)."),
    policy: list[str] = typer.Option(
        [],
        "--policy",
        "-p",
        help="Pacing spec (repeatable): progressive, ratio:K, vicidial, vicidial-average, predictive. "
        "Default: the scenario's [bench] policies, else progressive, vicidial, vicidial-average, predictive.",
    ),
    seeds: int = typer.Option(10, "--seeds", "-n", min=1, help="Seeds per cell (1..N)."),
    days: int | None = typer.Option(None, "--days", min=1, help="Shifts per seed (default: the scenario's)."),
    hours: float | None = typer.Option(
        None, "--hours", min=0.1, help="Shift length (default: the scenario's)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write every result (per day) to this JSON file."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write occupancy vs abandon rate to this PNG."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Worker processes."),
) -> None:
    """Run pacing policies over scenarios in the discrete-event simulator and print the results table.

    Example: dialer bench pacing --scenario benchmarks/scenarios/anchor-n20.toml --policy predictive --seeds 3
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dialer.pacing import make_policy
    from dialer.sim.des import BenchScenario, load_bench_scenario, run_matrix
    from dialer.sim.scenario import ScenarioError

    for p in scenario:
        try:
            load_bench_scenario(p)
        except ScenarioError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    for spec in policy:
        try:
            make_policy(spec)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    def policies_for(bench: BenchScenario) -> list[str]:
        return list(policy) or bench.policies or DEFAULT_POLICIES

    started = time.perf_counter()
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("runs", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        cells = run_matrix(
            [str(p) for p in scenario],
            policies_for,
            seeds,
            days=days,
            hours=hours,
            jobs=jobs,
            progress=progress,
        )
    wall = time.perf_counter() - started
    summaries = [c.summary() for c in cells]
    typer.echo(results_table(summaries))
    typer.echo(f"\n{len(cells)} cells x {seeds} seeds in {wall:.1f} s wall ({jobs} worker(s))")
    if json_out is not None:
        payload = {
            "wall_seconds": wall,
            "seeds": seeds,
            "jobs": jobs,
            "cells": [
                {**s, "per_day": [[d.to_dict() for d in ds] for ds in c.days], "seeds_list": c.seeds}
                for s, c in zip(summaries, cells, strict=True)
            ],
        }
        json_out.write_text(json.dumps(payload, indent=1))
        typer.echo(f"results written to {json_out}")
    if plot is not None:
        write_plot(summaries, plot)
        typer.echo(f"plot written to {plot}")


@app.command("live")
def live(
    scenario: list[Path] = typer.Option(..., "--scenario", "-s", help="Scenario TOML file (repeatable; run in turn)."),
    hours: float = typer.Option(1.0, "--hours", min=0.01, help="Simulated hours measured from the campaign's start."),
    time_scale: float = typer.Option(30.0, "--time-scale", "-x", min=1.0, help="Speed-up of the simulated world."),
    policy: str = typer.Option("predictive", "--policy", "-p", help="Pacing spec the campaign runs (as --pacing)."),
    des_seeds: int = typer.Option(5, "--des-seeds", min=1, help="Discrete-event seeds for the figure beside it."),
    tick: float | None = typer.Option(None, "--tick", help="Daemon tick in wall seconds (default: 1 simulated s)."),
    workdir: Path | None = typer.Option(None, "--dir", help="Keep the database and logs here (default: a temp dir)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    seed: list[int] = typer.Option([], "--seed", help="Live world seed (repeatable: one run each; default: the "
                                   "scenario's)."),
) -> None:
    """Measure pacing in the live loop: `dialer sim serve` and `dialer run` as processes over HTTP with webhooks on,
    for the world of a benchmark scenario; prints occupancy, abandon rate and 429s beside the discrete-event
    figures for the same scenario and policy.

    Example: dialer bench live --scenario benchmarks/scenarios/anchor-n20.toml --hours 1 --time-scale 30 --json live.json
    """
    from dialer.live_bench import LiveBenchOptions, results_table, run_live
    from dialer.sim.scenario import ScenarioError

    results = []
    seeds: list[int | None] = list(seed) or [None]
    runs = [(path, s) for path in scenario for s in seeds]
    for i, (path, world_seed) in enumerate(runs):
        opts = LiveBenchOptions(path, hours=hours, time_scale=time_scale, policy=policy, des_seeds=des_seeds,
                                tick_s=tick, workdir=None if workdir is None else workdir / f"{i}-{path.stem}",
                                seed=world_seed)
        try:
            results.append(run_live(opts, say=lambda line: typer.echo(line, err=True)))
        except (ScenarioError, ValueError, RuntimeError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(results_table(results))
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=1))
        typer.echo(f"results written to {json_out}")
