# What runs on a host: the agents' state reports (heartbeats), and later the L2/L3 agents' reconcile loops.
