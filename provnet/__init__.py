# provnet: instance metadata for VMs on provider networks behind an external router (Neutron/Nova compatible).
__version__ = "0.1.0"
