"""``python -m drseg <command>``: a small dispatcher; each command lives in its own module.

Commands register in :data:`COMMANDS` as ``name: (module, help)``; the module provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so one command's heavy imports never slow another.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "report": ("drseg.reports.cli", "regenerate the tables, figures and page (from metrics "
                                    "files or --from-mlflow)"),
    "predict": ("drseg.predict", "segment your own images / GeoTIFFs with a trained "
                                 "checkpoint and any class names"),
    "profile": ("drseg.profiles", "show the params a profile resolves to and check its input "
                                  "files"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command; with ``only``, just that
    command's module is imported (its arguments are the only ones parsed)."""
    ap = argparse.ArgumentParser(prog="drseg", description="DR-Seg reproduction pipeline")
    sub = ap.add_subparsers(dest="command", metavar="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only in (None, name):
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; bad input exits with its message, status 2."""
    from drseg.errors import DrsegInputError

    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except DrsegInputError as e:
        print(f"drseg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
