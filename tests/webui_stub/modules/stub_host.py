"""Which WebUI this stand-in session imitates: ``"a1111"`` (AUTOMATIC1111 1.10.1, the default) or ``"forge"``
(stable-diffusion-webui-forge 2.x). Read once from ``$WEBUI_STUB_HOST``, which ``webui_stub(host=...)`` sets
before anything is imported. Modules that differ between the two ask ``is_forge()``.
"""
import os

HOST = os.environ.get("WEBUI_STUB_HOST") or "a1111"
if HOST not in ("a1111", "forge"):
    raise ValueError(f"WEBUI_STUB_HOST must be 'a1111' or 'forge', not {HOST!r}")


def is_forge() -> bool:
    return HOST == "forge"
