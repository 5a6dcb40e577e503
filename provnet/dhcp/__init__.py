# DHCPv4: pure codec and server logic (bytes in, bytes out), the asyncio service, lease journal and exports.
