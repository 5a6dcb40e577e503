# The seed's topology in network namespaces on one machine: provnet lab up/check/status/down.
