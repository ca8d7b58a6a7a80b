//! Small file-system helpers shared by the store, the service and the backup writer.

use crate::crypto;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Flushes a directory entry change (create, rename) to disk. A no-op where directories cannot
/// be opened (Windows) and on file systems that do not sync directories (EINVAL, ENOTSUP); any
/// other failure is reported: the change may not survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir)?.sync_all() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => {}
            other => other?,
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Opens `path` with `options` only if it is a regular file (or, with `create`, a new one). A
/// FIFO, a device or a socket is refused with `InvalidInput` instead of blocking the caller
/// forever in open() or read(); a symbolic link to a regular file is followed.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO does not wait for its other end.
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )
    };
    let file = match options.open(path) {
        // A FIFO opened for writing without a reader.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_regular()),
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns; reads and clears a status flag.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(file)
}

/// Opens an existing regular file for reading (see [`open_regular`]).
pub fn open_regular_read(path: &Path) -> io::Result<File> {
    open_regular(path, OpenOptions::new().read(true))
}

/// An advisory, exclusive lock on a file (unix: flock, which also locks a directory; Windows:
/// LockFileEx on one byte far beyond any content, so that reads and writes of the file are not
/// blocked), held until dropped. Other processes see it; a process that dies releases it.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Locks `file` without waiting; `Ok(None)` when another holder has it.
    pub fn try_lock(file: File) -> io::Result<Option<FileLock>> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                return if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        }
        #[cfg(windows)]
        if !win::try_lock(&file)? {
            return Ok(None);
        }
        Ok(Some(FileLock { _file: file }))
    }

    /// Locks `file`, waiting for another holder; `cancelled` is asked every few milliseconds
    /// and ends the wait with `Interrupted`.
    pub fn lock(mut file: File, cancelled: &dyn Fn() -> bool) -> io::Result<FileLock> {
        loop {
            match FileLock::try_lock(file.try_clone()?)? {
                Some(lock) => {
                    drop(file);
                    return Ok(lock);
                }
                None if cancelled() => {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"))
                }
                None => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
            file = file.try_clone()?;
        }
    }

    /// Locks the directory `dir` (it must exist), waiting as [`FileLock::lock`] does. Unix:
    /// the directory itself. Windows, where a directory cannot be locked: the file
    /// `.wmlicense.lock` inside it, created if needed and left in place.
    pub fn lock_dir(dir: &Path, cancelled: &dyn Fn() -> bool) -> io::Result<FileLock> {
        #[cfg(unix)]
        let file = File::open(dir)?;
        #[cfg(not(unix))]
        let file = open_regular(
            &dir.join(DIR_LOCK_FILE),
            OpenOptions::new().create(true).truncate(false).write(true),
        )?;
        FileLock::lock(file, cancelled)
    }
}

/// Where a directory's lock is on Windows (see [`FileLock::lock_dir`]).
#[cfg(not(unix))]
pub const DIR_LOCK_FILE: &str = ".wmlicense.lock";

/// Creates a directory (and its parents) readable only by the owner: mode 0700 on unix, on
/// Windows a protected DACL granting the owner and SYSTEM only (see [`win::owner_only`]), which
/// what is created inside inherits.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        win::create_private_dir_all(dir)
    }
    #[cfg(not(windows))]
    {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
    }
}

/// A fresh temporary path beside `target` that no other writer uses.
pub fn temp_path_for(target: &Path) -> io::Result<PathBuf> {
    let tag: [u8; 8] = crypto::random_array().map_err(|e| io::Error::other(e.to_string()))?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    Ok(target.with_file_name(format!(".{name}.{}.{hex}.tmp", std::process::id())))
}

/// Creates a new file for writing, readable and writable only by the owner: mode 0600 on
/// unix, the owner-only DACL on Windows (set at creation: no moment where others may open it).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    #[cfg(windows)]
    {
        win::create_private_file(path)
    }
    #[cfg(not(windows))]
    {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o.open(path)
    }
}

/// Writes `bytes` to `path` only if `path` does not exist yet, atomically: readers see either
/// no file or the whole content. Returns `false` when another writer got there first.
pub fn write_new_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = temp_path_for(path)?;
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        let created = move_no_replace(&tmp, path)?;
        if created {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok(created)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes `bytes` to `path`, replacing what is there, atomically: readers see the old or the new
/// content, never a part.
pub fn replace_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path_for(path)?;
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Moves `src` to `dst` unless `dst` exists; returns whether it moved. A hard link fails when
/// the target exists, which makes this first-writer-wins even between processes. File systems
/// without hard links (FAT, some network shares) copy into a file created exclusively instead,
/// which is first-writer-wins too (a reader may briefly see it partly written).
pub fn move_no_replace(src: &Path, dst: &Path) -> io::Result<bool> {
    match fs::hard_link(src, dst) {
        Ok(()) => {
            let _ = fs::remove_file(src);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => copy_no_replace(src, dst),
    }
}

fn copy_no_replace(src: &Path, dst: &Path) -> io::Result<bool> {
    let mut out = match create_private_file(dst) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    let copied = File::open(src)
        .and_then(|mut input| io::copy(&mut input, &mut out))
        .and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(dst);
        return Err(e);
    }
    let _ = fs::remove_file(src);
    Ok(true)
}

/// Reads a small file created by [`write_new_file_atomically`]; anything but a regular file is
/// refused (see [`open_regular`]).
pub fn read_small_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular_read(path)?;
    let meta = file.metadata()?;
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {} bytes, more than {max}",
                path.display(),
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Flushes the file at `path` to disk on a helper thread, waiting for it in short steps so that
/// `cancelled` ends the wait at once (`Err(Interrupted)`; the flush then finishes unobserved).
/// A flush of a large file that the page cache holds can take a second; a cancel cannot.
pub fn sync_file_cancellable(path: &Path, cancelled: &dyn Fn() -> bool) -> io::Result<()> {
    // Opened for writing: Windows flushes only a handle with write access.
    let file = OpenOptions::new().write(true).open(path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("wmlicense-fsync".into())
        .spawn(move || {
            let _ = tx.send(file.sync_all());
        })?;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(5)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if cancelled() => {
                return Err(io::Error::from(io::ErrorKind::Interrupted))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the flush thread stopped"))
            }
        }
    }
}

/// A file being written from start to end that asks the kernel to start writing each 8 MiB to
/// disk as soon as it is complete (Linux: `sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does
/// not wait), so that the `fsync` at the end has little left to wait for. Elsewhere a plain
/// file.
pub struct WritebackFile {
    file: File,
    written: u64,
    started: u64,
}

impl WritebackFile {
    const STEP: u64 = 8 << 20;

    pub fn new(file: File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            started: 0,
        }
    }

    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor this value owns; it only starts
            // writeback of pages already written, and a failure is harmless (fsync still
            // follows), so its result is ignored.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.started = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= Self::STEP {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The Windows side of locks and owner-only files.
#[cfg(windows)]
pub mod win {
    use std::fs::File;
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::os::windows::io::{AsRawHandle, FromRawHandle};
    use std::path::Path;
    use windows_sys::Win32::Foundation::{
        CloseHandle, LocalFree, ERROR_ALREADY_EXISTS, ERROR_LOCK_VIOLATION, HANDLE,
        INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
        SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{
        GetTokenInformation, TokenUser, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        CreateDirectoryW, CreateFileW, LockFileEx, CREATE_NEW, FILE_ATTRIBUTE_NORMAL,
        FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_SHARE_DELETE, FILE_SHARE_READ,
        FILE_SHARE_WRITE, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    use windows_sys::Win32::System::IO::OVERLAPPED;

    /// LockFileEx on one byte at 2^63 - 1: far beyond any content, so the lock (mandatory on
    /// Windows for the range it covers) never blocks a read or a write of the file.
    pub(super) fn try_lock(file: &File) -> io::Result<bool> {
        // SAFETY: OVERLAPPED is plain data; zero is its documented initial state.
        let mut at: OVERLAPPED = unsafe { std::mem::zeroed() };
        at.Anonymous.Anonymous.Offset = u32::MAX;
        at.Anonymous.Anonymous.OffsetHigh = i32::MAX as u32;
        // SAFETY: a handle this file owns and an OVERLAPPED that outlives the (synchronous)
        // call.
        let ok = unsafe {
            LockFileEx(
                file.as_raw_handle() as HANDLE,
                LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
                0,
                1,
                0,
                &mut at,
            )
        };
        if ok != 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
            Ok(false)
        } else {
            Err(e)
        }
    }

    fn wide(path: &Path) -> Vec<u16> {
        path.as_os_str().encode_wide().chain(Some(0)).collect()
    }

    /// A security descriptor whose protected DACL grants full access to the current user and to
    /// SYSTEM only, inherited by files and directories created inside: what mode 0600/0700
    /// (plus root) is on unix.
    pub struct OwnerOnly(*mut core::ffi::c_void);

    impl Drop for OwnerOnly {
        fn drop(&mut self) {
            // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed
            // once.
            unsafe { LocalFree(self.0) };
        }
    }

    impl OwnerOnly {
        fn attributes(&self) -> SECURITY_ATTRIBUTES {
            SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: self.0,
                bInheritHandle: 0,
            }
        }
    }

    /// The current user's SID as a string (`S-1-5-21-…`).
    fn user_sid() -> io::Result<String> {
        // SAFETY: each call gets buffers of the sizes it is told; the token handle is closed
        // and the string freed before returning.
        unsafe {
            let mut token: HANDLE = std::ptr::null_mut();
            if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = vec![0u64; 128];
            let mut len = 0u32;
            let ok = GetTokenInformation(
                token,
                TokenUser,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut len,
            );
            let got = if ok == 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            };
            CloseHandle(token);
            got?;
            let user = &*(buf.as_ptr() as *const TOKEN_USER);
            let mut text: *mut u16 = std::ptr::null_mut();
            if ConvertSidToStringSidW(user.User.Sid, &mut text) == 0 {
                return Err(io::Error::last_os_error());
            }
            let n = (0..).take_while(|&i| *text.add(i) != 0).count();
            let sid = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
            LocalFree(text.cast());
            Ok(sid)
        }
    }

    /// The owner-only security descriptor (see [`OwnerOnly`]).
    /// `inherit`: for a directory, whose files and subdirectories inherit it.
    pub fn owner_only(inherit: bool) -> io::Result<OwnerOnly> {
        let flags = if inherit { "OICI" } else { "" };
        let sddl = format!("D:P(A;{flags};FA;;;SY)(A;{flags};FA;;;{})", user_sid()?);
        let sddl: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
        let mut sd = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string; the descriptor is freed by OwnerOnly's drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnerOnly(sd))
    }

    pub(super) fn create_private_file(path: &Path) -> io::Result<File> {
        let sd = owner_only(false)?;
        let sa = sd.attributes();
        let name = wide(path);
        // SAFETY: a NUL-terminated path and attributes that outlive the call; the handle is
        // owned by the File returned.
        unsafe {
            let h = CreateFileW(
                name.as_ptr(),
                FILE_GENERIC_READ | FILE_GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                &sa,
                CREATE_NEW,
                FILE_ATTRIBUTE_NORMAL,
                std::ptr::null_mut(),
            );
            if h == INVALID_HANDLE_VALUE {
                return Err(io::Error::last_os_error());
            }
            Ok(File::from_raw_handle(h as _))
        }
    }

    /// Creates `dir` and its missing parents, each with the owner-only descriptor.
    pub(super) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            create_private_dir_all(parent)?;
        }
        let sd = owner_only(true)?;
        let sa = sd.attributes();
        let name = wide(dir);
        // SAFETY: a NUL-terminated path and attributes that outlive the call.
        if unsafe { CreateDirectoryW(name.as_ptr(), &sa) } != 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(ERROR_ALREADY_EXISTS as i32) && dir.is_dir() {
            return Ok(());
        }
        Err(e)
    }
}
