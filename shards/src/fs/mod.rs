//! The file interface every storage read, write, fsync, rename and unlink goes through.
//!
//! Two disks sit behind it. The real one: O_DIRECT writes and reads through io_uring (glommio's DMA
//! files), buffered reads for recovery scans and zero-copy sends, and every other blocking call
//! (fsync of indexes and directories, unlink, rename, truncate, the small metadata files) run on the
//! shard's blocking pool, so that no shard thread waits on the disk. And a simulated disk in memory
//! (`SimDisk`) that knows which bytes are durable, loses, keeps or tears unsynced writes on a
//! simulated power loss, and fails chosen calls: the fault-injection tests run the storage code
//! unchanged on it.
//!
//! A thread uses the real disk unless `simulate` put a simulated one in place: the choice is made
//! per thread, since each shard is a thread and the tests run one executor per test thread. Several
//! simulated disks can serve one thread, each under its own directory (`simulate_at`), so that a
//! test crashes them independently (replicas on two disks).

mod real;
mod sim;

pub use sim::{seeds_from_env, Rng, SimDisk, Simulated};

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

thread_local! {
    /// The simulated disks and the directories they serve (`/`: every path).
    static SIM: RefCell<Vec<(PathBuf, Rc<SimDisk>)>> = const { RefCell::new(Vec::new()) };
}

/// Sends this thread's file operations to `disk` until the returned guard is dropped.
pub fn simulate(disk: Rc<SimDisk>) -> Simulated {
    simulate_at(Path::new("/"), disk)
}

/// Sends this thread's file operations on paths under `dir` to `disk` until the returned guard is
/// dropped (the disk sees the whole paths).
pub fn simulate_at(dir: &Path, disk: Rc<SimDisk>) -> Simulated {
    SIM.with(|s| s.borrow_mut().push((dir.to_path_buf(), disk.clone())));
    Simulated::new(dir.to_path_buf(), disk)
}

/// Takes the mount of `disk` at `dir` away (guards may be dropped in any order).
fn unmount(dir: &Path, disk: &Rc<SimDisk>) {
    SIM.with(|s| {
        let mut mounts = s.borrow_mut();
        if let Some(i) = mounts.iter().rposition(|(d, m)| d == dir && Rc::ptr_eq(m, disk)) {
            mounts.remove(i);
        }
    });
}

/// The simulated disk serving `path`, if any (the one of the longest directory holding it).
fn sim(path: &Path) -> Option<Rc<SimDisk>> {
    SIM.with(|s| {
        s.borrow().iter().filter(|(dir, _)| path.starts_with(dir)).max_by_key(|(dir, _)| dir.as_os_str().len()).map(|(_, d)| d.clone())
    })
}

/// A file written with O_DIRECT in whole aligned blocks and read back by position, whose ranges can
/// be sent to a socket without a copy (a segment's log).
pub struct DirectFile(Direct);

enum Direct {
    Real(real::Direct),
    Sim(sim::Handle),
}

impl DirectFile {
    /// Opens `path` for reading and writing, creating it if absent.
    pub async fn open(path: &Path) -> io::Result<DirectFile> {
        Ok(DirectFile(match sim(path) {
            Some(disk) => Direct::Sim(disk.open(path, true)?),
            None => Direct::Real(real::Direct::open(path).await?),
        }))
    }

    /// A zeroed buffer for `write_at`, aligned as direct writes need.
    pub fn alloc(&self, len: usize) -> WriteBuf {
        WriteBuf(match &self.0 {
            Direct::Real(f) => WriteInner::Dma(f.alloc(len)),
            Direct::Sim(_) => WriteInner::Mem(vec![0; len]),
        })
    }

    /// Writes `buf` at `pos` (both block aligned); returns the bytes written.
    pub async fn write_at(&self, buf: WriteBuf, pos: u64) -> io::Result<usize> {
        match (&self.0, buf.0) {
            (Direct::Real(f), WriteInner::Dma(b)) => f.write_at(b, pos).await,
            (Direct::Sim(h), WriteInner::Mem(b)) => h.write_direct(&b, pos),
            _ => Err(io::Error::other("a write buffer of another disk")),
        }
    }

    /// Up to `len` bytes from `pos` (fewer at the end of the file).
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadBuf> {
        Ok(ReadBuf(match &self.0 {
            Direct::Real(f) => ReadInner::Dma(f.read_at(pos, len).await?),
            Direct::Sim(h) => ReadInner::Mem(h.read_at(pos, len)?),
        }))
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        match &self.0 {
            Direct::Real(f) => f.truncate(len).await,
            Direct::Sim(h) => h.set_len(len),
        }
    }

    /// Makes what was written durable.
    pub async fn fdatasync(&self) -> io::Result<()> {
        match &self.0 {
            Direct::Real(f) => f.fdatasync().await,
            Direct::Sim(h) => h.sync(),
        }
    }

    /// `[pos, pos + len)` as a range a socket can be sent from without a copy; `None` on a disk that
    /// has no file descriptors (read the bytes instead).
    pub fn zero_copy(&self, pos: u64, len: usize) -> Option<crate::FileRange> {
        match &self.0 {
            Direct::Real(f) => Some(f.range(pos, len)),
            Direct::Sim(_) => None,
        }
    }
}

/// A buffer for `DirectFile::write_at`.
pub struct WriteBuf(WriteInner);

enum WriteInner {
    Dma(glommio::io::DmaBuffer),
    Mem(Vec<u8>),
}

impl WriteBuf {
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            WriteInner::Dma(b) => b.as_bytes_mut(),
            WriteInner::Mem(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            WriteInner::Dma(b) => b.len(),
            WriteInner::Mem(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes read by `DirectFile::read_at`.
pub struct ReadBuf(ReadInner);

enum ReadInner {
    Dma(glommio::io::ReadResult),
    Mem(Vec<u8>),
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            ReadInner::Dma(b) => b,
            ReadInner::Mem(b) => b,
        }
    }
}

/// A file read through the page cache by position, with synchronous reads: recovery scans, which
/// ask the kernel to read ahead first (`read_ahead`) so that the reads find the pages there.
pub struct ScanFile(Scan);

enum Scan {
    Real(std::fs::File),
    Sim(sim::Handle),
}

impl ScanFile {
    pub fn open(path: &Path) -> io::Result<ScanFile> {
        Ok(ScanFile(match sim(path) {
            Some(disk) => Scan::Sim(disk.open(path, false)?),
            None => Scan::Real(std::fs::File::open(path)?),
        }))
    }

    /// The file's length in bytes.
    pub fn size(&self) -> io::Result<u64> {
        match &self.0 {
            Scan::Real(f) => Ok(f.metadata()?.len()),
            Scan::Sim(h) => h.len(),
        }
    }

    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match &self.0 {
            Scan::Real(f) => std::os::unix::fs::FileExt::read_exact_at(f, buf, pos),
            Scan::Sim(h) => h.read_exact_at(buf, pos),
        }
    }

    /// Starts reading `[from, to)` into the page cache without waiting (a hint).
    pub fn read_ahead(&self, from: u64, to: u64) {
        if let Scan::Real(f) = &self.0 {
            real::read_ahead(f, from, to);
        }
    }
}

/// A small file written by appending through the page cache (a segment's indexes).
pub struct AppendFile(Append);

enum Append {
    Real(std::fs::File),
    Sim(sim::Handle),
}

impl AppendFile {
    /// Opens `path` for appending, creating it if absent.
    pub fn open(path: &Path) -> io::Result<AppendFile> {
        Ok(AppendFile(match sim(path) {
            Some(disk) => Append::Sim(disk.open(path, true)?),
            None => Append::Real(std::fs::OpenOptions::new().read(true).append(true).create(true).open(path)?),
        }))
    }

    pub fn append(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.0 {
            Append::Real(f) => io::Write::write_all(&mut &*f, bytes),
            Append::Sim(h) => h.append(bytes),
        }
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match &self.0 {
            Append::Real(f) => f.set_len(len),
            Append::Sim(h) => h.set_len(len),
        }
    }
}

/// The whole content of the file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    match sim(path) {
        Some(disk) => disk.read(path),
        None => std::fs::read(path),
    }
}

/// The whole content of the file at `path` if it holds at most `max` bytes; an `InvalidData` error
/// if it holds more (a file whose size damage set must not take the memory it claims).
pub fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let too_large = |len: u64| io::Error::new(io::ErrorKind::InvalidData, format!("{} holds {len} bytes, more than {max}", path.display()));
    match sim(path) {
        Some(disk) => disk.read(path).and_then(|b| if b.len() as u64 > max { Err(too_large(b.len() as u64)) } else { Ok(b) }),
        None => {
            let len = std::fs::metadata(path)?.len();
            if len > max {
                return Err(too_large(len));
            }
            std::fs::read(path)
        }
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old content or the new one:
/// written to `<path>.tmp`, fsynced, renamed over `path`, its directory fsynced.
pub async fn write_durably(path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match sim(path) {
        Some(disk) => {
            let h = disk.create(&tmp)?;
            h.append(&bytes)?;
            h.sync()?;
            disk.rename(&tmp, path)?;
            disk.sync_dir(parent(path))
        }
        None => {
            let path = path.to_path_buf();
            real::blocking(move || real::write_durably(&tmp, &path, &bytes)).await
        }
    }
}

/// Removes the file at `path`; one already gone is no error.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    match sim(path) {
        Some(disk) => disk.remove(path),
        None => {
            let path = path.to_path_buf();
            real::blocking(move || match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await
        }
    }
}

/// Removes the directory `dir` and everything in it.
pub async fn remove_dir_all(dir: &Path) -> io::Result<()> {
    match sim(dir) {
        Some(disk) => disk.remove_tree(dir),
        None => {
            let dir = dir.to_path_buf();
            real::blocking(move || std::fs::remove_dir_all(&dir)).await
        }
    }
}

pub async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    match sim(from) {
        Some(disk) => disk.rename(from, to),
        None => {
            let (from, to) = (from.to_path_buf(), to.to_path_buf());
            real::blocking(move || std::fs::rename(&from, &to)).await
        }
    }
}

/// Makes the directory's entries (files created, renamed or removed in it) durable.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    match sim(dir) {
        Some(disk) => disk.sync_dir(dir),
        None => {
            let dir = dir.to_path_buf();
            real::blocking(move || real::sync_dir(&dir)).await
        }
    }
}

/// Makes the file at `path` durable through a descriptor of its own.
pub async fn sync_file(path: &Path) -> io::Result<()> {
    match sim(path) {
        Some(disk) => disk.open(path, false)?.sync(),
        None => {
            let path = path.to_path_buf();
            real::blocking(move || std::fs::File::open(&path)?.sync_data()).await
        }
    }
}

/// Cuts (or extends with zeros) the file at `path` to `len` bytes.
pub async fn set_len(path: &Path, len: u64) -> io::Result<()> {
    match sim(path) {
        Some(disk) => disk.open(path, false)?.set_len(len),
        None => {
            let path = path.to_path_buf();
            real::blocking(move || std::fs::OpenOptions::new().write(true).open(&path)?.set_len(len)).await
        }
    }
}

/// Creates `dir` and its missing parents.
pub async fn create_dir_all(dir: &Path) -> io::Result<()> {
    match sim(dir) {
        Some(disk) => disk.create_dir_all(dir),
        None => {
            let dir = dir.to_path_buf();
            real::blocking(move || std::fs::create_dir_all(&dir)).await
        }
    }
}

pub fn exists(path: &Path) -> bool {
    match sim(path) {
        Some(disk) => disk.exists(path),
        None => path.exists(),
    }
}

/// The names of the entries of directory `dir`.
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    match sim(dir) {
        Some(disk) => disk.list(dir),
        None => Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
    }
}

/// Bytes an unprivileged writer may still use on `dir`'s filesystem.
pub fn available_bytes(dir: &Path) -> Option<u64> {
    space(dir).map(|(_, available)| available)
}

/// (total, available) bytes of `dir`'s filesystem.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    match sim(dir) {
        Some(disk) => Some(disk.space()),
        None => real::space(dir),
    }
}

/// Prepares the runtime for direct I/O on `dir`'s device (see `real::prime_direct_io`).
pub async fn prime_direct_io(dir: &Path) -> io::Result<()> {
    match sim(dir) {
        Some(_) => Ok(()),
        None => real::prime_direct_io(dir).await,
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
