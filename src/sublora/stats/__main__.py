"""`python -m sublora.stats --power`: an alias of `sublora power`, kept because earlier notes and pages cite it.

It runs that command as a program of its own (the process is replaced), so the statistics package imports nothing
above it: the alias is a command line, not an import."""
import os
import sys

if "--power" not in sys.argv[1:]:
    sys.exit("usage: python -m sublora.stats --power [sublora power's options]   (see: sublora power --help)")
args = [a for a in sys.argv[1:] if a != "--power"]
os.execv(sys.executable, [sys.executable, "-m", "sublora", "power", *args])
