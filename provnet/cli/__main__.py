# `python -m provnet.cli`: the same as the `provnet` console script.
from provnet.cli import main

main()
