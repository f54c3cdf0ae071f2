"""`sublora COMMAND …`: the package's tools under one command (also `python -m sublora COMMAND …`).

Each tool module declares its own arguments (`add_arguments`) and work (`run`); this is only the index
of them, at the top of the house. `make reproduce | notebook | book | plan | bench | gpu-check` call these commands.
"""
from __future__ import annotations

import sys

from . import bench, book, calibrate, command, gpucheck, plan, power, record, reproduce, search

COMMANDS = {  # name: the module whose add_arguments/run it is, in the order a user meets them
    "reproduce": reproduce,   # run a profile's notebooks, then build its book
    "book": book,             # rebuild a profile's book from its executed notebooks (a fresh clone's: the record)
    "record": record,         # write the default run into record/, or compare a run with it
    "plan": plan,             # what a profile would run, and its cost, without running it
    "power": power,           # how often each verdict of a design decides, from a pilot
    "calibrate": calibrate,   # every rule's error rates and power by simulation
    "bench": bench,           # measured throughput on this machine, then a timed cold run
    "gpu-check": gpucheck,    # on a GPU: the rates make plan prices GPU profiles at, and the GPU code paths
    "search": search,         # the organism search: measure a candidate, or write its record
}


def main(argv: list[str] | None = None) -> int:
    ap = command.parser("sublora", __doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(command.parser(name, module.__doc__, sub))
    args = ap.parse_args(argv)
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
