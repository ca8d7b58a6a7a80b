import threading

import pytest
import wmlicense as wm
from conftest import lic


def test_version():
    assert wm.version().count(".") == 2


def test_license_defaults():
    l = wm.License(b"k", b"c")
    assert l.rights == wm.Right.PLAYBACK | wm.Right.BACKUP
    assert (l.title, l.play_count, l.begin_date, l.expiration_date, l.issued_at) == (None, -1, 0, 0, 0)
    assert "c'" not in repr(l).split("key_id")[1]  # content key kept out of repr
    assert isinstance(wm.Right.BACKUP, int) and wm.Right.BACKUP == 0x200


def test_put_get_remove_len_contains(tmp_path):
    with wm.Store(tmp_path / "s") as s:
        assert len(s) == 0
        a = wm.License(b"\x00\xffA", b"secret", title="Ünïcode", rights=wm.Right.PLAYBACK,
                       play_count=3, begin_date=10, expiration_date=4_000_000_000, issued_at=5)
        s.put(a)
        assert s.get(b"\x00\xffA") == a
        assert isinstance(s.get(b"\x00\xffA").rights, wm.Right)
        assert b"\x00\xffA" in s and b"nope" not in s
        assert len(s) == 1
        s.put_many(lic(i) for i in range(10))
        assert len(s) == 11
        s.remove(b"\x00\xffA")
        assert len(s) == 10 and b"\x00\xffA" not in s


def test_default_store(home):
    with wm.Store() as s:
        s.put(lic(1))
    with wm.Store(home) as s:
        assert s.get(lic(1).key_id) == lic(1)
        assert s.path == str(home)


def test_put_many_all_or_none(tmp_path):
    with wm.Store(tmp_path / "s") as s:
        with pytest.raises(wm.InvalidArgument):
            s.put_many([lic(1), wm.License(b"x", b"")])
        assert len(s) == 0
        s.put_many([])


def test_iteration_streams_in_order(tmp_path):
    with wm.Store(tmp_path / "s") as s:
        s.put_many(lic(i) for i in range(2000))
        got = list(s)
        assert [l.key_id for l in got] == sorted(lic(i).key_id for i in range(2000))
        assert got[5] == lic(5)
        # the store stays usable during an iteration (the iterator has its own handle)
        it = iter(s)
        first = next(it)
        s.put(lic(99999))
        assert s.get(first.key_id) == first
        it.close()
        # an abandoned iteration stops its thread
        it2 = iter(s)
        next(it2)
        del it2


def test_not_found_is_key_error(tmp_path):
    with wm.Store(tmp_path / "s") as s:
        with pytest.raises(KeyError):
            s.get(b"missing")
        with pytest.raises(wm.NotFound) as e:
            s.remove(b"missing")
        assert e.value.hr & 0xFFFFFFFF == 0x80070490
        assert e.value.code_name == "WM_E_NOT_FOUND"
        assert "missing" in e.value.message or e.value.message


def test_invalid_argument(tmp_path):
    with wm.Store(tmp_path / "s") as s:
        with pytest.raises(wm.InvalidArgument) as e:
            s.put(wm.License(b"k", b"c", rights=0x4000))
        assert isinstance(e.value, ValueError)
        with pytest.raises(wm.InvalidArgument):  # WM_E_INVALID_KID
            s.put(wm.License(b"k" * 65, b"c"))
        with pytest.raises(TypeError):
            s.put(wm.License("str", b"c"))  # type: ignore[arg-type]


def test_store_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(wm.StoreError) as e:
        wm.Store(f)
    assert e.value.hr & 0xFFFFFFFF == 0xC00D2712


def test_plain_error_for_other_codes(tmp_path):
    s = wm.Store(tmp_path / "s")
    s.close()
    s.close()
    with pytest.raises(wm.Error) as e:
        len(s)  # WM_E_HANDLE has no subclass of its own
    assert type(e.value) is wm.Error
    assert e.value.code_name == "WM_E_HANDLE"


def test_threads_share_one_store(tmp_path):
    errors = []
    with wm.Store(tmp_path / "s") as s:
        def work(t):
            try:
                for i in range(200):
                    n = t * 1000 + i
                    s.put(lic(n))
                    assert s.get(lic(n).key_id) == lic(n)
                    if i % 50 == 0:
                        len(s)
                        assert lic(n).key_id in s
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(s) == 1600
        assert len(list(s)) == 1600
