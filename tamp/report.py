"""`python -m tamp.report DIR... [--out OUT]`: a sweep's results -> the paper's Rel.% tables and figures.

Writes report.md, report.csv, sparsity_vs_rel.png, sparsity_per_projection.png and
sparsity_per_block.png into OUT (default: the first DIR) and prints the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tamp.reporting import Report, ReportError, build_report, load_results
from tamp.reporting.plots import write_plots
from tamp.reporting.render import report_markdown, write_csv

__all__ = ["Report", "ReportError", "build_report", "main", "write_report"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tamp.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "dirs", nargs="*", metavar="DIR", help="run or sweep directories (searched recursively)"
    )
    parser.add_argument("--out", type=Path, help="output directory (default: the first DIR)")
    parser.add_argument(
        "--sparsity",
        type=float,
        help="target of the per-projection / per-block figures (default: the highest)",
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project")
    parser.add_argument("--group", help="only the W&B runs of this group")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give at least one DIR or --wandb ENTITY/PROJECT")
    if args.group and not args.wandb:
        parser.error("--group needs --wandb")
    return args


def output_dir(args: argparse.Namespace) -> Path:
    """--out, else the first DIR (its folder when a results.json file is given), else the working directory."""
    if args.out is not None:
        return args.out
    if not args.dirs:
        return Path.cwd()
    first = Path(args.dirs[0])
    return first.parent if first.is_file() else first


def write_report(report: Report, out: Path, sparsity: float | None = None) -> str:
    """Every output file of the report; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(report)
    (out / "report.md").write_text(markdown)
    write_csv(report, out / "report.csv")
    write_plots(report, out, sparsity)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """CLI entry; 0 on success, 1 with a one-line message on bad input, 2 on bad arguments."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        results = load_results(args.dirs) if args.dirs else []
        if args.wandb:
            from tamp.reporting.wandb_source import fetch_wandb

            results += fetch_wandb(args.wandb, args.group)
        out = output_dir(args)
        markdown = write_report(build_report(results), out, args.sparsity)
    except ReportError as err:
        print(f"tamp.report: error: {err}", file=sys.stderr)
        return 1
    print(markdown, end="")
    print(f"(written to {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
