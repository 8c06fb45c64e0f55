"""`python -m tamp.report DIR... [--dense DIR] [--out OUT]`: a sweep's results -> the paper's Rel.% tables and figures.

Writes report.md, report.csv, sparsity_vs_rel.png, sparsity_per_projection.png and
sparsity_per_block.png into OUT (default: the first DIR) and prints the markdown. Rel.% needs a
completed dense run with the same model and eval settings: the sweep's own `method=dense` cell, or
one from elsewhere given with `--dense` (only its dense runs are read). Without one the tables show
the raw scores and say so. The report replaces only its own earlier files (tamp.reporting.outputs):
a report.md or report.csv it did not write, or a link at one of its names, is refused in one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamp.reporting.load import ReportError, load_results
from tamp.tracking.run_names import is_dense

if TYPE_CHECKING:  # the tables need pandas and the figures matplotlib: imported once the arguments are parsed
    from tamp.reporting.table import Report

__all__ = ["ReportError", "main", "write_report"]  # Report and build_report too, on first use (below)


def __getattr__(name: str) -> Any:
    """`Report` and `build_report` on first use (tamp.reporting.table, with pandas): `--help` does not load them."""
    if name in ("Report", "build_report"):
        from tamp.reporting import table

        return getattr(table, name)
    raise AttributeError(f"module 'tamp.cli.report_command' has no attribute {name!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tamp.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "dirs", nargs="*", metavar="DIR", help="run or sweep directories (searched recursively)"
    )
    parser.add_argument(
        "--dense",
        action="append",
        default=[],
        metavar="DIR",
        help="a run or sweep directory whose dense runs are the Rel.%% reference (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: the first DIR)")
    parser.add_argument(
        "--sparsity",
        type=float,
        help="target of the per-projection / per-block figures (default: the highest)",
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project")
    parser.add_argument(
        "--wandb-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="read the offline W&B runs (offline-run-*) under DIR instead of results.json (repeatable)",
    )
    parser.add_argument("--group", help="only the W&B runs of this group")
    parser.add_argument(
        "--wandb-log",
        metavar="[ENTITY/]PROJECT",
        help="also log the report (Rel.%% table, Avg Rel.%%, plots) as a W&B run of the sweep's group",
    )
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb and not args.wandb_dir:
        parser.error("give at least one DIR, --wandb ENTITY/PROJECT or --wandb-dir DIR")
    if args.group and not (args.wandb or args.wandb_dir):
        parser.error("--group needs --wandb or --wandb-dir")
    return args


def output_dir(args: argparse.Namespace) -> Path:
    """--out, else the first DIR (its folder when a results.json file is given), else the working directory."""
    if args.out is not None:
        return args.out
    if not args.dirs:
        return Path(args.wandb_dir[0]) if args.wandb_dir else Path.cwd()
    first = Path(args.dirs[0])
    return first.parent if first.is_file() else first


def write_report(report: Report, out: Path, sparsity: float | None = None) -> str:
    """Every output file of the report, all made before any is written; returns the markdown.

    ReportError (one line, nothing written) when OUT holds a report file tamp.report did not write.
    """
    from tamp.reporting.outputs import ReportOutputs
    from tamp.reporting.plots import plot_files
    from tamp.reporting.render import report_csv, report_markdown

    markdown = report_markdown(report)
    files = {"report.md": markdown.encode("utf-8"), "report.csv": report_csv(report).encode("utf-8"),
             **plot_files(report, sparsity)}
    ReportOutputs(out).write(files)
    return markdown


def dense_results(dirs: list[str], seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense runs under --dense DIRs that are not already among the results; none at all is an error."""
    runs = [r for r in load_results(dirs) if is_dense(r)]
    if not runs:
        raise ReportError(f"--dense {' '.join(dirs)}: no dense run (method=dense) found")
    known = {str(r["run_dir"]) for r in seen}
    return [r for r in runs if str(r["run_dir"]) not in known]


def main(argv: list[str] | None = None) -> int:
    """CLI entry; 0 on success, 1 with a one-line message on bad input, 2 on bad arguments."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from tamp.reporting.table import build_report

    try:
        results = load_results(args.dirs) if args.dirs else []
        if args.dense:
            results += dense_results(args.dense, results)
        if args.wandb:
            from tamp.reporting.wandb_source import fetch_wandb

            results += fetch_wandb(args.wandb, args.group)
        if args.wandb_dir:
            from tamp.reporting.wandb_offline import load_offline_wandb

            results += load_offline_wandb(args.wandb_dir, args.group)
        out = output_dir(args)
        report = build_report(results)
        markdown = write_report(report, out, args.sparsity)
        if args.wandb_log:
            from tamp.reporting.wandb_summary import log_summary_run, report_group

            where = log_summary_run(report, out, args.wandb_log, report_group(results, args.dirs, args.group))
            print(f"(W&B report run: {where})", file=sys.stderr)
    except ReportError as err:
        print(f"tamp.report: error: {err}", file=sys.stderr)
        return 1
    print(markdown, end="")
    print(f"(written to {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
