import os
import pathlib

import pytest

REPO = pathlib.Path(os.environ.get("WMLICENSE_REPO") or pathlib.Path(__file__).resolve().parents[3])


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own default store and embedded service (WMLICENSE_HOME)."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("WMLICENSE_HOME", str(h))
    return h


def lic(i, rights=None, **kw):
    import wmlicense as wm

    if rights is None:
        rights = wm.Right.PLAYBACK | wm.Right.BACKUP
    return wm.License(b"kid-%06d" % i, b"key-%06d" % i, title=f"Song {i}", rights=rights,
                      issued_at=1_700_000_000, **kw)
