"""Build step of the wmlicense Python package: builds the native library with cargo (or reuses a
build) and puts it inside the package, and generates the package's ``_decls.py`` from the C
header (include/wmlicense.h).

Environment:
  WMLICENSE_CARGO_PROFILE  cargo profile to build (default ``release``; ``dev`` -> target/debug)
  WMLICENSE_TARGET_DIR     cargo target directory (default ``<repo>/target``). When the library
                           for the profile is already there and WMLICENSE_NO_CARGO=1, cargo is
                           not run at all (the test command reuses the build it just made).
  WMLICENSE_NO_CARGO=1     do not run cargo; use the library found in the target directory.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
HEADER = os.path.join(REPO, "include", "wmlicense.h")
LIBNAME = {"darwin": "libwmlicense.dylib", "win32": "wmlicense.dll"}.get(sys.platform,
                                                                         "libwmlicense.so")


def _load_gen():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_wmlicense_gen", os.path.join(HERE, "src", "wmlicense", "_gen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _native_library():
    profile = os.environ.get("WMLICENSE_CARGO_PROFILE", "release")
    target = os.path.abspath(os.environ.get("WMLICENSE_TARGET_DIR") or os.path.join(REPO, "target"))
    out_dir = os.path.join(target, "debug" if profile == "dev" else profile)
    built = os.path.join(out_dir, LIBNAME)
    if os.environ.get("WMLICENSE_NO_CARGO") != "1":
        cmd = ["cargo", "build", "--lib", "-p", "wmlicense", "--profile", profile,
               "--target-dir", target]
        print("wmlicense: " + " ".join(cmd), flush=True)
        subprocess.check_call(cmd, cwd=REPO)
    if not os.path.exists(built):
        raise SystemExit(f"wmlicense: {built} not found (build the library with cargo, or unset "
                         "WMLICENSE_NO_CARGO)")
    return built


class BuildPy(build_py):
    def run(self):
        super().run()
        if os.path.exists(HEADER):
            # A repository checkout: the built package gets declarations generated from the
            # header now (never stale). The committed src/wmlicense/_decls.py (used where there
            # is no header) is left alone: tests/test_drift.py fails when it differs.
            with open(HEADER, encoding="utf-8") as f:
                text = _load_gen().generate(f.read())
            with open(os.path.join(self.build_lib, "wmlicense", "_decls.py"), "w",
                      encoding="utf-8") as f:
                f.write(text)
        dest = os.path.join(self.build_lib, "wmlicense", LIBNAME)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(_native_library(), dest)
        os.chmod(dest, 0o755)


try:
    from wheel.bdist_wheel import bdist_wheel

    class BdistWheel(bdist_wheel):
        """The wheel holds a native library: platform-specific, any Python 3."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass = {"build_py": BuildPy, "bdist_wheel": BdistWheel}
except ImportError:  # pragma: no cover
    cmdclass = {"build_py": BuildPy}

class BinaryDistribution(Distribution):
    """The package carries a native library: the wheel is platform-specific (platlib)."""

    def has_ext_modules(self):
        return True


setup(cmdclass=cmdclass, distclass=BinaryDistribution)
