"""The ctypes declarations must match include/wmlicense.h: fails on any drift."""

import ctypes
import pathlib
import re

import pytest
import wmlicense as wm
from conftest import REPO
from wmlicense import _decls, _ffi, _gen

HEADER = REPO / "include" / "wmlicense.h"


@pytest.fixture(scope="module")
def header():
    if not HEADER.exists():
        pytest.skip("no repository header")
    return HEADER.read_text()


def test_generated_module_matches_header(header):
    fresh = _gen.generate(header)
    installed = pathlib.Path(_decls.__file__).read_text()
    assert installed == fresh, "the installed package was built from another header: reinstall"
    src = REPO / "bindings" / "python" / "src" / "wmlicense" / "_decls.py"
    if src.exists():
        assert src.read_text() == fresh, (
            "bindings/python/src/wmlicense/_decls.py is stale: run python3 "
            "bindings/python/src/wmlicense/_gen.py include/wmlicense.h "
            "bindings/python/src/wmlicense/_decls.py and commit it")


def test_every_define_enum_and_prototype_is_bound(header):
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    # every #define WM_... with a value (not the function-like macros)
    defines = set(re.findall(r"^#define (WM_[A-Z0-9_]+) ", text, re.M)) - {"WM_SUCCEEDED", "WM_FAILED"}
    assert defines == set(_decls.CONSTANTS)
    for name in defines:
        assert getattr(_decls, name) == _decls.CONSTANTS[name]
    for m in re.finditer(r"#define (WM_E_\w+) \(wm_hresult\)(\d+)u", text):
        assert _decls.CONSTANTS[m.group(1)] & 0xFFFFFFFF == int(m.group(2))
    protos = set(re.findall(r"\b(wm_\w+)\(", text)) - set(_decls.CALLBACKS)
    assert protos == set(_decls.FUNCTIONS)
    for name, (ret, params) in _decls.FUNCTIONS.items():
        f = getattr(_ffi.lib, name)
        assert len(f.argtypes) == len(params), name
        assert f.restype is _ffi.ctype(ret), name
        m = re.search(r"\b" + name + r"\(([^)]*)\)", text)
        n = 0 if m.group(1).strip() in ("", "void") else m.group(1).count(",") + 1
        assert n == len(params), name


def test_structs_match(header):
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    for name, fields in _decls.STRUCTS.items():
        body = re.search(r"typedef struct " + name + r" \{(.*?)\}", text, re.S).group(1)
        names = re.findall(r"(\w+);", body)
        assert [f for f, _ in _ffi.types[name]._fields_] == names
    # the layout itself: the library stamps sizeof(wm_event) into every event (next test)


def test_event_struct_size_agrees_with_library(tmp_path):
    sizes = []
    from conftest import lic

    with wm.Store(tmp_path / "s") as s:
        s.put(lic(1))
    orig = wm.Event._from_c.__func__

    def spy(cls, e):
        sizes.append(e.struct_size)
        return orig(cls, e)

    wm.Event._from_c = classmethod(spy)
    try:
        with wm.BackupRestorer() as r:
            r.backup(tmp_path / "bk", store_path=tmp_path / "s").wait(60)
    finally:
        wm.Event._from_c = classmethod(orig)
    assert sizes and set(sizes) == {ctypes.sizeof(_ffi.wm_event)}


def test_python_enums_and_errors_come_from_header():
    for r in wm.Right:
        assert _decls.CONSTANTS["WM_RIGHT_" + r.name] == r.value
    assert {k[len("WM_RIGHT_"):] for k in _decls.CONSTANTS if k.startswith("WM_RIGHT_")} == {r.name for r in wm.Right}
    assert [(n, v) for n, v in _decls.ENUMS["wm_status"]] == [("WM_STATUS_" + s.name, s.value) for s in wm.Status]
    assert [(n, v) for n, v in _decls.ENUMS["wm_operation"]] == [("WM_OPERATION_" + s.name, s.value) for s in wm.OperationKind]
    assert all(hr in _decls.CONSTANTS.values() for hr in wm.ERRORS)
    for hr, cls in wm.ERRORS.items():
        assert isinstance(wm.error_for(hr), cls)
    assert type(wm.error_for(_decls.WM_E_UNEXPECTED)) is wm.Error


def test_drift_is_detected(header):
    """The generator sees a changed value, a new field and a new function."""
    base = _gen.generate(header)
    assert _gen.generate(header.replace("#define WM_RIGHT_BACKUP 512", "#define WM_RIGHT_BACKUP 1024")) != base
    assert _gen.generate(header.replace("  uint32_t device_limit;", "  uint32_t device_limit;\n  uint32_t extra;")) != base
    assert _gen.generate(header.replace("const char *wm_version(void);", "const char *wm_version(void);\nvoid wm_new(int32_t x);")) != base
