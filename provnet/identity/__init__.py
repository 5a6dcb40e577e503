# Identity: Keystone tokens (server side), clouds.yaml sessions (client side), Neutron's policy, TLS contexts.
