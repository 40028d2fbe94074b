"""The HTTP API, the phone page and the Prometheus metrics."""
