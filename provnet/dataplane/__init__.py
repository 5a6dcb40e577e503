# Namespaces, links, addresses, routes (pyroute2) and firewall rule sets (iptables-restore).
