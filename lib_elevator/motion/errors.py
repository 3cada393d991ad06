"""The one exception the motion-module loaders raise, so a host can show its message as is."""
from __future__ import annotations


class MotionModelError(ValueError):
    """A motion-model file or folder that cannot be used; the message is written for a WebUI user."""
