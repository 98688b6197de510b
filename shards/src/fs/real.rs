//! The real disk: glommio's DMA files for the log, std files for the rest, blocking calls on the
//! shard's blocking pool.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Runs `f` on the shard's blocking pool: the shard's thread goes on serving meanwhile.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    glommio::executor().spawn_blocking(f).await
}

/// A log file opened three ways: DMA reads and writes through the ring; buffered reads, which
/// zero-copy sends take ranges of when the page cache holds them (O_DIRECT writes invalidate the
/// cached pages they cover); and O_DIRECT reads of the ranges it does not.
pub struct Direct {
    dma: glommio::io::DmaFile,
    buffered: Arc<File>,
    direct: Arc<File>,
}

impl Direct {
    /// Opens (creating) the file at `path` once by name; the other two opens go through that
    /// descriptor (`/proc/self/fd`), so all three are the same file even if the name is removed
    /// meanwhile (a topic deleted, a segment retention took). glommio looks the name up again after
    /// its open and panics if it is gone: through the descriptor it cannot be.
    pub async fn open(path: &Path) -> io::Result<Direct> {
        use std::os::fd::AsRawFd;
        let buffered = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let by_fd = std::path::PathBuf::from(format!("/proc/self/fd/{}", buffered.as_raw_fd()));
        let same = if by_fd.exists() { by_fd.as_path() } else { path };
        let dma = glommio::io::OpenOptions::new().read(true).write(true).dma_open(same).await?;
        let direct = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(same)?;
        Ok(Direct { dma, buffered: Arc::new(buffered), direct: Arc::new(direct) })
    }

    pub fn alloc(&self, len: usize) -> glommio::io::DmaBuffer {
        self.dma.alloc_dma_buffer(len)
    }

    pub async fn write_at(&self, buf: glommio::io::DmaBuffer, pos: u64) -> io::Result<usize> {
        Ok(self.dma.write_at(buf, pos).await?)
    }

    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<glommio::io::ReadResult> {
        Ok(self.dma.read_at(pos, len).await?)
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        Ok(self.dma.truncate(len).await?)
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        Ok(self.dma.fdatasync().await?)
    }

    pub fn range(&self, pos: u64, len: usize) -> crate::FileRange {
        crate::FileRange { file: self.buffered.clone(), direct: self.direct.clone(), pos, len }
    }
}

/// Starts reading `[from, to)` of `file` into the page cache without waiting for it (a hint: an
/// error only means the later read waits).
pub fn read_ahead(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to.saturating_sub(from))) else { return };
    // SAFETY: a hint on a descriptor we own; it touches no memory of ours.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
}

pub fn write_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    {
        let mut f = File::create(tmp)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)?;
    sync_dir(super::parent(path))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?.sync_all()
}

/// (total, available to an unprivileged writer) bytes of `dir`'s filesystem.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and statvfs writes only the struct we pass.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks as u64 * st.f_frsize as u64, st.f_bavail as u64 * st.f_frsize as u64))
}

/// Makes glommio's one-time "does this disk support polled I/O" probe see a real block of data.
///
/// glommio probes the first DMA file it opens on each device with a read, and caches the answer for
/// the process. On an empty file that read "succeeds" (end of file), polled I/O is wrongly enabled,
/// and every later read on the device fails with EOPNOTSUPP. Call this before opening DMA files under
/// `dir`: it opens a file holding one written block first, so the probe gets a true answer. glommio
/// keeps that answer per thread, so this primes the calling shard only.
pub async fn prime_direct_io(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    thread_local! {
        static PRIMED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dev = std::fs::metadata(dir)?.dev();
    if PRIMED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(format!(".weir-direct-io-probe-{}-{:?}", std::process::id(), std::thread::current().id()));
    let written = std::fs::write(&path, vec![0u8; 4096]).and_then(|()| std::fs::File::open(&path)?.sync_all());
    let probe = match written {
        Ok(()) => path.clone(),
        // A full disk: a file already holding a block does as well, and start-up must not need space.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => {
            let _ = std::fs::remove_file(&path);
            match file_with_a_block(dir) {
                Some(existing) => existing,
                None => return Err(e),
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let file = glommio::io::DmaFile::open(&probe).await.map_err(std::io::Error::from)?;
    file.close().await.map_err(std::io::Error::from)?;
    if probe == path {
        std::fs::remove_file(&path)?;
    }
    PRIMED.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

/// A regular file of at least one block in `dir` or one level below it.
fn file_with_a_block(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let big_enough = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() >= 4096);
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir).ok()?.filter_map(|e| Some(e.ok()?.path())).collect();
    entries.iter().find(|p| big_enough(p)).cloned().or_else(|| {
        entries
            .iter()
            .filter(|p| p.is_dir())
            .find_map(|sub| std::fs::read_dir(sub).ok()?.filter_map(|e| Some(e.ok()?.path())).find(|p| big_enough(p)))
    })
}
