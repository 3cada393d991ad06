"""Stand-in for A1111 ``modules/safe.py`` (v1.10.1), written for these tests from what that module does.

A1111 imports it from ``modules/paths.py`` early at start-up, and importing it replaces ``torch.load``
for the whole process with ``load``: before torch reads a pickle-based file, the file is checked, and a
file that fails the check is *reported* (``errors.report``) and ``None`` is returned instead of raising.
The check, as A1111 does it:

* a zip archive (torch ≥ 1.6) may hold only ``<dir>/data.pkl``, ``<dir>/version``, ``<dir>/byteorder``,
  ``<dir>/.data/serialization_id`` and ``<dir>/data/<n>``; any other entry fails the check, including the
  ``.format_version`` and ``.storage_alignment`` entries that current torch writes (so files saved by
  torch ≥ 2.1 are refused although they hold only weights);
* exactly one ``data.pkl``, unpickled with a restricted unpickler whose allowed globals are a short list
  (``OrderedDict``, three ``torch._utils`` rebuild functions, a few storage classes and ``torch.float32``,
  ``ParameterDict``, two numpy internals, ``numpy.dtype/ndarray``, ``_codecs.encode``, Lightning's
  ``ModelCheckpoint`` and ``__builtin__.set``); storages come back empty, nothing is kept;
* a non-zip (legacy) file is checked as five consecutive pickles with the same unpickler.

``--disable-safe-unpickle`` skips the check. ``unsafe_torch_load`` is torch's own ``load``, kept before
the replacement; ``load_with_extra(filename, extra_handler)`` lets a caller allow more globals.
Forge 2 keeps this module but does not replace ``torch.load``, so the stand-in installs the replacement
for the A1111 host only; ``uninstall()`` (the test fixture calls it) puts torch's ``load`` back.
Left out: the ``Extra`` context manager for a process-wide extra handler.
"""
import collections
import pickle
import re
import zipfile

import _codecs
import numpy
import torch

from modules import errors, stub_host

unsafe_torch_load = torch.load

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): torch._utils._rebuild_device_tensor_from_numpy,
    ("torch.nn.modules.container", "ParameterDict"): torch.nn.ParameterDict,
    ("numpy", "dtype"): numpy.dtype,
    ("numpy", "ndarray"): numpy.ndarray,
    ("_codecs", "encode"): _codecs.encode,
    ("__builtin__", "set"): set,
}
_TORCH_NAMES = ("FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage", "ByteStorage",
                "BFloat16Storage", "float32")
_NUMPY_INTERNALS = ("scalar", "_reconstruct")
_ARCHIVE_ENTRY = re.compile(r"^[^/]+/(data\.pkl|version|byteorder|\.data/serialization_id|data/\d+)$")
_PICKLE_ENTRY = re.compile(r"^[^/]+/data\.pkl$")
LEGACY_PICKLES = 5


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only the allowed globals; storages are empty placeholders (the file is only checked)."""

    extra_handler = None

    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if self.extra_handler is not None:
            allowed = self.extra_handler(module, name)
            if allowed is not None:
                return allowed
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_NAMES:
            return getattr(torch, name)
        if module == "numpy.core.multiarray" and name in _NUMPY_INTERNALS:
            return getattr(numpy.core.multiarray, name)
        raise Exception(f"global '{module}/{name}' is forbidden")


def _unpickler(file, extra_handler):
    unpickler = RestrictedUnpickler(file)
    unpickler.extra_handler = extra_handler
    return unpickler


def check_pt(filename, extra_handler):
    """Raise if ``filename`` holds anything but the allowed archive entries and globals."""
    try:
        with zipfile.ZipFile(filename) as archive:
            names = archive.namelist()
            for name in names:
                if not _ARCHIVE_ENTRY.match(name):
                    raise Exception(f"bad file inside {filename}: {name}")
            pickles = [name for name in names if _PICKLE_ENTRY.match(name)]
            if len(pickles) != 1:
                raise Exception(f"{len(pickles)} data.pkl entries in {filename}")
            with archive.open(pickles[0]) as file:
                _unpickler(file, extra_handler).load()
    except zipfile.BadZipfile:
        with open(filename, "rb") as file:
            unpickler = _unpickler(file, extra_handler)
            for _ in range(LEGACY_PICKLES):
                unpickler.load()


def load(filename, *args, **kwargs):
    return load_with_extra(filename, None, *args, **kwargs)


def load_with_extra(filename, extra_handler=None, *args, **kwargs):
    """torch's ``load`` after the check; ``None`` (and a report in the console) when the check fails."""
    from modules import shared_cmd_options

    try:
        if not getattr(shared_cmd_options.cmd_opts, "disable_safe_unpickle", False):
            check_pt(filename, extra_handler)
    except pickle.UnpicklingError:
        errors.report(f"Error verifying pickled file from {filename}\nThe file is most likely corrupted.",
                      exc_info=True)
        return None
    except Exception:
        errors.report(f"Error verifying pickled file from {filename}\n"
                      "The file may be malicious, so the program is not going to read it.", exc_info=True)
        return None
    return unsafe_torch_load(filename, *args, **kwargs)


def uninstall():
    torch.load = unsafe_torch_load


if not stub_host.is_forge():
    torch.load = load
