"""Getting the stream out: libsrt (ctypes), the SRTLA wire format, the bonding sender,
the relay, and which address each uplink sends from."""
