# Domain types and their rules (Neutron's): pure code, no I/O.
