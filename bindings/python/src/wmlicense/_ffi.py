"""ctypes bindings built from the generated declarations in ``_decls.py``.

Nothing here restates the header: structures, callback types and function prototypes are made
from ``_decls`` (itself generated from ``include/wmlicense.h``) through one table of C type
names. The library is ``libwmlicense`` beside this file (put there by ``setup.py``), or the file
named by ``$WMLICENSE_LIBRARY`` (for development).

The library is loaded with :class:`ctypes.CDLL`, which releases the GIL during every call: the
library's worker threads need the GIL to deliver events, and a call that waits for them (wait,
destroy) while holding it would deadlock (that is what ``PyDLL`` does).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Dict

from . import _decls

_SCALARS: Dict[str, Any] = {
    "void": None,
    "uint8_t": ctypes.c_uint8,
    "int32_t": ctypes.c_int32,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "char": ctypes.c_char,
}


class _Opaque(ctypes.Structure):
    pass


def _library_path() -> str:
    env = os.environ.get("WMLICENSE_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    names = {"darwin": "libwmlicense.dylib", "win32": "wmlicense.dll"}
    return os.path.join(here, names.get(sys.platform, "libwmlicense.so"))


lib = ctypes.CDLL(_library_path())

types: Dict[str, Any] = {}


def ctype(name: str) -> Any:
    """The ctypes type for a C type name as ``_decls`` spells it (``const uint8_t *`` …)."""
    name = name.replace("const ", "").strip()
    if name in types:
        return types[name]
    if name.endswith("*"):
        base = name[:-1].strip()
        if base == "char":
            t: Any = ctypes.c_char_p
        elif base == "void":
            t = ctypes.c_void_p
        else:
            t = ctypes.POINTER(ctype(base))
    elif name.startswith("struct "):
        t = ctype(name[len("struct "):])
    elif name.startswith("enum "):
        t = ctypes.c_int  # a C enum is an int (every value of these fits)
    elif name in _SCALARS:
        t = _SCALARS[name]
    elif name in _decls.TYPEDEFS:
        t = ctype(_decls.TYPEDEFS[name])
    else:
        raise TypeError(f"no ctypes type for C type {name!r}")
    types[name] = t
    return t


for _name in _decls.OPAQUE:
    types[_name] = type(_name, (_Opaque,), {})

for _name in _decls.STRUCTS:
    types[_name] = type(_name, (ctypes.Structure,), {})
for _name, _fields in _decls.STRUCTS.items():
    types[_name]._fields_ = [(f, ctype(t)) for f, t in _fields]

for _name, (_ret, _params) in _decls.CALLBACKS.items():
    types[_name] = ctypes.CFUNCTYPE(ctype(_ret), *[ctype(t) for _, t in _params])

for _name, (_ret, _params) in _decls.FUNCTIONS.items():
    _f = getattr(lib, _name)
    _f.restype = ctype(_ret)
    _f.argtypes = [ctype(t) for _, t in _params]

wm_event = types["wm_event"]
wm_result = types["wm_result"]
wm_license = types["wm_license"]
wm_status_callback = types["wm_status_callback"]
wm_license_visitor = types["wm_license_visitor"]
wm_license_store = types["wm_license_store"]
wm_backup_restorer = types["wm_backup_restorer"]
