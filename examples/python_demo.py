#!/usr/bin/env python3
"""wmlicense from Python: puts licenses into a store, backs them up and restores the backup into a
new store, printing every event as it arrives (on a library thread).

    pip install ./bindings/python
    python examples/python_demo.py [WORKDIR]

Everything lives under WORKDIR (default: a temporary directory), including WMLICENSE_HOME, the
home of the embedded License Management Service.
"""

import os
import sys
import tempfile

import wmlicense as wm


def on_event(e: wm.Event) -> None:
    line = f"  [{e.operation.name.lower()}] {e.status.name}"
    if e.status == wm.Status.BACKUPRESTORE_PROGRESS:
        line += f" {e.processed}/{e.total}"
    elif e.status == wm.Status.RESTRICTED_LICENSE:
        line += f" key_id={e.key_id.hex() if e.key_id else ''} title={e.title!r}"
    elif e.status == wm.Status.BACKUPRESTORE_END:
        line += (f" hr=0x{e.hr & 0xFFFFFFFF:08X} processed={e.processed} total={e.total}"
                 f" skipped={e.skipped}")
        if e.device_limit:
            line += f" devices {e.devices_used} of {e.device_limit}"
        if e.message:
            line += f" ({e.message})"
    print(line, flush=True)


def main() -> int:
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="wmlicense-demo-")
    os.environ.setdefault("WMLICENSE_HOME", os.path.join(work, "home"))
    store_a, store_b = os.path.join(work, "store-a"), os.path.join(work, "store-b")
    backup_dir = os.path.join(work, "backup")
    print(f"wmlicense {wm.version()}, working in {work}")

    with wm.Store(store_a) as store:
        store.put_many([
            wm.License(b"\x0a\x0b", b"\x11\x22\x33\x44", title="Song"),
            wm.License(b"\x0c\x0d", b"\x55\x66", title="Album track", play_count=10),
            wm.License(b"movie-1", b"k" * 16, title="Movie", issued_at=1_700_000_000),
            wm.License(b"rental", b"r" * 16, title="Rental (no backup right)",
                       rights=wm.Right.PLAYBACK),
        ])
        print(f"store A holds {len(store)} licenses:")
        for lic in store:
            print(f"  {lic.key_id!r:14} {lic.title!r:28} {lic.rights!r}")

    with wm.BackupRestorer(on_event=on_event) as r:
        print("backup:")
        res = r.backup(backup_dir, store_path=store_a, overwrite=True).wait()
        print(f"backed up {res.processed} of {res.total}; left out {[k for k in res.restricted]}")
        print("restore into a new store:")
        res = r.restore(backup_dir, store_path=store_b, individualize=True).wait()
        print(f"restored {res.processed} of {res.total} (devices {res.devices_used} of "
              f"{res.device_limit})")

    with wm.Store(store_b) as store:
        print(f"store B holds {len(store)} licenses; b'rental' in B: {b'rental' in store}")
        try:
            store.get(b"rental")
        except wm.NotFound as e:
            print(f"get(b'rental'): {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
