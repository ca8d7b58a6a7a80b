//! Small file-system helpers shared by the store, the service and the backup writer.

use crate::crypto;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Flushes a directory entry change (create, rename) to disk. A no-op where directories cannot
/// be opened (Windows).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates a directory (and its parents) readable only by the owner where the platform has modes.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
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

/// Creates a new file, readable and writable only by the owner (mode 0600).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
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

/// Reads a small file created by [`write_new_file_atomically`].
pub fn read_small_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
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
    fs::read(path)
}
