"""Per-module line and branch coverage, least covered first, from `coverage json`'s file.

`coverage report` gives one percentage mixing lines and branches; this keeps them apart, so a
module whose every line runs but whose `else` never does shows as such.
"""

import json
import sys


def rows(report):
    """(path, statements, line %, branches, branch %) for each measured file with code."""
    for path, data in report["files"].items():
        s = data["summary"]
        if not s["num_statements"]:
            continue  # an empty __init__.py
        branch_pc = s["percent_branches_covered"] if s["num_branches"] else 100.0
        yield (path, s["num_statements"], s["percent_statements_covered"], s["num_branches"],
               branch_pc)


def table(report):
    """The report's lines: a header, each module least covered first, then the totals."""
    lines = [f"{'module':<48} {'lines':>6} {'line %':>7} {'branches':>8} {'branch %':>8}"]
    for path, statements, line_pc, branches, branch_pc in sorted(
            rows(report), key=lambda r: (r[2], r[4], r[0])):
        lines.append(f"{path:<48} {statements:>6} {line_pc:>7.1f} {branches:>8} {branch_pc:>8.1f}")
    t = report["totals"]
    lines.append(f"{'TOTAL':<48} {t['num_statements']:>6} {t['percent_statements_covered']:>7.1f}"
                 f" {t['num_branches']:>8} {t['percent_branches_covered']:>8.1f}")
    return lines


def main(argv):
    with open(argv[1]) as f:
        print("\n".join(table(json.load(f))))


if __name__ == "__main__":
    main(sys.argv)
