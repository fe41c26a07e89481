//! The record spool: every queued invocation record is also appended to a file before the
//! queue may lose it, so that a process killed with records still queued (SIGKILL, a crash,
//! the OOM killer) writes them when it starts again. A write to the file reaches the kernel,
//! which keeps it past the process's death; a machine that loses power can still lose the last
//! few records (there is no fsync). The appends are made by a thread of their own, in batches,
//! and an endpoint's answer waits (boundedly) for its record's (`Recorder::record_spooled`).
//!
//! Records go to numbered segment files. The writer *seals* the current segment before taking
//! a batch (all of whose records are then in sealed segments, since appending and queueing
//! happen together under one lock), and deletes sealed segments once the batch is written.
//! A record may so be both written and still spooled when the process dies; each carries a
//! unique key and the store ignores a key it already has, so a replay doubles nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::records::InvocationRecord;

/// One spooled record, as read back: the fields the API does not show, and the rest.
#[derive(Deserialize)]
struct Line {
    tenant_id: i64,
    function_id: i64,
    key: String,
    #[serde(flatten)]
    record: InvocationRecord,
}

#[derive(Debug)]
pub(crate) struct Segment {
    seq: u64,
    file: File,
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    pub(crate) current: Mutex<Segment>,
    /// The last append failed (a full disk): warn once, not once per record, and say when
    /// appends work again.
    failing: std::sync::atomic::AtomicBool,
}

/// Where records the database refused are kept (see [`Spool::set_aside`]).
pub(crate) const REJECTED_FILE: &str = "rejected.jsonl";
/// The most [`REJECTED_FILE`] grows to.
pub(crate) const MAX_REJECTED_BYTES: u64 = 16 << 20;

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("records-{seq:020}.jsonl"))
}

fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("records-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn open_segment(dir: &Path, seq: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, seq))
}

impl Spool {
    /// Opens the spool in `dir` (created if missing). Returns it with the segments a previous
    /// process left, oldest first: their records are to be written before they are removed.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Vec<PathBuf>)> {
        std::fs::create_dir_all(dir)?;
        let mut left: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter_map(|p| segment_seq(&p).map(|s| (s, p)))
            .collect();
        left.sort();
        let seq = left.last().map_or(0, |(s, _)| s + 1);
        let file = open_segment(dir, seq)?;
        let spool = Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(Segment { seq, file }),
            failing: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((spool, left.into_iter().map(|(_, p)| p).collect()))
    }

    /// Keeps a record the database refused beside the spool (`rejected.jsonl`, in the
    /// spool's own line format), for the operator to look at; never replayed. At most
    /// [`MAX_REJECTED_BYTES`]: past that, rejected records are only counted and logged.
    pub(crate) fn set_aside(&self, record: &InvocationRecord) {
        let path = self.dir.join(REJECTED_FILE);
        let full = std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_REJECTED_BYTES);
        if full {
            return;
        }
        let kept = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&Self::line(record)));
        if let Err(e) = kept {
            tracing::warn!(error = %e, path = %path.display(), "cannot set a rejected record aside");
        }
    }

    /// A record as a spool line (serialised outside the lock).
    pub(crate) fn line(record: &InvocationRecord) -> Vec<u8> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            tenant_id: i64,
            function_id: i64,
            key: &'a str,
            #[serde(flatten)]
            record: &'a InvocationRecord,
        }
        let line = Borrowed {
            tenant_id: record.tenant_id,
            function_id: record.function_id,
            key: &record.key,
            record,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Runs `queue` on each of `lines`' records and appends the lines of those it took, in one
    /// write, all under the spool's lock. Returns, per record, what `queue` returned.
    pub(crate) fn append_queued<T>(
        &self,
        lines: impl IntoIterator<Item = (Vec<u8>, T)>,
        mut queue: impl FnMut(T) -> bool,
    ) -> Vec<bool> {
        let mut segment = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut buffer = Vec::new();
        let taken: Vec<bool> = lines
            .into_iter()
            .map(|(line, record)| {
                let took = queue(record);
                if took {
                    buffer.extend_from_slice(&line);
                }
                took
            })
            .collect();
        if buffer.is_empty() {
            return taken;
        }
        // One write: a line is never interleaved with another.
        use std::sync::atomic::Ordering;
        match segment.file.write_all(&buffer) {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                error = %e,
                dir = %self.dir.display(),
                "cannot spool invocation records (they stay queued in memory; warned once until it works again)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(dir = %self.dir.display(), "spooling invocation records again")
            }
            _ => {}
        }
        taken
    }

    /// Starts a new segment and returns the number of the last sealed one. `then` runs under
    /// the lock, after the switch: whatever was queued before it is in a sealed segment.
    pub(crate) fn seal<T>(&self, then: impl FnOnce() -> T) -> io::Result<(u64, T)> {
        let mut segment = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let next = open_segment(&self.dir, segment.seq + 1)?;
        let sealed = segment.seq;
        *segment = Segment {
            seq: sealed + 1,
            file: next,
        };
        Ok((sealed, then()))
    }

    /// Removes the sealed segments up to and including `seq`: their records are written.
    pub(crate) fn remove_through(&self, seq: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if segment_seq(&path).is_some_and(|s| s <= seq)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(error = %e, path = %path.display(), "cannot remove a spool segment");
            }
        }
    }
}

/// The records of a segment; a line cut short by the process's death is left out.
pub(crate) fn read_segment(path: &Path) -> io::Result<Vec<InvocationRecord>> {
    let mut records = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        match serde_json::from_str::<Line>(&line) {
            Ok(l) => records.push(InvocationRecord {
                tenant_id: l.tenant_id,
                function_id: l.function_id,
                key: l.key,
                ..l.record
            }),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "an unreadable spooled record")
            }
        }
    }
    Ok(records)
}
