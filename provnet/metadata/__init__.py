# The metadata path: namespace proxy -> metadata agent (unix socket) -> metadata API, plus pure content renderers.
