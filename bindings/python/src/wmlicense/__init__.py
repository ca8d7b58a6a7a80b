"""wmlicense: a local store of DRM content licenses with encrypted, asynchronous backup and restore.

Python binding of the wmlicense C library (``include/wmlicense.h``) over :mod:`ctypes`; the
library ships inside this package. See SPEC §7::

    import wmlicense as wm
    with wm.Store(path) as store:
        store.put(wm.License(b"kid", b"key", title="Song"))
    with wm.BackupRestorer(on_event=print) as r:
        result = r.backup("/backups/licenses", store_path=path).wait()

Threads: every function may be called from any thread. ``on_event`` runs on a library worker
thread, one event at a time per restorer, in order. Interpreter exit with operations in flight
is clean: an :mod:`atexit` hook destroys (cancels and waits for) every live restorer and stops
every running store iteration before the interpreter starts finalizing.
"""

from __future__ import annotations

import asyncio
import collections
import atexit
import ctypes
import enum
import itertools
import os
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Tuple,
                    Type, Union)

from . import _decls as C
from ._ffi import (lib, wm_backup_restorer, wm_event, wm_license, wm_license_store, wm_result,
                   wm_license_visitor, wm_status_callback)

__all__ = [
    "version", "License", "Right", "Store", "BackupRestorer", "Operation", "Result", "Event",
    "Status", "OperationKind", "Error", "InvalidArgument", "NotFound", "BackupExists",
    "BackupCorrupt", "Busy", "NeedsIndividualization", "RestoreLimitReached", "TooManyResets",
    "Canceled", "ServiceUnavailable", "StoreError", "hresult_message",
]

PathLike = Union[str, "os.PathLike[str]"]


def version() -> str:
    """The version of the bundled library, ``"MAJOR.MINOR.PATCH"``."""
    return lib.wm_version().decode()


def hresult_message(hr: int) -> str:
    """The library's English description of a result code."""
    return lib.wm_hresult_message(_signed(hr)).decode()


# --------------------------------------------------------------------------- enums


class Right(enum.IntFlag):
    """License rights (``WM_RIGHT_*``; the Windows Media Format SDK's WMT_RIGHTS values)."""

    PLAYBACK = C.WM_RIGHT_PLAYBACK
    COPY_TO_NON_SDMI_DEVICE = C.WM_RIGHT_COPY_TO_NON_SDMI_DEVICE
    COPY_TO_CD = C.WM_RIGHT_COPY_TO_CD
    COPY_TO_SDMI_DEVICE = C.WM_RIGHT_COPY_TO_SDMI_DEVICE
    ONE_TIME = C.WM_RIGHT_ONE_TIME
    SAVE_STREAM_PROTECTED = C.WM_RIGHT_SAVE_STREAM_PROTECTED
    COPY = C.WM_RIGHT_COPY
    COLLABORATIVE_PLAY = C.WM_RIGHT_COLLABORATIVE_PLAY
    BACKUP = C.WM_RIGHT_BACKUP


class Status(enum.IntEnum):
    """What an event reports (``wm_status``: the SDK's WMT_STATUS values, plus PROGRESS)."""

    ERROR = C.WM_STATUS_ERROR
    BACKUPRESTORE_BEGIN = C.WM_STATUS_BACKUPRESTORE_BEGIN
    BACKUPRESTORE_END = C.WM_STATUS_BACKUPRESTORE_END
    BACKUPRESTORE_CONNECTING = C.WM_STATUS_BACKUPRESTORE_CONNECTING
    BACKUPRESTORE_DISCONNECTING = C.WM_STATUS_BACKUPRESTORE_DISCONNECTING
    ERROR_WITHURL = C.WM_STATUS_ERROR_WITHURL
    RESTRICTED_LICENSE = C.WM_STATUS_RESTRICTED_LICENSE
    BACKUPRESTORE_PROGRESS = C.WM_STATUS_BACKUPRESTORE_PROGRESS


class OperationKind(enum.IntEnum):
    """Which operation an event belongs to (``wm_operation``; ``NONE`` only in a result read
    before any operation finished)."""

    NONE = C.WM_OPERATION_NONE
    BACKUP = C.WM_OPERATION_BACKUP
    RESTORE = C.WM_OPERATION_RESTORE
    RELEASE = C.WM_OPERATION_RELEASE


# --------------------------------------------------------------------------- errors


def _signed(hr: int) -> int:
    hr &= 0xFFFFFFFF
    return hr - (1 << 32) if hr >= 1 << 31 else hr


_CODE_NAMES: Dict[int, str] = {
    v: k for k, v in C.CONSTANTS.items() if (k.startswith("WM_E_") or k.startswith("WM_S_"))
    and isinstance(v, int)
}


class Error(Exception):
    """A failure of the library: ``hr`` is the result code (a negative ``wm_hresult``, as in C;
    ``hr & 0xFFFFFFFF`` is the familiar ``0x8007…``/``0xC00D…`` form), ``message`` says what went
    wrong. Codes without a subclass of their own raise ``Error`` itself."""

    def __init__(self, hr: int, message: str = "") -> None:
        self.hr = _signed(hr)
        self.message = message or hresult_message(hr)
        super().__init__(self.hr, self.message)

    @property
    def code_name(self) -> str:
        """The header's name of the code, e.g. ``"WM_E_BACKUP_CORRUPT"``."""
        return _CODE_NAMES.get(self.hr, "")

    def __str__(self) -> str:
        name = self.code_name
        return f"0x{self.hr & 0xFFFFFFFF:08X}{' ' + name if name else ''}: {self.message}"


class InvalidArgument(Error, ValueError):
    """WM_E_INVALIDARG, WM_E_INVALID_KID, WM_E_INVALID_PROPERTY, WM_E_UNSUPPORTED_PROPERTY,
    WM_E_POINTER: a bad argument or property."""


class NotFound(Error, KeyError):
    """WM_E_NOT_FOUND (no such license) and WM_E_FILE_NOT_FOUND (no backup at the restore path).
    Also a :class:`KeyError`."""

    def __str__(self) -> str:  # KeyError would repr() the args
        return Error.__str__(self)


class BackupExists(Error):
    """WM_E_BACKUP_EXISTS: a backup is there and ``overwrite`` was not given."""


class BackupCorrupt(Error):
    """WM_E_BACKUP_CORRUPT: the backup is missing, truncated, altered or not a backup."""


class Busy(Error):
    """WM_E_BACKUPRESTORE_BUSY: an operation already runs on this restorer or backup path."""


class NeedsIndividualization(Error):
    """WM_E_NEEDS_INDIVIDUALIZATION: restore into a new store without ``individualize=True``."""


class RestoreLimitReached(Error):
    """WM_E_RESTORE_FRAUD: the License Management Service refuses: restore limit reached."""


class TooManyResets(Error):
    """WM_E_TOO_MANY_RESETS: a reset of a lineage's devices inside its reset window."""


class Canceled(Error):
    """WM_E_OPERATION_CANCELED: the operation was cancelled."""


class ServiceUnavailable(Error):
    """WM_E_RESTORE_SERVICE_UNAVAILABLE: the License Management Service cannot be reached."""


class StoreError(Error):
    """WM_E_LICENSE_STORE_ERROR: the license store cannot be opened, read or written."""


#: result code (from the header) -> exception class
ERRORS: Dict[int, Type[Error]] = {
    C.WM_E_INVALIDARG: InvalidArgument,
    C.WM_E_INVALID_KID: InvalidArgument,
    C.WM_E_INVALID_PROPERTY: InvalidArgument,
    C.WM_E_UNSUPPORTED_PROPERTY: InvalidArgument,
    C.WM_E_POINTER: InvalidArgument,
    C.WM_E_NOT_FOUND: NotFound,
    C.WM_E_FILE_NOT_FOUND: NotFound,
    C.WM_E_BACKUP_EXISTS: BackupExists,
    C.WM_E_BACKUP_CORRUPT: BackupCorrupt,
    C.WM_E_BACKUPRESTORE_BUSY: Busy,
    C.WM_E_NEEDS_INDIVIDUALIZATION: NeedsIndividualization,
    C.WM_E_RESTORE_FRAUD: RestoreLimitReached,
    C.WM_E_TOO_MANY_RESETS: TooManyResets,
    C.WM_E_OPERATION_CANCELED: Canceled,
    C.WM_E_RESTORE_SERVICE_UNAVAILABLE: ServiceUnavailable,
    C.WM_E_LICENSE_STORE_ERROR: StoreError,
}


def error_for(hr: int, message: str = "") -> Error:
    """The exception for a failing result code."""
    return ERRORS.get(_signed(hr), Error)(hr, message)


def _check(hr: int) -> int:
    if hr < 0:
        raise error_for(hr, (lib.wm_last_error_message() or b"").decode("utf-8", "replace"))
    return hr


def _cstr(value: Optional[PathLike]) -> Optional[bytes]:
    if value is None:
        return None
    return os.fsencode(value) if not isinstance(value, str) else value.encode("utf-8")


# --------------------------------------------------------------------------- licenses


def _bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str) or not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


@dataclass
class License:
    """A content license (``wm_license``). ``key_id`` and ``content_key`` are 1 to 64 bytes;
    ``content_key`` is secret (left out of ``repr``). Dates are unix seconds (0 = none);
    ``play_count`` -1 means unlimited; on restore the copy with the newer ``issued_at`` wins."""

    key_id: bytes
    content_key: bytes = field(repr=False)
    title: Optional[str] = None
    rights: Right = Right.PLAYBACK | Right.BACKUP
    play_count: int = -1
    begin_date: int = 0
    expiration_date: int = 0
    issued_at: int = 0

    def _to_c(self, keep: List[Any]) -> Any:
        kid = _bytes(self.key_id, "key_id")
        key = _bytes(self.content_key, "content_key")
        kbuf = (ctypes.c_uint8 * max(len(kid), 1)).from_buffer_copy(kid or b"\0")
        cbuf = (ctypes.c_uint8 * max(len(key), 1)).from_buffer_copy(key or b"\0")
        keep.extend((kbuf, cbuf))
        title = None if self.title is None else str(self.title).encode("utf-8")
        u8p = ctypes.POINTER(ctypes.c_uint8)
        return wm_license(
            ctypes.cast(kbuf, u8p), len(kid), ctypes.cast(cbuf, u8p), len(key), title,
            int(self.rights) & 0xFFFFFFFF, int(self.play_count), int(self.begin_date),
            int(self.expiration_date), int(self.issued_at))

    @classmethod
    def _from_c(cls, c: Any) -> "License":
        try:
            rights: Right = Right(c.rights)
        except ValueError:  # bits this binding does not know (a newer library)
            rights = c.rights  # type: ignore[assignment]
        return cls(
            key_id=ctypes.string_at(c.key_id, c.key_id_len),
            content_key=ctypes.string_at(c.content_key, c.content_key_len),
            title=None if not c.title else c.title.decode("utf-8"),
            rights=rights, play_count=c.play_count, begin_date=c.begin_date,
            expiration_date=c.expiration_date, issued_at=c.issued_at)


# --------------------------------------------------------------------------- store

_live_iterators: "weakref.WeakSet[_StoreIterator]" = weakref.WeakSet()
_ITER_QUEUE = 256
_STOP = object()


class _StoreIterator(Iterator[License]):
    """Streams a store: a thread runs ``wm_license_store_for_each`` on a handle of its own and
    hands each license over through a bounded queue (memory stays bounded; the snapshot is the
    library's, consistent from the first license to the last). Its own handle means the consumer
    may keep using the store meanwhile."""

    def __init__(self, path: Optional[bytes]) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=_ITER_QUEUE)
        self._stop = threading.Event()
        self._finished = False
        h = ctypes.POINTER(wm_license_store)()
        _check(lib.wm_license_store_open(path, ctypes.byref(h)))
        self._handle = h
        self._thread = threading.Thread(target=self._produce, name="wmlicense-iter", daemon=True)
        _live_iterators.add(self)
        self._thread.start()

    def _hand_over(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        def visit(lic: Any, _ctx: Any) -> int:
            try:
                item = License._from_c(lic.contents)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                self._hand_over((_STOP, e))
                return 1
            return 0 if self._hand_over(item) else 1

        visitor = wm_license_visitor(visit)
        end: Any = None
        try:
            hr = lib.wm_license_store_for_each(self._handle, visitor, None)
            if hr < 0:
                end = error_for(hr, (lib.wm_last_error_message() or b"").decode())
        finally:
            lib.wm_license_store_close(self._handle)
            self._hand_over((_STOP, end))

    def __iter__(self) -> "_StoreIterator":
        return self

    def __next__(self) -> License:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, tuple) and item and item[0] is _STOP:
            self._finished = True
            self._thread.join()
            if item[1] is not None:
                raise item[1]
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops the iteration early (the library's for_each returns at the next license)."""
        self._finished = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass


class Store:
    """An open license store (``wm_license_store``), a directory; ``path=None`` is the default
    store (``$WMLICENSE_HOME`` or the platform's per-user data directory). A context manager;
    :meth:`close` is idempotent. Safe to use from several threads at once."""

    def __init__(self, path: Optional[PathLike] = None) -> None:
        self._path = _cstr(path)
        h = ctypes.POINTER(wm_license_store)()
        _check(lib.wm_license_store_open(self._path, ctypes.byref(h)))
        self._handle = h
        self._closed = False

    @property
    def path(self) -> Optional[str]:
        """The path given to the constructor (``None``: the default store)."""
        return None if self._path is None else os.fsdecode(self._path)

    def close(self) -> None:
        """Closes the handle (a call running on it in another thread finishes first). Using a
        closed store raises :class:`Error` (WM_E_HANDLE)."""
        if not self._closed:
            self._closed = True
            lib.wm_license_store_close(self._handle)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def put(self, license: License) -> None:
        """Inserts the license, or replaces the one with the same key ID."""
        keep: List[Any] = []
        c = license._to_c(keep)
        _check(lib.wm_license_store_put(self._handle, ctypes.byref(c)))

    def put_many(self, licenses: Iterable[License]) -> None:
        """Inserts or replaces all the licenses in one transaction: all or none."""
        items = list(licenses)
        keep: List[Any] = []
        arr = (wm_license * max(len(items), 1))()
        for i, lic in enumerate(items):
            arr[i] = lic._to_c(keep)
        _check(lib.wm_license_store_put_many(self._handle, arr, len(items)))

    def remove(self, key_id: bytes) -> None:
        """Removes the license; :class:`NotFound` when there is none."""
        kid = _bytes(key_id, "key_id")
        _check(lib.wm_license_store_remove(self._handle, _u8(kid), len(kid)))

    def get(self, key_id: bytes) -> License:
        """The license with this key ID; :class:`NotFound` (a :class:`KeyError`) when none."""
        kid = _bytes(key_id, "key_id")
        found: List[License] = []

        def visit(lic: Any, _ctx: Any) -> int:
            found.append(License._from_c(lic.contents))
            return 0

        visitor = wm_license_visitor(visit)
        _check(lib.wm_license_store_get(self._handle, _u8(kid), len(kid), visitor, None))
        if not found:  # the visitor raised (reported by ctypes)
            raise Error(C.WM_E_UNEXPECTED, "the license could not be read")
        return found[0]

    def __len__(self) -> int:
        n = ctypes.c_uint64()
        _check(lib.wm_license_store_count(self._handle, ctypes.byref(n)))
        return n.value

    def __contains__(self, key_id: object) -> bool:
        try:
            self.get(key_id)  # type: ignore[arg-type]
        except NotFound:
            return False
        return True

    def __iter__(self) -> Iterator[License]:
        """Streams every license in key-ID byte order from one consistent snapshot, through a
        bounded queue fed by a thread on a handle of its own (see :class:`_StoreIterator`)."""
        if self._closed:
            _check(C.WM_E_HANDLE)
        return _StoreIterator(self._path)


def _u8(data: bytes) -> Any:
    buf = ctypes.create_string_buffer(data, max(len(data), 1))
    return ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8))  # the cast keeps buf alive


# --------------------------------------------------------------------------- events, results


@dataclass(frozen=True)
class Event:
    """One event of a backup restorer (a copy of ``wm_event``; see the header for which fields
    each status fills)."""

    status: Status
    hr: int
    operation: OperationKind
    key_id: Optional[bytes]
    title: Optional[str]
    processed: int
    total: int
    skipped: int
    message: Optional[str]
    devices_used: int
    device_limit: int

    @classmethod
    def _from_c(cls, e: Any) -> "Event":
        try:
            status: Status = Status(e.status)
        except ValueError:
            status = e.status  # type: ignore[assignment]
        try:
            operation: OperationKind = OperationKind(e.operation)
        except ValueError:
            operation = e.operation  # type: ignore[assignment]
        return cls(
            status=status, hr=e.hr, operation=operation,
            key_id=ctypes.string_at(e.key_id, e.key_id_len) if e.key_id else None,
            title=e.title.decode("utf-8", "replace") if e.title else None,
            processed=e.processed, total=e.total, skipped=e.skipped,
            message=e.message.decode("utf-8", "replace") if e.message else None,
            devices_used=e.devices_used, device_limit=e.device_limit)


@dataclass(frozen=True)
class Result:
    """What a successful operation did (from its END event). ``restricted``: key IDs of the
    licenses a backup left out. ``hr`` is WM_S_OK, or WM_S_FALSE when a release changed
    nothing."""

    processed: int
    total: int
    skipped: int
    restricted: List[bytes]
    devices_used: int
    device_limit: int
    hr: int = 0


# --------------------------------------------------------------------------- operations


class Operation:
    """A started backup, restore or release. ``wait()`` or ``await op`` for its :class:`Result`
    (or the :class:`Error` its END carries); :meth:`cancel` to stop it; ``events`` lists the
    events delivered so far."""

    def __init__(self, restorer: "BackupRestorer", kind: OperationKind) -> None:
        self._restorer = restorer
        self.kind = kind
        self.events: List[Event] = []
        self._restricted: List[bytes] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._end: Optional[Event] = None
        self._outcome: Optional[Union[Result, Error]] = None
        self._futures: List[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]] = []

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<wmlicense.Operation {self.kind.name.lower()} {state}>"

    # called on the library thread
    def _add(self, ev: Event) -> None:
        self.events.append(ev)
        if ev.status == Status.RESTRICTED_LICENSE and ev.key_id is not None:
            self._restricted.append(ev.key_id)
        elif ev.status == Status.BACKUPRESTORE_END:
            self._end = ev
            # The outcome as the library recorded it (wm_backup_restorer_last_result reads this
            # END's record from inside its delivery); only the message comes from the event.
            r = self._restorer._last_result()
            if r is None or r.hr < 0:
                hr = ev.hr if r is None else r.hr
                self._outcome = error_for(hr, ev.message or "")
            else:
                self._outcome = Result(r.processed, r.total, r.skipped, list(self._restricted),
                                       r.devices_used, r.device_limit, r.hr)

    def _finish(self, outcome: Optional[Union[Result, Error]] = None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            if outcome is not None and self._outcome is None:
                self._outcome = outcome
            self._done.set()
            futures, self._futures = self._futures, []
        for loop, fut in futures:
            try:
                loop.call_soon_threadsafe(self._resolve, fut)
            except RuntimeError:  # loop closed
                pass

    def _resolve(self, fut: "asyncio.Future[Any]") -> None:
        if fut.done():
            return
        if isinstance(self._outcome, Error):
            fut.set_exception(self._outcome)
        else:
            fut.set_result(self._outcome)

    def done(self) -> bool:
        """True once END was delivered (and ``on_event`` returned from it)."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Blocks (without holding the GIL) until END; returns the :class:`Result` or raises
        the :class:`Error` of END. :class:`TimeoutError` after ``timeout`` seconds. From the
        restorer's own ``on_event`` it raises :class:`Busy` (it would wait for itself)."""
        if not self._done.is_set() and not self._restorer._ended_here(self):
            if not self._done.wait(timeout):
                raise TimeoutError(f"the {self.kind.name.lower()} did not end within {timeout} s")
        if isinstance(self._outcome, Error):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def cancel(self) -> bool:
        """Asks the operation to stop (END then carries :class:`Canceled`). Returns False when
        it has already ended."""
        return self._restorer._cancel(self)

    async def _wait_async(self) -> Result:
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Any]" = loop.create_future()
        with self._lock:
            if self._done.is_set():
                self._resolve(fut)
            else:
                self._futures.append((loop, fut))
        return await fut  # type: ignore[no-any-return]

    def __await__(self) -> Generator[Any, None, Result]:
        """``await op``: like :meth:`wait`, without blocking the event loop (END resolves a
        future through ``call_soon_threadsafe``)."""
        return self._wait_async().__await__()


# --------------------------------------------------------------------------- restorer

_ids = itertools.count(1)
_restorers: Dict[int, "BackupRestorer"] = {}  # id -> restorer, while the library may call it
_restorers_lock = threading.Lock()


def _on_status(event: Any, context: Optional[int]) -> None:
    # The one callback of every restorer, alive for the life of the module: the context is the
    # restorer's id, looked up here, so no per-restorer ctypes thunk can be freed too early.
    with _restorers_lock:
        r = _restorers.get(context or 0)
    if r is not None:
        r._deliver(event.contents)


_ON_STATUS = wm_status_callback(_on_status)


class BackupRestorer:
    """A backup restorer (``wm_backup_restorer``): runs one backup, restore or release at a
    time on the library's worker threads. ``on_event(event)`` is called on a library thread for
    every :class:`Event`, in order; if it raises, the exception is reported (``sys.unraisablehook``,
    through ctypes) and the operation goes on. ``data_path`` sets the DataPath property (the
    embedded License Management Service's directory; default ``$WMLICENSE_HOME``).

    A context manager: leaving it (or :meth:`close`) cancels a running operation and waits for
    its END. Until then the module keeps the restorer alive (the library may call it); one left
    open is closed at interpreter exit."""

    def __init__(self, on_event: Optional[Callable[[Event], Any]] = None, *,
                 data_path: Optional[PathLike] = None) -> None:
        self.on_event = on_event
        self._data_path = None if data_path is None else os.fspath(data_path)
        self._id = next(_ids)
        self._start_lock = threading.RLock()
        # Operations started whose BEGIN has not come yet, in start order, and the one whose
        # events are delivered now. Only the mapping of events to Operation objects: whether an
        # operation may start, runs or has ended is the library's to say.
        self._queued: "collections.deque[Operation]" = collections.deque()
        self._current: Optional[Operation] = None
        self._closed = False
        h = ctypes.POINTER(wm_backup_restorer)()
        with _restorers_lock:
            _restorers[self._id] = self
        try:
            _check(lib.wm_backup_restorer_create(_ON_STATUS, ctypes.c_void_p(self._id),
                                                 ctypes.byref(h)))
        except BaseException:
            with _restorers_lock:
                _restorers.pop(self._id, None)
            raise
        self._handle = h

    # -- events (library thread)
    def _deliver(self, c_event: Any) -> None:
        ev = Event._from_c(c_event)
        if ev.status == Status.BACKUPRESTORE_BEGIN:
            # After the start call returned (it holds the lock): the operation is queued.
            with self._start_lock:
                self._current = self._queued.popleft() if self._queued else None
        op = self._current
        if op is None:
            return
        op._add(ev)
        try:
            if self.on_event is not None:
                self.on_event(ev)  # an exception propagates to ctypes, which reports it
        finally:
            if ev.status == Status.BACKUPRESTORE_END:
                if self._current is op:
                    self._current = None
                op._finish()

    # -- operations
    def _set_props(self, props: Dict[str, Optional[PathLike]]) -> None:
        _check(lib.wm_backup_restorer_remove_all_props(self._handle))
        if self._data_path is not None:
            props = dict(props, **{C.WM_PROP_DATA_PATH: self._data_path})
        for name, value in props.items():
            if value is None:
                continue
            raw = _cstr(value) or b""
            buf = (ctypes.c_uint8 * max(len(raw), 1)).from_buffer_copy(raw or b"\0")
            _check(lib.wm_backup_restorer_set_prop(
                self._handle, str(name).encode(), C.WM_TYPE_STRING, buf, len(raw)))

    def _start(self, kind: OperationKind, fn: Any, flags: int,
               props: Dict[str, Optional[PathLike]]) -> Operation:
        with self._start_lock:
            if self._closed:
                raise Error(C.WM_E_HANDLE, "the restorer is closed")
            self._set_props(props)
            op = Operation(self, kind)
            # The library refuses a start while an operation runs (Busy). BEGIN waits for this
            # lock, so the operation is queued before its first event is delivered.
            _check(fn(self._handle, flags))
            self._queued.append(op)
            return op

    def _last_result(self) -> Optional[Any]:
        """The library's record of the last operation that finished, or None before any."""
        r = wm_result()
        r.struct_size = ctypes.sizeof(wm_result)
        if _check(lib.wm_backup_restorer_last_result(self._handle, ctypes.byref(r))) != C.WM_S_OK:
            return None
        return r

    def _ended_here(self, op: Operation) -> bool:
        """Whether ``op`` has ended as far as this thread can tell without waiting: the library
        says the restorer is idle here (inside its END's delivery, on this thread). Raises
        :class:`Busy` where the library says a wait would wait for itself."""
        if self._closed:
            return False
        hr = _check(lib.wm_backup_restorer_wait(self._handle, 0))
        return hr == C.WM_S_OK and op._end is not None

    def backup(self, backup_path: PathLike, store_path: Optional[PathLike] = None,
               overwrite: bool = False, service_url: Optional[str] = None,
               service_key: Optional[str] = None) -> Operation:
        """Starts backing up the store (``store_path`` or the default) into
        ``<backup_path>/licenses.wmlb``. Raises at once only for :class:`BackupExists`,
        :class:`Busy` and bad arguments; every other outcome comes from the operation."""
        return self._start(OperationKind.BACKUP, lib.wm_backup_restorer_backup,
                           C.WM_BACKUP_OVERWRITE if overwrite else 0, {
                               C.WM_PROP_BACKUP_PATH: backup_path,
                               C.WM_PROP_STORE_PATH: store_path,
                               C.WM_PROP_SERVICE_URL: service_url,
                               C.WM_PROP_SERVICE_KEY: service_key})

    def restore(self, restore_path: PathLike, store_path: Optional[PathLike] = None,
                individualize: bool = False, verify_only: bool = False,
                service_url: Optional[str] = None) -> Operation:
        """Starts restoring the backup at ``restore_path`` (a directory or the file) into the
        store. ``individualize`` creates a store that does not exist yet; ``verify_only`` checks
        everything and changes nothing."""
        flags = (C.WM_RESTORE_INDIVIDUALIZE if individualize else 0) | (
            C.WM_RESTORE_VERIFY_ONLY if verify_only else 0)
        return self._start(OperationKind.RESTORE, lib.wm_backup_restorer_restore, flags, {
            C.WM_PROP_RESTORE_PATH: restore_path,
            C.WM_PROP_STORE_PATH: store_path,
            C.WM_PROP_SERVICE_URL: service_url})

    def release(self, store_path: Optional[PathLike] = None, all_devices: bool = False,
                restore_path: Optional[PathLike] = None,
                service_url: Optional[str] = None) -> Operation:
        """Starts a release: the store gives back its device's slot (``Result.hr`` is WM_S_FALSE
        when it was not counted), or with ``all_devices`` every device of the lineages of the
        backup at ``restore_path`` is freed (once per reset window, else
        :class:`TooManyResets`)."""
        return self._start(OperationKind.RELEASE, lib.wm_backup_restorer_release,
                           C.WM_RELEASE_ALL_DEVICES if all_devices else 0, {
                               C.WM_PROP_RESTORE_PATH: restore_path,
                               C.WM_PROP_STORE_PATH: store_path,
                               C.WM_PROP_SERVICE_URL: service_url})

    def _cancel(self, op: Operation) -> bool:
        with self._start_lock:
            in_flight = self._current is op or op in self._queued
        if op.done() or self._closed or not in_flight:
            return False
        fn = {OperationKind.BACKUP: lib.wm_backup_restorer_cancel_backup,
              OperationKind.RESTORE: lib.wm_backup_restorer_cancel_restore,
              OperationKind.RELEASE: lib.wm_backup_restorer_cancel_release}[op.kind]
        return _check(fn(self._handle)) == C.WM_S_OK

    def close(self) -> None:
        """Destroys the restorer: cancels a running operation and waits for its END (from
        inside its own ``on_event`` it cannot wait: the operation then ends as cancelled and
        no more events come). Idempotent."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        lib.wm_backup_restorer_destroy(self._handle)
        with self._start_lock:
            left = [self._current] + list(self._queued)
            self._queued.clear()
        for op in left:
            if op is not None and not op.done():
                op._finish(Canceled(C.WM_E_OPERATION_CANCELED, "the restorer was closed"))
        # destroy returned: the library never calls back for this restorer again (from inside
        # its own callback, the running callback is the last; it holds the restorer itself).
        with _restorers_lock:
            _restorers.pop(self._id, None)

    def __enter__(self) -> "BackupRestorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _shutdown() -> None:
    # Runs before the interpreter starts finalizing (atexit): afterwards, a library thread that
    # calls back into Python would be ended by the interpreter with a forced unwind (pthread_exit)
    # which the library's catch_unwind turns into an abort. So every restorer is destroyed
    # (cancel + wait for END) and every store iteration stopped while callbacks still work.
    for it in list(_live_iterators):
        it.close()
    with _restorers_lock:
        live = list(_restorers.values())
    for r in live:
        r.close()


atexit.register(_shutdown)
