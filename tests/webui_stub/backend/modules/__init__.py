"""Part of the Forge 2 ``backend`` stand-in (see ``backend/__init__.py``)."""
