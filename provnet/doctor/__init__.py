# Configuration checks: find the seed's misconfigurations in INI files, dnsmasq options and the live registry.
