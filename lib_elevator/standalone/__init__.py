"""Standalone VideoElevator on diffusers models: the pipeline, loading from disk, the CLI and demo."""
