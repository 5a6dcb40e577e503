# The runtime: composing services from configuration, running them, child processes, supervision, readiness.
