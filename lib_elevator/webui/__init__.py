"""The WebUI layer: requests, the run and its sampler hook, one adapter per host, outputs and UI.

Imported only inside a WebUI (or its test stand-in); WebUI modules are imported inside functions.
"""
