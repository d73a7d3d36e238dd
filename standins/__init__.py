"""Local stand-ins for external services (LILA today), for tests and `make demo`."""
