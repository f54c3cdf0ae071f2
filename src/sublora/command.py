"""How a tool module becomes a command: it declares its arguments (`add_arguments(parser)`) and its work
(`run(args) -> exit status`); the parser is built here, once for every tool, whether the tool is reached
as `sublora NAME …` (sublora.cli) or as `python -m sublora.NAME …`."""
from __future__ import annotations

import argparse


def parser(prog: str, doc: str | None, sub=None) -> argparse.ArgumentParser:
    """The parser of one tool: a subcommand of `sub` (cli's subparsers) or a program of its own."""
    first = " ".join((doc or "").strip().split("\n\n")[0].split()).split(". ")[0].rstrip(".")  # its first sentence
    how = dict(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return sub.add_parser(prog, help=first, **how) if sub is not None else argparse.ArgumentParser(prog=prog, **how)


def alone(name: str, doc: str | None, add_arguments, run, argv=None) -> int:
    """`python -m sublora.NAME …`: the tool as a program of its own, the same arguments as `sublora NAME`."""
    ap = parser(f"python -m sublora.{name}", doc)
    add_arguments(ap)
    return run(ap.parse_args(argv))
