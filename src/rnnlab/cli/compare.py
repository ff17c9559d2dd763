"""``rnnlab-compare <sweep dir | run dirs...> [--out DIR]`` (or ``python -m rnnlab.cli.compare``).

Tables (md, csv) and plots (png) of a sweep or of runs, custom against builtin
(:mod:`rnnlab.report.compare`). Its arguments are directories, which Hydra does not
take, so it parses them with argparse.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rich

from rnnlab.cli.app import exit_on_user_error
from rnnlab.report.compare import compare


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rnnlab-compare",
        description="Compare rnnlab runs: tables (md, csv) and plots (png) of a sweep or runs.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory or run directories")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the runs)"
    )
    args = parser.parse_args(argv)
    report = compare(args.paths, args.out)
    finished = sum(row["status"] == "done" for row in report["runs"])
    rich.print(
        f"{len(report['runs'])} runs ({finished} finished): comparison.md, comparison.csv, "
        f"comparison_groups.csv and {len(report['plots'])} plots in {report['out_dir']}"
    )


if __name__ == "__main__":
    main()
