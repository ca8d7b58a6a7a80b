import asyncio
import threading
import time

import pytest
import wmlicense as wm
from conftest import lic

S = wm.Status


def fill(path, n, restricted=0):
    with wm.Store(path) as s:
        s.put_many(lic(i) for i in range(n))
        s.put_many(lic(100_000_000 + i, rights=wm.Right.PLAYBACK) for i in range(restricted))


def test_backup_restore_events_and_result(tmp_path):
    src, dst, bk = tmp_path / "src", tmp_path / "dst", tmp_path / "bk"
    fill(src, 20, restricted=2)
    seen, threads = [], set()

    def on_event(e):
        seen.append(e)
        threads.add(threading.get_ident())

    with wm.BackupRestorer(on_event=on_event) as r:
        op = r.backup(bk, store_path=src)
        res = op.wait(timeout=60)
        assert op.done()
        assert (res.processed, res.total, res.skipped) == (20, 22, 2)
        assert sorted(res.restricted) == sorted(lic(100_000_000 + i).key_id for i in range(2))
        assert op.events[0].status == S.BACKUPRESTORE_BEGIN
        assert op.events[-1].status == S.BACKUPRESTORE_END
        restricted = [e for e in op.events if e.status == S.RESTRICTED_LICENSE]
        assert restricted[0].title.startswith("Song") and restricted[0].operation == wm.OperationKind.BACKUP
        assert threading.get_ident() not in threads  # events come on a library thread
        with pytest.raises(wm.BackupExists):
            r.backup(bk, store_path=src)
        r.backup(bk, store_path=src, overwrite=True).wait(60)

        op = r.restore(bk, store_path=dst, individualize=True)
        res = op.wait(60)
        assert (res.processed, res.total) == (20, 20)
        statuses = [e.status for e in op.events]
        assert statuses[:3] == [S.BACKUPRESTORE_BEGIN, S.BACKUPRESTORE_CONNECTING,
                                S.BACKUPRESTORE_DISCONNECTING]
        assert res.device_limit >= res.devices_used >= 1
        v = r.restore(bk, store_path=dst, verify_only=True).wait(60)
        assert v.processed == 20
    assert seen == [e for e in seen]  # events reached on_event
    with wm.Store(dst) as s:
        assert len(s) == 20 and s.get(lic(3).key_id) == lic(3)


def test_release(tmp_path):
    src, dst, bk = tmp_path / "src", tmp_path / "dst", tmp_path / "bk"
    fill(src, 3)
    with wm.BackupRestorer() as r:
        r.backup(bk, store_path=src).wait(60)
        r.restore(bk, store_path=dst, individualize=True).wait(60)
        res = r.release(store_path=dst).wait(60)
        assert res.hr == 0 and res.device_limit > 0
        with wm.Store(dst) as s:
            assert len(s) == 0  # released licenses leave the store
        again = r.release(store_path=dst).wait(60)
        assert again.hr == 1  # WM_S_FALSE: nothing to release
        r.release(all_devices=True, restore_path=bk).wait(60)
        with pytest.raises(wm.TooManyResets):
            r.release(all_devices=True, restore_path=bk).wait(60)


def test_callback_that_raises_does_not_end_operation(tmp_path):
    fill(tmp_path / "src", 5)
    reported = []
    import sys

    old = sys.unraisablehook
    sys.unraisablehook = lambda u: reported.append(u.exc_value)
    try:
        def boom(e):
            raise RuntimeError(f"boom {e.status.name}")

        with wm.BackupRestorer(on_event=boom) as r:
            res = r.backup(tmp_path / "bk", store_path=tmp_path / "src").wait(60)
            assert res.processed == 5
    finally:
        sys.unraisablehook = old
    assert any("BACKUPRESTORE_END" in str(e) for e in reported)
    assert any("BACKUPRESTORE_BEGIN" in str(e) for e in reported)


def test_cancel_backup_busy_and_timeout(tmp_path):
    fill(tmp_path / "big", 5_000)
    # The backup is held in its BEGIN callback until the checks below are done: they hold
    # whatever the speed of a backup.
    release = threading.Event()

    def hold(e):
        if e.status == S.BACKUPRESTORE_BEGIN:
            release.wait(60)

    with wm.BackupRestorer(on_event=hold) as r:
        op = r.backup(tmp_path / "bk", store_path=tmp_path / "big")
        with pytest.raises(wm.Busy):
            r.backup(tmp_path / "bk2", store_path=tmp_path / "big")
        with pytest.raises(TimeoutError):
            op.wait(timeout=0.001)
        assert op.cancel() is True
        release.set()
        with pytest.raises(wm.Canceled) as e:
            op.wait(60)
        assert e.value.hr & 0xFFFFFFFF == 0xC00D2768
        assert op.cancel() is False
        assert not (tmp_path / "bk" / "licenses.wmlb").exists()


def test_backup_corrupt_needs_individualization_unavailable(tmp_path):
    fill(tmp_path / "src", 2)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "licenses.wmlb").write_bytes(b"not a backup at all" * 10)
    with wm.BackupRestorer() as r:
        with pytest.raises(wm.BackupCorrupt):
            r.restore(bad, store_path=tmp_path / "dst", individualize=True).wait(60)
        r.backup(tmp_path / "bk", store_path=tmp_path / "src").wait(60)
        with pytest.raises(wm.NeedsIndividualization):
            r.restore(tmp_path / "bk", store_path=tmp_path / "new").wait(60)
        with pytest.raises(wm.ServiceUnavailable):
            r.restore(tmp_path / "bk", store_path=tmp_path / "n2", individualize=True,
                      service_url="http://127.0.0.1:9").wait(60)
        with pytest.raises(wm.InvalidArgument):
            r.restore(tmp_path / "bk", service_url="ftp://nope")


def test_restore_limit_reached(tmp_path, monkeypatch):
    monkeypatch.setenv("WMLICENSE_RESTORE_DEVICE_LIMIT", "2")
    fill(tmp_path / "src", 2)
    with wm.BackupRestorer() as r:
        r.backup(tmp_path / "bk", store_path=tmp_path / "src").wait(60)
        with pytest.raises(wm.RestoreLimitReached) as e:
            for i in range(6):
                r.restore(tmp_path / "bk", store_path=tmp_path / f"d{i}", individualize=True).wait(60)
        assert e.value.message and e.value.hr & 0xFFFFFFFF == 0xC00D2753


def test_asyncio_loop_keeps_running(tmp_path):
    fill(tmp_path / "big", 30_000)
    # The backup is held in its BEGIN callback (on a library thread) until the event loop has
    # ticked 10 times: awaiting it must leave the loop running, whatever the speed of a backup.
    ticked = threading.Event()

    def hold(e):
        if e.status == S.BACKUPRESTORE_BEGIN and e.operation == wm.OperationKind.BACKUP:
            ticked.wait(60)

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks, stop
            while not stop:
                ticks += 1
                if ticks == 10:
                    ticked.set()
                await asyncio.sleep(0.005)

        t = asyncio.ensure_future(ticker())
        with wm.BackupRestorer(on_event=hold) as r:
            res = await r.backup(tmp_path / "bk", store_path=tmp_path / "big")
            ticks_at_backup_end = ticks
            op = r.restore(tmp_path / "bk", store_path=tmp_path / "dst", individualize=True)
            res2, _ = await asyncio.gather(op, asyncio.sleep(0))
            # awaiting a finished operation again gives the same result
            assert (await op) == res2
        stop = True
        await t
        return res, res2, ticks_at_backup_end

    res, res2, ticks = asyncio.run(asyncio.wait_for(main(), 120))
    assert res.processed == 30_000 and res2.processed == 30_000
    # the loop ticked while the backup was held: awaiting it did not block the loop
    assert ticked.is_set() and ticks >= 10, ticks


def test_await_error_and_concurrent_restorers(tmp_path):
    for i in range(3):
        fill(tmp_path / f"s{i}", 500)

    async def main():
        rs = [wm.BackupRestorer() for _ in range(3)]
        try:
            ops = [r.backup(tmp_path / f"bk{i}", store_path=tmp_path / f"s{i}") for i, r in enumerate(rs)]
            results = await asyncio.gather(*ops)
            with pytest.raises(wm.NotFound):  # WM_E_FILE_NOT_FOUND: no backup there
                await rs[0].restore(tmp_path / "s0", store_path=tmp_path / "x", individualize=True)
            return results
        finally:
            for r in rs:
                r.close()

    results = asyncio.run(main())
    assert [r.processed for r in results] == [500] * 3


def test_next_operation_from_end_and_wait_in_callback(tmp_path):
    fill(tmp_path / "src", 3)
    chained = []
    errors = []

    def on_event(e):
        if e.status == S.BACKUPRESTORE_END and e.operation == wm.OperationKind.BACKUP and not chained:
            try:
                chained.append(r.restore(tmp_path / "bk", store_path=tmp_path / "dst",
                                         individualize=True))
            except BaseException as x:  # noqa: BLE001
                errors.append(x)
        if e.status == S.BACKUPRESTORE_PROGRESS and e.operation == wm.OperationKind.RESTORE:
            try:
                chained[0].wait(1)
            except wm.Busy:
                errors.append("busy-ok")

    r = wm.BackupRestorer(on_event=on_event)
    with r:
        r.backup(tmp_path / "bk", store_path=tmp_path / "src").wait(60)
        for _ in range(100):
            if chained:
                break
            time.sleep(0.01)
        assert chained[0].wait(60).processed == 3
    assert [e for e in errors if e != "busy-ok"] == []


def test_close_cancels_running_operation(tmp_path):
    fill(tmp_path / "big", 5_000)
    # The backup is held in its BEGIN callback so that close() finds it running whatever the
    # speed of a backup; the hold ends 0.2 s after close() was called (close() asks for the
    # cancel at once, then waits for END, which comes only after the callback returns).
    closing = threading.Event()

    def hold(e):
        if e.status == S.BACKUPRESTORE_BEGIN:
            closing.wait(60)

    r = wm.BackupRestorer(on_event=hold)
    op = r.backup(tmp_path / "bk", store_path=tmp_path / "big")
    threading.Timer(0.2, closing.set).start()
    r.close()
    assert op.done()
    with pytest.raises(wm.Canceled):
        op.wait(0)
    with pytest.raises(wm.Error):
        r.backup(tmp_path / "bk", store_path=tmp_path / "big")
