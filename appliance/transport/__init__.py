"""Getting the stream out: libsrt, and (to come) SRTLA bonding and the relay."""
