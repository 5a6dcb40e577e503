# The networking REST API (Neutron v2.0 subset) and the instances API, on aiohttp.
