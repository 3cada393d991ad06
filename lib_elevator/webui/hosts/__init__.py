"""One adapter per WebUI host. Each imports its host's modules lazily, inside functions."""
