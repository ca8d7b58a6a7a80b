"""Interpreter exit with operations and iterations in flight exits cleanly (exit code 0)."""

import subprocess
import sys
import textwrap

import wmlicense as wm
from conftest import lic

SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import wmlicense as wm
    src, bk, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    events = []
    r = wm.BackupRestorer(on_event=lambda e: events.append(e))
    op = r.backup(bk, store_path=src, overwrite=True)
    if mode == "iter":
        it = iter(wm.Store(src)); next(it)
    if mode == "thread":
        threading.Thread(target=lambda: op.wait(), daemon=True).start()
    time.sleep(0.05)
    print("exiting", op.done(), flush=True)
""")


def test_exit_with_operation_in_flight(tmp_path):
    src = tmp_path / "src"
    with wm.Store(src) as s:
        s.put_many(lic(i) for i in range(100_000))
    for mode in ["plain", "iter", "thread", "plain", "plain"]:
        p = subprocess.run([sys.executable, "-c", SCRIPT, str(src), str(tmp_path / "bk"), mode],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (mode, p.returncode, p.stderr)
        assert "exiting False" in p.stdout, p.stdout
        assert "FATAL" not in p.stderr


def test_example_script(tmp_path):
    from conftest import REPO

    demo = REPO / "examples" / "python_demo.py"
    p = subprocess.run([sys.executable, str(demo), str(tmp_path / "demo")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "BACKUPRESTORE_END" in p.stdout and "restored 3 of 3" in p.stdout
