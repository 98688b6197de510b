//! A log's open files: opened on use, a few closed segments' kept for the reads that follow, all
//! closed when the partition is idle (`writer`) or when the shard's file budget needs them for
//! another log (`file_budget`).

use super::*;

/// Closed segments per partition whose files stay open after a read (a consumer reading old data
/// reads on in the same segment; the active segment's are open anyway).
const READ_FILES_MAX: usize = 2;

/// A partition with nothing to write or read for this long gives preallocated zeros back to the
/// disk and closes its files (they are opened again on next use).
pub(super) const IDLE_AFTER: Duration = Duration::from_secs(5);

impl Log {
    /// Wakes the writer of a log that holds files and has been idle for `IDLE_AFTER`, so that it
    /// lets them go (the shard's sweeper calls this).
    pub fn wake_if_idle(&self) {
        if self.state().last_used.elapsed() >= IDLE_AFTER {
            self.writer_wake.notify_all();
        }
    }

    /// The open files of the segment starting at `base`, opened now if they were closed. A closed
    /// segment's files stay open for the reads that follow, at most `READ_FILES_MAX` segments' per
    /// partition; all close when the partition is idle (`writer`).
    pub(super) async fn files_of(&self, base: u64) -> Result<Handles, LogError> {
        let path = {
            let s = self.state();
            let seg = s.segment(base)?;
            if let Some(handles) = seg.handles() {
                return Ok(handles);
            }
            seg.path.clone()
        };
        crate::storage::file_budget::make_room(crate::storage::segment::FILES_PER_SEGMENT, Some(self));
        let opened = Handles::open(&path).await?;
        crate::storage::file_budget::note_holder(&self.me);
        let mut guard = self.state();
        let s = &mut *guard;
        let active = s.segments.last().is_some_and(|seg| seg.base == base);
        let Ok(at) = s.segments.binary_search_by_key(&base, |seg| seg.base) else {
            return Ok(opened); // deleted meanwhile: this read still has its files
        };
        if let Some(handles) = s.segments[at].handles() {
            return Ok(handles); // another task opened them first
        }
        s.segments[at].set_handles(opened.clone());
        if !active {
            s.reading.push_back(base);
            while s.reading.len() > READ_FILES_MAX {
                let oldest = s.reading.pop_front().expect("checked");
                if let Ok(i) = s.segments.binary_search_by_key(&oldest, |seg| seg.base) {
                    if i + 1 < s.segments.len() {
                        s.segments[i].release_files();
                    }
                }
            }
        }
        drop(guard);
        // The writer closes the files again once the partition is idle.
        self.writer_wake.notify_all();
        Ok(opened)
    }

    /// When the log was last written or read.
    pub fn last_used(&self) -> Instant {
        self.state().last_used
    }

    /// Closes every file the log holds (the shard's file budget needs them); they are opened again
    /// on next use.
    pub fn release_files(&self) {
        let mut s = self.state();
        s.reading.clear();
        for seg in &mut s.segments {
            seg.release_files();
        }
        crate::storage::file_budget::forget_holder(&self.me);
    }
}
