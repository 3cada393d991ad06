"""One adapter per host. Each imports its host's modules lazily, inside functions."""
