"""`python -m flowagent ...` is the `flowagent` command (used where the script is not on PATH,
e.g. `flowagent demo` starting `serve` with the same interpreter)."""

from flowagent.cli import main

main()
