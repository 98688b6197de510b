//! A disk in memory that remembers what is durable, for fault-injection tests.
//!
//! The model of what survives a power loss (see `docs/storage.md`, fault model):
//! * File data: bytes are durable once an fsync of the file (`sync`) returned. Every write or
//!   truncation since is, on a crash, independently kept, dropped, or torn: each 512-byte sector of
//!   the write kept or not, and the file's size possibly extended over the dropped end (zeros). Later
//!   writes apply after earlier ones.
//! * Names: creating, renaming and removing files are journaled in order, as ext4 does: a crash
//!   keeps a prefix of them. An fsync of a directory makes every name operation up to the last one
//!   in that directory durable.
//! * Faults: `crash_after(n)` ends the "process" at its n-th next file operation (that operation
//!   and every later one fail with EIO, as if nothing after it reached the disk); then `kill` (the
//!   process died, the page cache lives: every write made stays) or `crash` (a power loss) starts
//!   the next one. `fail_after(n, kind)` fails one operation and lets the rest proceed. Handles
//!   opened before a kill or crash keep failing: they belong to the process that died.
//!
//! Seeded: the same operations and the same seed give the same disk after `crash`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const SECTOR: u64 = 512;
/// Direct writes must be aligned to this, like O_DIRECT on the disks Weir targets.
const BLOCK: u64 = 4096;

/// The simulated disk. Shared by the handles opened on it.
pub struct SimDisk {
    state: RefCell<Disk>,
}

/// Takes its disk's mount away when dropped (see `super::simulate_at`).
pub struct Simulated {
    dir: PathBuf,
    disk: Rc<SimDisk>,
}

impl Simulated {
    pub(super) fn new(dir: PathBuf, disk: Rc<SimDisk>) -> Simulated {
        Simulated { dir, disk }
    }
}

impl Drop for Simulated {
    fn drop(&mut self) {
        super::unmount(&self.dir, &self.disk);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Clone, Debug)]
enum NameOp {
    Create(PathBuf, Node),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

enum DataOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Default)]
struct Inode {
    /// What the process reads.
    current: Vec<u8>,
    /// What survives any crash.
    durable: Vec<u8>,
    /// Changes from `durable` to `current`, in order.
    pending: Vec<DataOp>,
}

struct Disk {
    generation: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names the process sees, and those that survive any crash, with the operations between.
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    pending_names: Vec<NameOp>,
    ops: u64,
    crash_at: Option<u64>,
    fail_at: Option<(u64, io::ErrorKind)>,
    /// Operations failed by `fail_after` since the last `crash` or `kill`.
    faults: u64,
    down: bool,
    capacity: u64,
}

/// An open file of the simulated disk.
pub struct Handle {
    disk: Rc<SimDisk>,
    inode: u64,
    generation: u64,
}

impl SimDisk {
    /// An empty disk of unlimited size, holding the root directory.
    pub fn new() -> Rc<SimDisk> {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Node::Dir);
        Rc::new(SimDisk {
            state: RefCell::new(Disk {
                generation: 0,
                inodes: BTreeMap::new(),
                next_inode: 1,
                durable_names: names.clone(),
                names,
                pending_names: Vec::new(),
                ops: 0,
                crash_at: None,
                fail_at: None,
                faults: 0,
                down: false,
                capacity: u64::MAX,
            }),
        })
    }

    /// The process dies at its `n`-th next file operation (1 = the next one).
    pub fn crash_after(&self, n: u64) {
        let mut d = self.state.borrow_mut();
        d.crash_at = Some(d.ops + n.max(1));
    }

    /// The `n`-th next file operation fails with `kind`; the others proceed.
    pub fn fail_after(&self, n: u64, kind: io::ErrorKind) {
        let mut d = self.state.borrow_mut();
        d.fail_at = Some((d.ops + n.max(1), kind));
    }

    /// Cancels the crash and the failure `crash_after` and `fail_after` set up, if still to come.
    pub fn disarm(&self) {
        let mut d = self.state.borrow_mut();
        d.crash_at = None;
        d.fail_at = None;
    }

    /// Whether the process has died (`crash_after`): every operation fails until `crash`.
    pub fn is_down(&self) -> bool {
        self.state.borrow().down
    }

    /// Operations `fail_after` made fail since the disk last came up.
    pub fn faults_injected(&self) -> u64 {
        self.state.borrow().faults
    }

    /// File operations so far.
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    /// Bytes the disk holds at most (data of all files); writes past it fail with ENOSPC.
    pub fn set_capacity(&self, bytes: u64) {
        self.state.borrow_mut().capacity = bytes;
    }

    /// A power loss: what is durable stays; each unsynced change is kept, dropped or torn, as
    /// `seed` decides. Handles opened before fail from now on; the disk is up again.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng(seed);
        let mut d = self.state.borrow_mut();
        let kept = rng.below(d.pending_names.len() as u64 + 1) as usize;
        let ops: Vec<NameOp> = d.pending_names.drain(..kept).collect();
        for op in ops {
            apply_name_op(&mut d.durable_names, op);
        }
        d.pending_names.clear();
        d.names = d.durable_names.clone();
        let live: std::collections::HashSet<u64> =
            d.names.values().filter_map(|n| if let Node::File(i) = n { Some(*i) } else { None }).collect();
        d.inodes.retain(|i, _| live.contains(i));
        for inode in d.inodes.values_mut() {
            let mut data = std::mem::take(&mut inode.durable);
            for op in inode.pending.drain(..) {
                match (op, rng.below(3)) {
                    (_, 0) => {}
                    (DataOp::Write(pos, bytes), 1) => write_into(&mut data, pos, &bytes),
                    (DataOp::Write(pos, bytes), _) => tear_into(&mut data, pos, &bytes, &mut rng),
                    (DataOp::SetLen(len), _) => data.resize(len as usize, 0),
                }
            }
            inode.current = data.clone();
            inode.durable = data;
        }
        d.generation += 1;
        d.down = false;
        d.crash_at = None;
        d.fail_at = None;
        d.faults = 0;
    }

    /// The process dies but the machine does not (kill -9): every write made stays, synced or
    /// not; handles opened before fail from now on; the disk is up again.
    pub fn kill(&self) {
        let mut d = self.state.borrow_mut();
        d.generation += 1;
        d.down = false;
        d.crash_at = None;
        d.fail_at = None;
        d.faults = 0;
    }

    /// The bytes of the file at `path` as the process sees them.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let d = self.state.borrow();
        match d.names.get(path) {
            Some(Node::File(i)) => Some(d.inodes[i].current.clone()),
            _ => None,
        }
    }

    /// Replaces the content of an existing file, durably (damage done to the disk by a test).
    pub fn damage(&self, path: &Path, bytes: Vec<u8>) -> bool {
        let mut d = self.state.borrow_mut();
        let Some(&Node::File(i)) = d.names.get(path) else { return false };
        let inode = d.inodes.get_mut(&i).expect("named inode");
        inode.pending.clear();
        inode.current = bytes.clone();
        inode.durable = bytes;
        true
    }

    /// Paths of the files whose names are visible now, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.borrow().names.iter().filter(|(_, n)| matches!(n, Node::File(_))).map(|(p, _)| p.clone()).collect()
    }

    /// Counts an operation, and decides whether it fails.
    fn begin(&self) -> io::Result<std::cell::RefMut<'_, Disk>> {
        let mut d = self.state.borrow_mut();
        if d.down {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        d.ops += 1;
        if d.crash_at == Some(d.ops) {
            d.down = true;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some((at, kind)) = d.fail_at {
            if at == d.ops {
                d.fail_at = None;
                d.faults += 1;
                return Err(match kind {
                    io::ErrorKind::StorageFull => io::Error::from_raw_os_error(libc::ENOSPC),
                    _ => io::Error::from_raw_os_error(libc::EIO),
                });
            }
        }
        Ok(d)
    }

    pub(super) fn open(self: &Rc<Self>, path: &Path, create: bool) -> io::Result<Handle> {
        let mut d = self.begin()?;
        let inode = match d.names.get(path) {
            Some(Node::File(i)) => *i,
            Some(Node::Dir) => return Err(io::Error::other(format!("{} is a directory", path.display()))),
            None if create => d.create_file(path)?,
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(Handle { disk: self.clone(), inode, generation: d.generation })
    }

    /// Creates (or empties) the file at `path`.
    pub(super) fn create(self: &Rc<Self>, path: &Path) -> io::Result<Handle> {
        let h = self.open(path, true)?;
        h.set_len(0)?;
        Ok(h)
    }

    pub(super) fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let d = self.begin()?;
        match d.names.get(path) {
            Some(Node::File(i)) => Ok(d.inodes[i].current.clone()),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
        let mut d = self.begin()?;
        if let Some(Node::File(_)) = d.names.get(path) {
            d.name_op(NameOp::Remove(path.to_path_buf()));
        }
        Ok(())
    }

    pub(super) fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.begin()?;
        if !d.names.contains_key(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let under: Vec<PathBuf> = d.names.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        for p in under.into_iter().rev() {
            d.name_op(NameOp::Remove(p));
        }
        Ok(())
    }

    pub(super) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.begin()?;
        if !d.names.contains_key(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        d.check_parent(to)?;
        d.name_op(NameOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.begin()?;
        let touches = |op: &NameOp| match op {
            NameOp::Create(p, _) | NameOp::Remove(p) => p.parent() == Some(dir),
            NameOp::Rename(a, b) => a.parent() == Some(dir) || b.parent() == Some(dir),
        };
        if let Some(last) = d.pending_names.iter().rposition(touches) {
            let ops: Vec<NameOp> = d.pending_names.drain(..=last).collect();
            for op in ops {
                apply_name_op(&mut d.durable_names, op);
            }
        }
        Ok(())
    }

    pub(super) fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.begin()?;
        for a in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match d.names.get(a) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(io::Error::other(format!("{} is a file", a.display()))),
                None => d.name_op(NameOp::Create(a.to_path_buf(), Node::Dir)),
            }
        }
        Ok(())
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        self.state.borrow().names.contains_key(path)
    }

    pub(super) fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let d = self.begin()?;
        if d.names.get(dir) != Some(&Node::Dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(d.names.keys().filter(|p| p.parent() == Some(dir)).filter_map(|p| Some(p.file_name()?.to_str()?.to_string())).collect())
    }

    pub(super) fn space(&self) -> (u64, u64) {
        let d = self.state.borrow();
        (d.capacity, d.capacity.saturating_sub(d.used()))
    }
}

impl Disk {
    fn name_op(&mut self, op: NameOp) {
        apply_name_op(&mut self.names, op.clone());
        self.pending_names.push(op);
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent().map(|p| self.names.get(p)) {
            Some(Some(Node::Dir)) => Ok(()),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn create_file(&mut self, path: &Path) -> io::Result<u64> {
        self.check_parent(path)?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(inode, Inode::default());
        self.name_op(NameOp::Create(path.to_path_buf(), Node::File(inode)));
        Ok(inode)
    }

    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len().max(i.durable.len()) as u64).sum()
    }
}

fn apply_name_op(names: &mut BTreeMap<PathBuf, Node>, op: NameOp) {
    match op {
        NameOp::Create(p, node) => {
            names.insert(p, node);
        }
        NameOp::Remove(p) => {
            names.remove(&p);
        }
        NameOp::Rename(a, b) => {
            if let Some(node) = names.remove(&a) {
                names.insert(b, node);
            }
        }
    }
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let (pos, end) = (pos as usize, pos as usize + bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    data[pos..end].copy_from_slice(bytes);
}

/// Some sectors of the write reach the disk, the others not; the file may end where the write did
/// (zeros where its sectors were lost) or after its last surviving sector.
fn tear_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8], rng: &mut Rng) {
    let end = pos + bytes.len() as u64;
    let mut at = pos;
    while at < end {
        let next = ((at / SECTOR) + 1) * SECTOR;
        let next = next.min(end);
        if rng.below(2) == 0 {
            write_into(data, at, &bytes[(at - pos) as usize..(next - pos) as usize]);
        }
        at = next;
    }
    if rng.below(2) == 0 && (data.len() as u64) < end {
        data.resize(end as usize, 0);
    }
}

impl Handle {
    fn disk(&self) -> io::Result<std::cell::RefMut<'_, Disk>> {
        let d = self.disk.begin()?;
        if d.generation != self.generation {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(d)
    }

    fn change(&self, op: DataOp) -> io::Result<()> {
        let mut d = self.disk()?;
        let grows = match &op {
            DataOp::Write(pos, bytes) => (pos + bytes.len() as u64).saturating_sub(d.inodes[&self.inode].current.len() as u64),
            DataOp::SetLen(len) => len.saturating_sub(d.inodes[&self.inode].current.len() as u64),
        };
        if d.used() + grows > d.capacity {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inode = d.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match &op {
            DataOp::Write(pos, bytes) => write_into(&mut inode.current, *pos, bytes),
            DataOp::SetLen(len) => inode.current.resize(*len as usize, 0),
        }
        inode.pending.push(op);
        Ok(())
    }

    pub(super) fn write_direct(&self, bytes: &[u8], pos: u64) -> io::Result<usize> {
        if !pos.is_multiple_of(BLOCK) || !(bytes.len() as u64).is_multiple_of(BLOCK) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.change(DataOp::Write(pos, bytes.to_vec()))?;
        Ok(bytes.len())
    }

    pub(super) fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len()?;
        self.change(DataOp::Write(end, bytes.to_vec()))
    }

    pub(super) fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(DataOp::SetLen(len))
    }

    pub(super) fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let d = self.disk()?;
        let data = &d.inodes[&self.inode].current;
        let from = (pos as usize).min(data.len());
        Ok(data[from..(from + len).min(data.len())].to_vec())
    }

    pub(super) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let bytes = self.read_at(pos, buf.len())?;
        if bytes.len() < buf.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    pub(super) fn len(&self) -> io::Result<u64> {
        Ok(self.disk()?.inodes[&self.inode].current.len() as u64)
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        let mut d = self.disk()?;
        let inode = d.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        for op in inode.pending.drain(..) {
            match op {
                DataOp::Write(pos, bytes) => write_into(&mut inode.durable, pos, &bytes),
                DataOp::SetLen(len) => inode.durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }
}

/// The seeds a fault-injection test runs: `WEIR_SEEDS=a..b`, or one seed `WEIR_SEEDS=n`, else `default`.
pub fn seeds_from_env(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var("WEIR_SEEDS") else { return default };
    match spec.split_once("..") {
        Some((a, b)) => a.parse().unwrap_or(0)..b.parse().unwrap_or(0),
        None => spec.parse().map_or(default, |s: u64| s..s + 1),
    }
}

/// SplitMix64: small, seeded, good enough to pick fates (and workloads, in tests).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk holding `/d/a`: one block written and synced, the next written and not synced.
    fn one_synced_block_one_not() -> (Rc<SimDisk>, Handle) {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a"), true).unwrap();
        f.write_direct(&[1; 4096], 0).unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_direct(&[2; 4096], 4096).unwrap();
        (disk, f)
    }

    #[test]
    fn synced_bytes_survive_and_unsynced_ones_may_not() {
        let mut outcomes = std::collections::HashSet::new();
        for seed in 0..64 {
            let (disk, f) = one_synced_block_one_not();
            assert_eq!(f.len().unwrap(), 8192);
            disk.crash(seed);
            let data = disk.file(Path::new("/d/a")).expect("a synced name survives");
            assert_eq!(&data[..4096], &[1; 4096][..], "synced bytes survive");
            assert!(data[4096..].iter().all(|&b| b == 0 || b == 2));
            outcomes.insert(data.len() as u64 / SECTOR * 1000 + data.iter().filter(|&&b| b == 2).count() as u64 / SECTOR);
            assert!(f.len().is_err(), "a handle of the dead process fails");
        }
        assert!(outcomes.len() > 3, "crashes keep, drop and tear: {outcomes:?}");
    }

    #[test]
    fn names_survive_in_order_and_after_a_directory_fsync() {
        for seed in 0..32 {
            let disk = SimDisk::new();
            disk.create_dir_all(Path::new("/d")).unwrap();
            disk.sync_dir(Path::new("/")).unwrap();
            disk.create(Path::new("/d/x.tmp")).unwrap().sync().unwrap();
            disk.rename(Path::new("/d/x.tmp"), Path::new("/d/x")).unwrap();
            disk.create(Path::new("/d/y")).unwrap();
            disk.crash(seed);
            let files = disk.files();
            assert!(!files.contains(&PathBuf::from("/d/y")) || files.contains(&PathBuf::from("/d/x")), "a prefix: {files:?}");
        }
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk.create(Path::new("/d/x")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.crash(7);
        assert_eq!(disk.files(), vec![PathBuf::from("/d/x")]);
    }

    #[test]
    fn the_process_dies_at_the_chosen_operation() {
        let disk = SimDisk::new();
        disk.crash_after(2);
        disk.create_dir_all(Path::new("/d")).unwrap();
        assert!(disk.create(Path::new("/d/a")).is_err());
        assert!(disk.is_down());
        assert!(disk.list(Path::new("/")).is_err());
        disk.fail_after(1, io::ErrorKind::StorageFull);
        disk.crash(1);
        assert!(!disk.is_down());
        disk.fail_after(1, io::ErrorKind::StorageFull);
        assert_eq!(disk.list(Path::new("/")).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert!(disk.list(Path::new("/")).is_ok());
    }
}
