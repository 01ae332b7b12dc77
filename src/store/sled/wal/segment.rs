//! Log segments: numbered files in the data directory's `wal/` folder,
//! written front to back and synced with `fdatasync`.
//!
//! A segment is created at its full size, filled with zeroes and synced
//! before its first record, so appending never changes the file's size or
//! block map: each sync then writes only data, which measured about twice as
//! fast as a sync that also grows the file (ext4, this project's machine).
//! Zeroes read as "no record here", so a segment's written part ends at the
//! first zero header.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How large a segment is made. Once one is full its records are
/// checkpointed (sled flushed, the segment deleted), so this also bounds how
/// much a start after a crash replays.
pub const SEGMENT_BYTES: u64 = 16 << 20;

const SUFFIX: &str = ".wal";

pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// The segments in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|seq| seq.parse::<u64>().ok())
        else {
            continue;
        };
        found.push(seq);
    }
    found.sort_unstable();
    Ok(found)
}

/// Deletes every segment numbered `through` or lower.
pub fn remove_through(dir: &Path, through: u64) -> io::Result<()> {
    for seq in list(dir)? {
        if seq <= through {
            fs::remove_file(path(dir, seq))?;
        }
    }
    sync_dir(dir)
}

/// Makes a directory's entries (files created or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being written.
pub struct Segment {
    pub seq: u64,
    file: File,
    written: u64,
}

impl Segment {
    /// Creates segment `seq`, zero-filled to [`SEGMENT_BYTES`] and synced,
    /// with its directory entry synced too. With `pause`, it is written in
    /// small synced pieces with a pause after each: a spare made while the
    /// log is busy then never puts 16 MiB of writeback in front of the
    /// log's own syncs (one burst measured ~0.2 s on this project's disk).
    pub fn create(dir: &Path, seq: u64, pause: Option<Duration>) -> io::Result<Segment> {
        let path = path(dir, seq);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let zeroes = vec![0; 256 << 10];
        let made = (0..SEGMENT_BYTES / zeroes.len() as u64)
            .try_for_each(|_| {
                file.write_all(&zeroes)?;
                if let Some(pause) = pause {
                    file.sync_data()?;
                    std::thread::sleep(pause);
                }
                Ok(())
            })
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(dir));
        if let Err(error) = made {
            // A half-made segment holds nothing; do not leave it taking space
            // on a disk that is likely full.
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        Ok(Segment {
            seq,
            file,
            written: 0,
        })
    }

    /// Whether `bytes` more fit.
    pub fn fits(&self, bytes: usize) -> bool {
        self.written + bytes as u64 <= SEGMENT_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Writes `bytes` after what is there and returns once they are on disk.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.written)?;
        self.file.sync_data()?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}
