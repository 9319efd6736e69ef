"""``python -m dynascope SUBCOMMAND ...``: the package's command line.

Subcommands: ``report`` (figures of run folders on one HTML page, see docs/python/report.md).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

_USAGE = """usage: python -m dynascope SUBCOMMAND [ARGS ...]

subcommands:
  report DIR [DIR2 ...] [--out OUT] [--format png,svg,pdf] [--overwrite]
         figures of every diagnostic the run folders hold, on one HTML page (DIR/report/index.html)

`python -m dynascope SUBCOMMAND --help` describes a subcommand."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "report":
        from ._report import main as report_main
        return report_main(rest)
    print(f"python -m dynascope: unknown subcommand {cmd!r} (expected: report)\n\n{_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
