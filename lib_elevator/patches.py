"""The one shape every model patch has: install, remove exactly, and roll back a half-done install."""
from __future__ import annotations


class Patch:
    """Something hooked onto a model for one generation.

    Subclasses implement ``_install`` and register an undo callable for every change they make
    (``self._undo.append(handle.remove)``); ``remove()`` runs them newest first. A failure during
    ``install()`` undoes what was already done, so a patch is never left half-installed.
    """

    what = "patch"

    def __init__(self):
        self._undo: list = []

    @property
    def installed(self) -> bool:
        return bool(self._undo)

    def _install(self) -> None:
        raise NotImplementedError

    def install(self):
        if self._undo:
            raise RuntimeError(f"{self.what} is already installed")
        try:
            self._install()
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.remove()
