//! Mirrors of the WAL: the committed frames of each WAL generation, copied into a file of
//! their own as soon as the wal-index says they are committed (at the same offsets, after
//! the WAL's header). The shipper encodes LTX files from the mirrors, never from the live
//! WAL.
//!
//! This is what lets SQLite restart the WAL at once while the replica is behind. Before a
//! restart, the restart hook copies the few frames the copier has not reached yet and
//! *seals* the mirror: everything the generation committed is in it, and the WAL may be
//! overwritten. A restart that nobody sealed (a program without the extension restarted the
//! WAL while no process of ours held the pin, `vfs/pin.rs`) is found out at the next copy:
//! the generations no longer follow one another, and the leader ships the whole database
//! instead of a replica with a hole.
//!
//! Only the leader process (`lease.rs`) writes mirrors. Another process may seal the newest
//! one, after checking that the leader has copied every committed frame (`progress.rs`).
//!
//! Files in `<db>-litestream/wal/`, numbered in the order the generations were seen:
//! - `<seq>-<salt1>-<salt2>.wal`: the copy;
//! - `<seq>-<salt1>-<salt2>-<end offset>-<cksum1>-<cksum2>.sealed`: an empty marker, the
//!   generation ended there and SQLite may restart the WAL;
//! - `spare-<slot>.copy`, `spare-<slot>.seal`: released copies and markers kept for the
//!   next generations.
//!   A new generation comes every thousand pages or so, and creating a file costs far more
//!   than renaming one (on ext4 without a journal, a create skips every inode deleted in the
//!   last minute: a third of a millisecond on the test machines); a recycled copy also
//!   keeps its blocks and cached pages. What a recycled copy holds past the new
//!   generation's frames belongs to an older generation, whose salts end every walk there.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::shm;
use super::wal::{self, Txn, WalHeader, WalPos, HEADER_SIZE};
use crate::error::{Error, Result};

/// Where a sealed generation ends: the offset and the running checksum there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedEnd {
    pub offset: u64,
    pub cksum1: u32,
    pub cksum2: u32,
}

impl SealedEnd {
    fn of(pos: &WalPos) -> SealedEnd {
        SealedEnd {
            offset: pos.offset,
            cksum1: pos.cksum1,
            cksum2: pos.cksum2,
        }
    }
}

/// One generation of the WAL as the mirrors know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub seq: u32,
    pub salt1: u32,
    pub salt2: u32,
}

/// A file name in the mirror folder.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    Copy(Generation),
    Seal(Generation, SealedEnd),
}

fn stem(g: &Generation) -> String {
    format!("{:08x}-{:08x}-{:08x}", g.seq, g.salt1, g.salt2)
}

fn copy_name(g: &Generation) -> String {
    format!("{}.wal", stem(g))
}

pub fn seal_name(g: &Generation, end: &SealedEnd) -> String {
    format!(
        "{}-{:x}-{:08x}-{:08x}.sealed",
        stem(g),
        end.offset,
        end.cksum1,
        end.cksum2
    )
}

fn parse_name(name: &str) -> Option<Name> {
    let hex32 = |s: &str| u32::from_str_radix(s, 16).ok();
    let gen = |p: &[&str]| {
        Some(Generation {
            seq: hex32(p[0])?,
            salt1: hex32(p[1])?,
            salt2: hex32(p[2])?,
        })
    };
    if let Some(s) = name.strip_suffix(".wal") {
        let p: Vec<&str> = s.split('-').collect();
        return (p.len() == 3).then(|| gen(&p)).flatten().map(Name::Copy);
    }
    let p: Vec<&str> = name.strip_suffix(".sealed")?.split('-').collect();
    if p.len() != 6 {
        return None;
    }
    let end = SealedEnd {
        offset: u64::from_str_radix(p[3], 16).ok()?,
        cksum1: hex32(p[4])?,
        cksum2: hex32(p[5])?,
    };
    Some(Name::Seal(gen(&p)?, end))
}

const SPARE_COPY: &str = "copy";
const SPARE_SEAL: &str = "seal";
/// How many of each are kept: the generations a shipper behind by one `sync_interval`
/// releases together, on a busy database.
const SPARES: usize = 8;

fn spare_name(kind: &str, slot: usize) -> String {
    format!("spare-{slot}.{kind}")
}

fn is_spare(name: &str) -> bool {
    (0..SPARES).any(|i| name == spare_name(SPARE_COPY, i) || name == spare_name(SPARE_SEAL, i))
}

/// Puts a spare of `kind` at `path`; false when there is none (nothing released yet, or
/// other processes of ours took the spare seals first: a rename is taken by one only).
fn take_spare(dir: &Path, kind: &str, path: &Path) -> bool {
    (0..SPARES).any(|i| std::fs::rename(dir.join(spare_name(kind, i)), path).is_ok())
}

/// Keeps a released file as a spare of `kind`, or deletes it when every slot is taken.
/// Only the leader gives spares, so a free slot stays free until the rename.
fn give_spare(dir: &Path, kind: &str, path: &Path) {
    let free = (0..SPARES)
        .map(|i| dir.join(spare_name(kind, i)))
        .find(|p| !p.exists());
    if free.is_none_or(|slot| std::fs::rename(path, slot).is_err()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Creates the empty seal marker `marker` in `dir`, from the spare marker when there is one.
fn create_marker(dir: &Path, marker: &Path) -> Result<()> {
    if !take_spare(dir, SPARE_SEAL, marker) {
        File::create(marker).map_err(io_err("creating", marker))?;
    }
    Ok(())
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::io(what, e)
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `dst` (copy_file_range on
/// Linux: the data does not pass through this process).
fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    let (mut s, mut d) = (src, dst);
    s.seek(SeekFrom::Start(offset))?;
    d.seek(SeekFrom::Start(offset))?;
    if io::copy(&mut s.take(len), &mut d)? != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the WAL is shorter than its committed frames",
        ));
    }
    Ok(())
}

/// The live WAL and its header, if it has a valid one.
fn open_wal(wal_path: &Path) -> Result<Option<(File, WalHeader)>> {
    let f = match File::open(wal_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("opening", wal_path)(e)),
    };
    let hdr = wal::read_header(&f).map_err(io_err("reading", wal_path))?;
    Ok(hdr.map(|h| (f, h)))
}

/// The copy of one WAL generation.
pub(super) struct Mirror {
    gen: Generation,
    hdr: WalHeader,
    path: PathBuf,
    file: File,
    /// Where copying started: the generation's start, or where shipping went on from.
    start: WalPos,
    /// The end of the committed frames copied so far.
    end: WalPos,
    /// Sealed (by us) at `end`: SQLite may restart the WAL past this generation.
    sealed: bool,
    /// The transactions copied after `listed_from` up to `end`, as the walk that validated
    /// them found them: the shipper takes them rather than read the frame headers back.
    /// None once the list was dropped (too long): the shipper reads the headers.
    listed_from: Option<WalPos>,
    listed: Vec<Txn>,
}

/// The most transactions a mirror lists in memory (a replica that is down for long must
/// not grow memory without bound; past this the shipper reads frame headers instead).
const MAX_LISTED: usize = 10_000;

/// What the shipper reads next: frames of one mirror from `from` to `end`.
pub(super) struct Source {
    pub file: File,
    pub hdr: WalHeader,
    pub from: WalPos,
    pub end: WalPos,
    /// The transactions between them, when the mirror still lists them.
    pub txns: Option<Vec<Txn>>,
}

impl Mirror {
    /// A new copy of the live WAL's generation `hdr`, copying from `start`.
    fn create(
        dir: &Path,
        gen: Generation,
        live: &File,
        hdr: WalHeader,
        start: WalPos,
    ) -> Result<Mirror> {
        let path = dir.join(copy_name(&gen));
        // A recycled copy is overwritten in place, not truncated: its blocks stay.
        let recycled = take_spare(dir, SPARE_COPY, &path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!recycled)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        copy_range(live, &file, 0, HEADER_SIZE).map_err(io_err("writing", &path))?;
        Ok(Mirror {
            gen,
            hdr,
            path,
            file,
            start,
            end: start,
            sealed: false,
            listed_from: Some(start),
            listed: Vec::new(),
        })
    }

    /// The copier validated and copied `txns`, which follow `end`.
    fn append(&mut self, txns: Vec<Txn>) {
        let Some(last) = txns.last() else { return };
        self.end = last.end;
        if self.listed_from.is_some() && self.listed.len() + txns.len() <= MAX_LISTED {
            self.listed.extend(txns);
        } else {
            self.listed_from = None;
            self.listed = Vec::new();
        }
    }

    /// The listed transactions after `from` (all of them up to `end`), handed over; None
    /// when the list does not start there.
    fn take_listed(&mut self, from: &WalPos) -> Option<Vec<Txn>> {
        let encoded = self.listed.partition_point(|t| t.end.offset <= from.offset);
        if let Some(t) = encoded.checked_sub(1).map(|i| self.listed[i].end) {
            self.listed_from = self.listed_from.map(|_| t);
            self.listed.drain(..encoded);
        }
        if self.listed_from != Some(*from) {
            return None;
        }
        self.listed_from = Some(self.end);
        Some(std::mem::take(&mut self.listed))
    }

    fn seal(&mut self, dir: &Path) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        let marker = dir.join(seal_name(&self.gen, &SealedEnd::of(&self.end)));
        create_marker(dir, &marker)?;
        self.sealed = true;
        Ok(())
    }

    /// SQLite went on appending to a sealed generation (a RESTART checkpoint takes the
    /// restart locks without restarting; the next writer may then fail to): the markers of
    /// this generation go, whoever wrote them.
    fn unseal(&mut self, dir: &Path) -> Result<()> {
        for (name, path) in list(dir)? {
            if matches!(name, Name::Seal(g, _) if g == self.gen) {
                std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        self.sealed = false;
        Ok(())
    }

    /// Whether someone sealed this generation where its copy ends: this process, or another
    /// that checked first that the copy was complete.
    fn sealed_at_end(&self, dir: &Path) -> Result<bool> {
        if self.sealed {
            return Ok(true);
        }
        let want = SealedEnd::of(&self.end);
        Ok(list(dir)?
            .iter()
            .any(|(n, _)| *n == Name::Seal(self.gen, want)))
    }

    fn holds(&self, pos: &WalPos) -> bool {
        self.hdr.same_generation(pos)
    }

    /// The generation shipped: its copy and marker become the spares.
    fn remove(self, dir: &Path) {
        give_spare(dir, SPARE_COPY, &self.path);
        if let Ok(names) = list(dir) {
            for (name, path) in names {
                if matches!(name, Name::Seal(g, _) if g == self.gen) {
                    give_spare(dir, SPARE_SEAL, &path);
                }
            }
        }
    }
}

/// What a round of copying found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Copied {
    /// Nothing new was committed.
    Nothing,
    /// New transactions are in the newest mirror.
    Some,
    /// SQLite restarted the WAL over frames nobody copied: the mirrors cannot say what
    /// changed.
    Lost(String),
}

pub(super) struct Mirrors {
    dir: PathBuf,
    wal_path: PathBuf,
    /// Oldest generation first; all but the newest are sealed.
    chain: VecDeque<Mirror>,
    /// The number the next generation seen gets.
    next_seq: u32,
    /// The generation SQLite restarted the WAL from while no mirror held anything of it
    /// (copying starts at the next one): sealed too, by the hook or at start-up.
    clean_until: Option<(u32, u32)>,
    /// The wal-index's count of committed transactions when the copy last caught up: every
    /// transaction committed since must be one the copier finds, or some were lost.
    counted: Option<u32>,
    /// Transactions copied since then.
    uncounted: u32,
    /// The copier's read buffer, kept between rounds (it only grows, up to
    /// `COPY_IN_MEMORY`).
    buf: Vec<u8>,
    /// The live WAL as the copier last opened it, kept between rounds: a round is often a
    /// single commit, and opening the file each time cost as much as copying it.
    live: Option<Arc<File>>,
}

/// The most of the live WAL one read brings into memory to validate and write out from
/// there; a copier further behind goes on in steps of this size, and a single transaction
/// larger than this is validated in batches and copied by the kernel.
const COPY_IN_MEMORY: u64 = 4 * 1024 * 1024;

pub(super) fn mirror_dir(meta_dir: &Path) -> PathBuf {
    meta_dir.join("wal")
}

impl Mirrors {
    fn empty(dir: &Path, db_path: &Path, next_seq: u32) -> Result<Mirrors> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        Ok(Mirrors {
            dir: dir.to_path_buf(),
            wal_path: super::beside(db_path, "-wal"),
            chain: VecDeque::new(),
            next_seq,
            clean_until: None,
            counted: None,
            uncounted: 0,
            buf: Vec::new(),
            live: None,
        })
    }

    /// The live WAL and its header, through the handle kept from the last round while it
    /// still names the WAL: SQLite never replaces the file in place, but deletes it when the
    /// last connection closes, and a later one creates a new one; a handle whose file has no
    /// name left is dropped and the path opened again. (The WAL is never locked, so closing a
    /// handle of it drops no lock of SQLite's.)
    fn live_wal(&mut self) -> Result<Option<(Arc<File>, WalHeader)>> {
        if let Some(f) = &self.live {
            let named = f.metadata().is_ok_and(|m| m.nlink() > 0);
            if named {
                let hdr = wal::read_header(f).map_err(io_err("reading", &self.wal_path))?;
                return Ok(hdr.map(|h| (f.clone(), h)));
            }
            self.live = None;
        }
        let Some((f, hdr)) = open_wal(&self.wal_path)? else {
            return Ok(None);
        };
        let f = Arc::new(f);
        self.live = Some(f.clone());
        Ok(Some((f, hdr)))
    }

    /// No mirrors: copying starts at `from` in the live WAL (None: at the start of the
    /// next generation). Mirrors left from before are deleted.
    pub fn fresh(dir: &Path, db_path: &Path, from: Option<WalPos>) -> Result<Mirrors> {
        let mut m = Mirrors::empty(dir, db_path, 1)?;
        for (name, path) in list(dir)? {
            if let Name::Copy(g) = name {
                m.next_seq = m.next_seq.max(g.seq.wrapping_add(1));
            }
            let _ = std::fs::remove_file(path);
        }
        if let Some(pos) = from {
            match open_wal(&m.wal_path)? {
                Some((live, hdr)) if hdr.same_generation(&pos) => {
                    let gen = m.take_seq(&hdr);
                    m.chain
                        .push_back(Mirror::create(dir, gen, &live, hdr, pos)?);
                }
                // Restarted since `pos`: only an empty generation may have been (the
                // callers know that what `pos` names is all there is).
                _ => m.clean_until = Some((pos.salt1, pos.salt2)),
            }
        }
        Ok(m)
    }

    fn take_seq(&mut self, hdr: &WalHeader) -> Generation {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Generation {
            seq,
            salt1: hdr.salt1,
            salt2: hdr.salt2,
        }
    }

    /// Start-up after shipping reached `from`: takes up the mirrors left by the last run,
    /// from `from`'s generation through each sealed one to the live WAL. `from` None: the
    /// database file holds what shipped, and the mirrors (if any) start at the beginning of
    /// their oldest generation. `Recovered::Unknown` when some transaction after `from` is
    /// in neither: the mirrors cannot say what changed. `untouched`: the database file was
    /// not written since the last leader deleted the WAL.
    pub fn recover(
        dir: &Path,
        db_path: &Path,
        from: Option<WalPos>,
        index: Option<shm::Index>,
        untouched: bool,
    ) -> Result<Recovered> {
        let mut m = Mirrors::empty(dir, db_path, 1)?;
        let found = list(dir)?;
        let mut copies: Vec<(Generation, PathBuf)> = Vec::new();
        let mut seals: Vec<(Generation, SealedEnd)> = Vec::new();
        for (name, path) in &found {
            match name {
                Name::Copy(g) => copies.push((*g, path.clone())),
                Name::Seal(g, end) => seals.push((*g, *end)),
            }
        }
        copies.sort_by_key(|(g, _)| g.seq);
        m.next_seq = copies.last().map_or(1, |(g, _)| g.seq.wrapping_add(1));
        let live = open_wal(&m.wal_path)?.map(|(_, h)| h);
        // The copies from the shipped generation on (all of them when `from` is None).
        let first = match from {
            Some(pos) => copies
                .iter()
                .position(|(g, _)| (g.salt1, g.salt2) == (pos.salt1, pos.salt2)),
            None => Some(0),
        };
        let copies = first.map_or(&[][..], |i| &copies[i..]);
        let surveyed = survey(copies, &seals, live.as_ref(), index, from);
        let facts: Vec<CopyFacts> = surveyed.iter().map(Survey::facts).collect();
        let outcome = plan_take_up(from, live.as_ref(), &facts, untouched).and_then(|plan| {
            for s in surveyed.into_iter().take(plan.copies) {
                m.chain.push_back(s.into_mirror()?);
            }
            match (plan.then_live, live) {
                (Some(at), Some(h)) => m.start_live(h, at),
                _ => Ok(()),
            }
        });
        // What was not taken up is of no use any more.
        let kept: Vec<&PathBuf> = m.chain.iter().map(|c| &c.path).collect();
        for (name, path) in &found {
            let keep = match name {
                Name::Copy(_) => kept.contains(&path),
                Name::Seal(g, _) => m.chain.iter().any(|c| c.gen == *g),
            };
            if !keep {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(match outcome {
            Ok(()) => Recovered::Mirrors(m),
            Err(why) => Recovered::Unknown(why),
        })
    }

    /// Starts a copy of the live generation `h` at `from` (nothing of it copied yet).
    fn start_live(&mut self, h: WalHeader, from: WalPos) -> std::result::Result<(), String> {
        let (live, hdr) = match open_wal(&self.wal_path) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if hdr != h {
            return Err("the WAL was restarted during start-up".into());
        }
        let gen = self.take_seq(&hdr);
        let m = Mirror::create(&self.dir, gen, &live, hdr, from).map_err(|e| e.to_string())?;
        self.chain.push_back(m);
        Ok(())
    }

    /// Copies what the wal-index (`index`, read just before) says was committed in the
    /// live WAL since the last copy.
    ///
    /// Nothing a restart dropped goes unnoticed: the wal-index counts the transactions
    /// committed, across restarts, and every one counted since the last round must be one
    /// this round copies. A restart by a program without the extension, while no process
    /// held the pin, breaks the count (or the generations' seals) and is reported as lost.
    pub fn copy_new(&mut self, committed: Option<shm::Committed>) -> Result<Copied> {
        let Some(committed) = committed else {
            return Ok(Copied::Nothing);
        };
        let Some((live, hdr)) = self.live_wal()? else {
            return Ok(Copied::Nothing);
        };
        let live: &File = &live;
        let index = committed.index();
        match index {
            // Nothing committed in this generation yet: caught up.
            Some(i) if i.mx_frame == 0 => return Ok(self.count(&i).unwrap_or(Copied::Nothing)),
            // The index and the WAL's header disagree while the first transaction of a new
            // generation is written: settled at the next round.
            Some(i) if i.salts() != (hdr.salt1, hdr.salt2) => return Ok(Copied::Nothing),
            Some(_) => {}
            // Recovery will count from zero.
            None => {
                self.counted = None;
                self.uncounted = 0;
            }
        }
        let known = self.chain.back().is_some_and(|m| m.holds(&hdr.start()));
        if !known {
            // A new generation. The one before must have been sealed where its copy ends:
            // otherwise frames of it may never have been copied.
            if let Some(m) = self.chain.back() {
                if !m.sealed_at_end(&self.dir)? {
                    return Ok(Copied::Lost(format!(
                        "SQLite restarted the WAL (generation {:08x}-{:08x}) before its frames after offset {} were copied",
                        m.gen.salt1, m.gen.salt2, m.end.offset
                    )));
                }
            } else if let Some(salts) = self.clean_until {
                if salts == (hdr.salt1, hdr.salt2) {
                    return Ok(Copied::Nothing);
                }
            }
            self.clean_until = None;
            let gen = self.take_seq(&hdr);
            self.chain
                .push_back(Mirror::create(&self.dir, gen, live, hdr, hdr.start())?);
        }
        let until = index.map_or(u64::MAX, |i| i.end_offset());
        let dir = self.dir.clone();
        let m = self.chain.back_mut().expect("pushed above");
        let mut from = m.end;
        if until <= from.offset {
            return Ok(index
                .and_then(|i| self.count(&i))
                .unwrap_or(Copied::Nothing));
        }
        if m.sealed {
            m.unseal(&dir)?;
        }
        let wal_path = self.wal_path.clone();
        let reading = |e| io_err("reading", &wal_path)(e);
        let mut copied = false;
        loop {
            // The usual case, what committed since the copier's last round: read once,
            // validated in memory and written out from there, `COPY_IN_MEMORY` at a time.
            // Only a transaction larger than that is copied by the kernel, after a walk.
            // The wal-index vouches for what it says is committed: checksums are computed
            // only by the recovery rule.
            let verify = index.is_none();
            let kept = wal::committed_kept(
                live,
                &hdr,
                &from,
                until,
                verify,
                &mut self.buf,
                COPY_IN_MEMORY,
            )
            .map_err(reading)?;
            let (txns, in_memory, more) = match kept {
                Some((txns, more)) => (txns, true, more),
                None => (
                    wal::committed_until(live, &hdr, &from, until).map_err(reading)?,
                    false,
                    false,
                ),
            };
            let Some(last) = txns.last() else {
                // Nothing more committed (by the recovery rule), or the index says
                // committed and the frames do not check out: the WAL was restarted under us
                // (the next round sees the new generation), or it is damaged. Nothing is
                // counted: the next round settles it.
                return Ok(if copied {
                    Copied::Some
                } else {
                    Copied::Nothing
                });
            };
            let len = last.end.offset - from.offset;
            if in_memory {
                m.file.write_all_at(&self.buf[..len as usize], from.offset)
            } else {
                copy_range(live, &m.file, from.offset, len)
            }
            .map_err(io_err("copying the WAL to", &m.path))?;
            copied = true;
            self.uncounted += txns.len() as u32;
            m.append(txns);
            if !more || m.end.offset >= until {
                break;
            }
            from = m.end;
        }
        let Some(index) = index else {
            return Ok(Copied::Some);
        };
        if self.chain.back().is_some_and(|m| m.end.offset < until) {
            // Stopped short of what the index says: counted once caught up.
            return Ok(Copied::Some);
        }
        Ok(self.count(&index).unwrap_or(Copied::Some))
    }

    /// The copy has caught up with `index`: checks the wal-index's count of transactions
    /// against the ones copied since the last check. Some(Lost) when they differ.
    fn count(&mut self, index: &shm::Index) -> Option<Copied> {
        let copied = std::mem::take(&mut self.uncounted);
        let before = self.counted.replace(index.i_change)?;
        let committed = index.i_change.wrapping_sub(before);
        (committed != copied).then(|| {
            Copied::Lost(format!(
                "{committed} transactions were committed since the last copy and {copied} copied: SQLite restarted the WAL over the others before they were copied"
            ))
        })
    }

    /// Whether every frame the wal-index says is committed is in the mirrors.
    pub fn caught_up(&self, index: &shm::Index) -> bool {
        index.mx_frame == 0
            || self.chain.back().is_some_and(|m| {
                (m.gen.salt1, m.gen.salt2) == index.salts() && m.end.offset == index.end_offset()
            })
    }

    /// SQLite is about to restart the WAL (and has copied what was committed first): the
    /// newest mirror now ends its generation. With no mirror at all, the live generation
    /// had nothing committed, and the next one follows it cleanly.
    pub fn seal(&mut self) -> Result<()> {
        match self.chain.back_mut() {
            Some(m) => m.seal(&self.dir),
            None => {
                if let Some((_, h)) = open_wal(&self.wal_path)? {
                    self.clean_until = Some((h.salt1, h.salt2));
                }
                Ok(())
            }
        }
    }

    /// Where copying has reached: the newest generation and the end of its copy.
    pub fn copied(&self) -> Option<(Generation, WalPos)> {
        self.chain.back().map(|m| (m.gen, m.end))
    }

    /// The generations the mirrors hold, oldest first.
    pub fn generations(&self) -> Vec<Generation> {
        self.chain.iter().map(|m| m.gen).collect()
    }

    /// The generation a position belongs to, if a mirror holds it.
    pub fn generation_of(&self, salts: (u32, u32)) -> Option<Generation> {
        self.chain
            .iter()
            .find(|m| (m.gen.salt1, m.gen.salt2) == salts)
            .map(|m| m.gen)
    }

    /// What to read after `cursor` (the end of what is encoded; None: from the first
    /// mirror's start), or None when no mirror holds more.
    pub fn source(&mut self, cursor: Option<WalPos>) -> Result<Option<Source>> {
        let Some((i, from)) = self.next_after(cursor) else {
            return Ok(None);
        };
        let m = &mut self.chain[i];
        Ok(Some(Source {
            file: m.file.try_clone().map_err(io_err("opening", &m.path))?,
            hdr: m.hdr,
            from,
            end: m.end,
            txns: m.take_listed(&from),
        }))
    }

    /// Whether a mirror holds something after `cursor`.
    pub fn has_more(&self, cursor: Option<WalPos>) -> bool {
        self.next_after(cursor).is_some()
    }

    /// The mirror (its index in the chain) holding what follows `cursor`, and where that
    /// starts in it.
    fn next_after(&self, cursor: Option<WalPos>) -> Option<(usize, WalPos)> {
        let at = cursor.and_then(|c| self.chain.iter().position(|m| m.holds(&c)));
        let (i, from) = match (at, cursor) {
            (Some(i), Some(c)) if i + 1 < self.chain.len() && self.chain[i].end == c => {
                (i + 1, self.chain[i + 1].start)
            }
            (Some(i), Some(c)) => (i, c),
            _ => (0, self.chain.front()?.start),
        };
        (self.chain[i].end != from).then_some((i, from))
    }

    /// Shipping reached `shipped`: deletes the mirrors of the generations before it.
    pub fn release(&mut self, shipped: &WalPos) {
        while self.chain.len() > 1 {
            let front = &self.chain[0];
            let done = front.end == *shipped || self.chain.iter().skip(1).any(|m| m.holds(shipped));
            if !done {
                break;
            }
            if let Some(m) = self.chain.pop_front() {
                m.remove(&self.dir);
            }
        }
    }

    /// Everything shipped and SQLite is deleting the WAL: no mirror is needed any more (nor
    /// a spare: the database is quiet), and what the WAL holds is not copied again.
    pub fn clear(&mut self) -> Result<()> {
        for m in self.chain.drain(..) {
            m.remove(&self.dir);
        }
        for i in 0..SPARES {
            for kind in [SPARE_COPY, SPARE_SEAL] {
                let _ = std::fs::remove_file(self.dir.join(spare_name(kind, i)));
            }
        }
        if let Some((_, h)) = open_wal(&self.wal_path)? {
            self.clean_until = Some((h.salt1, h.salt2));
        }
        Ok(())
    }
}

/// The files in `dir` with the names of mirrors and seals; anything else there but the
/// spares is removed (temporary files of a crashed process).
fn list(dir: &Path) -> Result<Vec<(Name, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        let file_name = e.file_name();
        let file_name = file_name.to_str();
        if file_name.is_some_and(is_spare) {
            continue;
        }
        match file_name.and_then(parse_name) {
            Some(name) => out.push((name, e.path())),
            None => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(out)
}

/// Seals the generation `gen` at `end` from a process that does not lead: it checked that
/// the leader's copy reaches `end`, the generation's committed end, and holds SQLite's
/// write lock, so nothing more can be committed in it.
pub(super) fn seal_for_follower(meta_dir: &Path, gen: Generation, end: &WalPos) -> Result<()> {
    let dir = mirror_dir(meta_dir);
    create_marker(&dir, &dir.join(seal_name(&gen, &SealedEnd::of(end))))
}

/// What start-up found in the mirror folder.
pub enum Recovered {
    /// The mirrors, taken up from the shipped position to the live WAL.
    Mirrors(Mirrors),
    /// Some transaction after the shipped position is in neither the mirrors nor the WAL,
    /// for this reason: what changed since cannot be known.
    Unknown(String),
}

/// One copy as start-up read it: the copy, its header and the committed transactions
/// from where they are taken on, or why it cannot be read.
struct Survey {
    gen: Generation,
    path: PathBuf,
    read: std::result::Result<(File, WalHeader, WalPos, Vec<Txn>), String>,
    sealed: bool,
    live: bool,
}

/// Reads each copy (`copies`, oldest first): from `from` in the first, from its start in
/// the others; a copy of the live WAL only as far as the wal-index says is committed.
fn survey(
    copies: &[(Generation, PathBuf)],
    seals: &[(Generation, SealedEnd)],
    live: Option<&WalHeader>,
    index: Option<shm::Index>,
    from: Option<WalPos>,
) -> Vec<Survey> {
    let is_live = |g: &Generation| live.is_some_and(|h| (h.salt1, h.salt2) == (g.salt1, g.salt2));
    copies
        .iter()
        .enumerate()
        .map(|(i, (gen, path))| {
            let read = || -> std::result::Result<_, String> {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| e.to_string())?;
                let hdr = wal::read_header(&file)
                    .ok()
                    .flatten()
                    .filter(|h| (h.salt1, h.salt2) == (gen.salt1, gen.salt2))
                    .ok_or("has no valid header")?;
                let at = match from {
                    Some(pos) if i == 0 => pos,
                    _ => hdr.start(),
                };
                // Where the committed frames of the live generation end: the wal-index
                // says, when a connection has it open; otherwise SQLite's recovery rule.
                let until = match index {
                    Some(x) if is_live(gen) && x.salts() == (hdr.salt1, hdr.salt2) => {
                        x.end_offset()
                    }
                    _ => u64::MAX,
                };
                let txns =
                    wal::committed_until(&file, &hdr, &at, until).map_err(|e| e.to_string())?;
                Ok((file, hdr, at, txns))
            };
            let read = read();
            let sealed = read.as_ref().is_ok_and(|(_, _, at, txns)| {
                let reached = txns.last().map_or(*at, |t| t.end);
                seals
                    .iter()
                    .any(|(g, e)| g == gen && *e == SealedEnd::of(&reached))
            });
            Survey {
                gen: *gen,
                path: path.clone(),
                read,
                sealed,
                live: is_live(gen),
            }
        })
        .collect()
}

impl Survey {
    fn facts(&self) -> CopyFacts {
        CopyFacts {
            gen: self.gen,
            readable: self.read.as_ref().err().cloned().map_or(Ok(()), Err),
            sealed: self.sealed,
            live: self.live,
            name: self.path.display().to_string(),
        }
    }

    fn into_mirror(self) -> std::result::Result<Mirror, String> {
        let (file, hdr, at, txns) = self.read?;
        let mut mirror = Mirror {
            gen: self.gen,
            hdr,
            path: self.path,
            file,
            start: at,
            end: at,
            sealed: self.sealed,
            listed_from: Some(at),
            listed: Vec::new(),
        };
        mirror.append(txns);
        Ok(mirror)
    }
}

/// What the take-up decision needs of one copy.
#[derive(Debug, Clone)]
struct CopyFacts {
    gen: Generation,
    /// Err: why its header or frames cannot be read.
    readable: std::result::Result<(), String>,
    /// A seal marks the generation as ending exactly where its committed frames end.
    sealed: bool,
    /// It is the live WAL's generation.
    live: bool,
    name: String,
}

/// Start-up's take-up: the first `copies` surveyed copies join the chain, then (if
/// `then_live`) a new copy of the live WAL starts at that position.
#[derive(Debug, PartialEq)]
struct TakeUp {
    copies: usize,
    then_live: Option<WalPos>,
}

/// Decides what start-up takes up, or why the mirrors cannot say what changed after
/// `from`. `copies`: the copies from `from`'s generation on, oldest first (none when that
/// generation was never copied). The rules:
/// - no copy: the live WAL must be `from`'s generation (copied from `from` on), or there is
///   no WAL (nothing after `from`); with `from` None, the live WAL is copied from its start;
/// - each copy follows the one before it (sequence numbers) and can be read;
/// - a copy of the live generation is the last one, and the copier goes on from it;
/// - every other copy was sealed where its committed frames end (else a restart may have
///   dropped frames nobody copied);
/// - after the last sealed copy, the live WAL (if any) is the next generation, as SQLite
///   numbers them (salt-1 plus one), copied from its start.
///
/// Where the plan rests on what is *not* there (no WAL, or a WAL copied from its start with
/// no copy before it), the database file must be `untouched` since the last leader left it:
/// a program without the extension may have committed, checkpointed and truncated or
/// deleted the WAL while no leader watched, and its transactions are then in the database
/// file only.
fn plan_take_up(
    from: Option<WalPos>,
    live: Option<&WalHeader>,
    copies: &[CopyFacts],
    untouched: bool,
) -> std::result::Result<TakeUp, String> {
    let unwatched = |what: &str| {
        Err(format!(
            "{what}, and the database file was written since the last leader left it (a program without the extension checkpointed while no leader watched)"
        ))
    };
    let Some(last) = copies.last() else {
        return match (from, live) {
            (Some(pos), Some(h)) if h.same_generation(&pos) => Ok(TakeUp {
                copies: 0,
                then_live: Some(pos),
            }),
            (None, Some(_)) | (_, None) if !untouched => {
                unwatched("no copy of the WAL says what came before it")
            }
            (None, Some(h)) => Ok(TakeUp {
                copies: 0,
                then_live: Some(h.start()),
            }),
            (_, None) => Ok(TakeUp {
                copies: 0,
                then_live: None,
            }),
            (Some(pos), Some(_)) => Err(format!(
                "WAL generation {:08x}-{:08x} is neither in the WAL nor copied",
                pos.salt1, pos.salt2
            )),
        };
    };
    for (i, c) in copies.iter().enumerate() {
        let broken = |why: &str| format!("the copy {} {why}", c.name);
        if i > 0 && c.gen.seq != copies[i - 1].gen.seq.wrapping_add(1) {
            return Err(broken("does not follow the one before it"));
        }
        c.readable.as_ref().map_err(|e| broken(e))?;
        if c.live {
            if i + 1 < copies.len() {
                return Err(broken("is of the live WAL, yet newer copies follow it"));
            }
            // The copier goes on from what the copy holds (a seal made before SQLite
            // appended more is stale).
            return Ok(TakeUp {
                copies: i + 1,
                then_live: None,
            });
        }
        if !c.sealed {
            return Err(broken(
                "was never sealed where it ends, and the WAL has moved on",
            ));
        }
    }
    // The live WAL is a generation nobody copied from yet. It follows the last sealed one
    // only if SQLite numbered it so — or it is gone, truncated after the restart: nothing
    // committed since.
    let then_live = match live {
        None if !untouched => return unwatched("the WAL was emptied after the last copy"),
        None => None,
        Some(h) if h.salt1 == last.gen.salt1.wrapping_add(1) => Some(h.start()),
        Some(h) => {
            return Err(format!(
                "the WAL's generation {:08x}-{:08x} does not follow the copied {:08x}-{:08x}",
                h.salt1, h.salt2, last.gen.salt1, last.gen.salt2
            ))
        }
    };
    Ok(TakeUp {
        copies: copies.len(),
        then_live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::shm::tests::index;
    use crate::primary::shm::Committed;
    use crate::primary::wal::tests::write_wal;

    fn header(path: &Path) -> WalHeader {
        wal::read_header(&File::open(path).unwrap())
            .unwrap()
            .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// What the wal-index says of a WAL written by `write_wal`: `frames` committed, and
    /// `changed` transactions counted since it was set up.
    fn says(salts: (u32, u32), frames: u32, changed: u32) -> Option<Committed> {
        Some(Committed::Index(index(salts, 512, frames, changed)))
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: PathBuf,
        wal: PathBuf,
        mirrors: PathBuf,
    }

    fn taken(r: Recovered) -> Mirrors {
        match r {
            Recovered::Mirrors(m) => m,
            Recovered::Unknown(why) => panic!("not taken up: {why}"),
        }
    }

    fn unknown(r: Recovered) -> String {
        match r {
            Recovered::Mirrors(_) => panic!("taken up"),
            Recovered::Unknown(why) => why,
        }
    }

    /// The take-up rules of `plan_take_up`, row by row, on copies described by their facts.
    #[test]
    fn the_take_up_table_row_by_row() {
        let wal = |salt1: u32| WalHeader {
            big_endian: false,
            page_size: 4096,
            ckpt_seq: 0,
            salt1,
            salt2: 7,
            cksum1: 1,
            cksum2: 2,
        };
        let copy = |seq: u32, salt1: u32, sealed: bool, live: bool| CopyFacts {
            gen: Generation {
                seq,
                salt1,
                salt2: 7,
            },
            readable: Ok(()),
            sealed,
            live,
            name: format!("copy{seq}"),
        };
        let shipped = WalPos {
            offset: 4128,
            ..wal(10).start()
        };
        let plan = |from, live: Option<WalHeader>, copies: &[CopyFacts]| {
            plan_take_up(from, live.as_ref(), copies, true)
        };
        let take = |copies, then_live| Ok(TakeUp { copies, then_live });
        let fails = |r: std::result::Result<TakeUp, String>, says: &str| {
            let why = r.unwrap_err();
            assert!(why.contains(says), "{why}");
        };
        // No copy: the live WAL is the shipped generation (go on from the shipped
        // position), or there is none; with nothing shipped, copy it from its start.
        assert_eq!(
            plan(Some(shipped), Some(wal(10)), &[]),
            take(0, Some(shipped))
        );
        assert_eq!(plan(Some(shipped), None, &[]), take(0, None));
        assert_eq!(
            plan(None, Some(wal(10)), &[]),
            take(0, Some(wal(10).start()))
        );
        assert_eq!(plan(None, None, &[]), take(0, None));
        fails(
            plan(Some(shipped), Some(wal(11)), &[]),
            "neither in the WAL nor copied",
        );
        // A copy of the live generation: the copier goes on from it.
        let live10 = copy(1, 10, false, true);
        assert_eq!(
            plan(Some(shipped), Some(wal(10)), std::slice::from_ref(&live10)),
            take(1, None)
        );
        // Sealed copies, then the next generation live (or none: truncated).
        let sealed10 = copy(1, 10, true, false);
        let live11 = copy(2, 11, false, true);
        let two = [sealed10.clone(), live11.clone()];
        assert_eq!(plan(Some(shipped), Some(wal(11)), &two), take(2, None));
        assert_eq!(
            plan(
                Some(shipped),
                Some(wal(11)),
                std::slice::from_ref(&sealed10)
            ),
            take(1, Some(wal(11).start()))
        );
        assert_eq!(
            plan(Some(shipped), None, std::slice::from_ref(&sealed10)),
            take(1, None)
        );
        // A live WAL that is not the next generation after the last sealed copy.
        fails(
            plan(
                Some(shipped),
                Some(wal(12)),
                std::slice::from_ref(&sealed10),
            ),
            "does not follow the copied",
        );
        // An unsealed copy the WAL moved on from: frames may be lost.
        let unsealed10 = copy(1, 10, false, false);
        fails(
            plan(Some(shipped), Some(wal(11)), &[unsealed10]),
            "never sealed",
        );
        // A gap in the sequence, a live copy with newer ones after it, an unreadable copy.
        let gap = [sealed10.clone(), copy(3, 11, false, true)];
        fails(
            plan(Some(shipped), Some(wal(11)), &gap),
            "does not follow the one before",
        );
        let stale = [live10, copy(2, 11, true, false)];
        fails(
            plan(Some(shipped), Some(wal(10)), &stale),
            "newer copies follow it",
        );
        let unreadable = CopyFacts {
            readable: Err("has no valid header".into()),
            ..sealed10.clone()
        };
        fails(
            plan(Some(shipped), Some(wal(11)), &[unreadable, live11]),
            "copy1 has no valid header",
        );
        // The database file was written since the last leader left it: every plan that
        // rests on a WAL that is not there fails; those that the WAL itself shows stand.
        let touched = |from, live: Option<WalHeader>, copies: &[CopyFacts]| {
            plan_take_up(from, live.as_ref(), copies, false)
        };
        let written = "written since the last leader left it";
        fails(touched(Some(shipped), None, &[]), written);
        fails(touched(None, Some(wal(10)), &[]), written);
        fails(touched(None, None, &[]), written);
        fails(
            touched(Some(shipped), None, std::slice::from_ref(&sealed10)),
            written,
        );
        assert_eq!(
            touched(Some(shipped), Some(wal(10)), &[]),
            take(0, Some(shipped))
        );
        assert_eq!(
            touched(
                Some(shipped),
                Some(wal(11)),
                std::slice::from_ref(&sealed10)
            ),
            take(1, Some(wal(11).start()))
        );
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        Fixture {
            wal: super::super::beside(&db, "-wal"),
            mirrors: dir.path().join("wal"),
            db,
            _dir: dir,
        }
    }

    /// Two generations: the first copied and sealed at a restart, the second live.
    fn two_generations(f: &Fixture) -> (Mirrors, WalPos, WalPos) {
        write_wal(&f.wal, 512, (10, 1), &[vec![(1, 1), (2, 2)], vec![(2, 3)]]);
        let first = header(&f.wal).start();
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        assert_eq!(m.copy_new(says((10, 1), 3, 2)).unwrap(), Copied::Some);
        assert_eq!(m.copy_new(says((10, 1), 3, 2)).unwrap(), Copied::Nothing);
        m.seal().unwrap();
        let sealed_end = m.chain[0].end;
        // SQLite restarts the WAL: salt-1 plus one, and it overwrites the old frames.
        write_wal(&f.wal, 512, (11, 7), &[vec![(3, 4)]]);
        assert_eq!(m.copy_new(says((11, 7), 1, 3)).unwrap(), Copied::Some);
        (m, first, sealed_end)
    }

    #[test]
    fn copies_seal_and_hand_the_shipper_each_generation_in_order() {
        let f = fixture();
        let (mut m, first, sealed_end) = two_generations(&f);
        let files = names(&f.mirrors);
        assert_eq!(files.len(), 3, "two copies and a seal: {files:?}");
        assert!(files.iter().any(|n| n.ends_with(".sealed")), "{files:?}");
        assert_eq!(
            m.generations().iter().map(|g| g.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );

        // The shipper reads the first generation from its copy (the WAL no longer has it).
        let copied = std::fs::read(&m.chain[0].path).unwrap();
        assert_eq!(
            copied.len() as u64,
            sealed_end.offset,
            "the committed frames, no more"
        );
        let src = m.source(None).unwrap().unwrap();
        assert_eq!(src.from, first);
        let txns = wal::copied_until(&src.file, &src.hdr, &src.from, src.end.offset).unwrap();
        assert_eq!(txns.len(), 2);
        assert_eq!(txns[1].end, sealed_end);
        // The walk that copied them listed them: the shipper gets them without reading the
        // headers back, and they are what the headers say.
        assert_eq!(src.txns.as_deref(), Some(&txns[..]));
        assert!(
            m.source(None).unwrap().unwrap().txns.is_none(),
            "handed over once"
        );
        assert_eq!(
            wal::read_page(&src.file, 512, txns[1].pages[&2], (10, 1)).unwrap()[0],
            3
        );
        // At the sealed end it goes on with the next generation.
        let next = m.source(Some(sealed_end)).unwrap().unwrap();
        assert_eq!((next.hdr.salt1, next.from.offset), (11, HEADER_SIZE));
        assert!(m.source(Some(next.end)).unwrap().is_none());

        // Shipped past the first generation: its copy and seal go (kept as the spares),
        // the live one stays.
        m.release(&sealed_end);
        let live = copy_name(&m.chain[0].gen);
        assert_eq!(
            names(&f.mirrors),
            [live, spare_name(SPARE_COPY, 0), spare_name(SPARE_SEAL, 0)]
        );
        assert_eq!(m.generation_of((11, 7)).map(|g| g.seq), Some(2));
    }

    #[test]
    fn a_released_copy_is_recycled_and_its_old_frames_are_never_taken() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let (mut m, _, sealed_end) = two_generations(&f);
        let spare_ino = std::fs::metadata(&m.chain[0].path).unwrap().ino();
        let spare_len = std::fs::metadata(&m.chain[0].path).unwrap().len();
        m.release(&sealed_end);
        m.seal().unwrap();
        let second_end = m.chain[0].end;
        assert!(
            names(&f.mirrors).iter().all(|n| !n.ends_with(SPARE_SEAL)),
            "reused"
        );

        // The next generation has one frame; the recycled copy still holds three of the
        // first generation after it.
        write_wal(&f.wal, 512, (12, 9), &[vec![(4, 5)]]);
        assert_eq!(m.copy_new(says((12, 9), 1, 4)).unwrap(), Copied::Some);
        let third = &m.chain[1];
        assert_eq!(std::fs::metadata(&third.path).unwrap().ino(), spare_ino);
        assert_eq!(std::fs::metadata(&third.path).unwrap().len(), spare_len);
        assert!(names(&f.mirrors).iter().all(|n| !n.ends_with(SPARE_COPY)));

        // A walk of the copy (start-up takes copies up so) stops after the new frame.
        let txns = wal::committed_after(&third.file, &third.hdr, &third.hdr.start()).unwrap();
        assert_eq!(txns.len(), 1);
        assert_eq!(txns[0].end.offset, HEADER_SIZE + 512 + 24);
        // And so does a start-up that finds it.
        m.seal().unwrap();
        drop(m);
        let m = Mirrors::recover(&f.mirrors, &f.db, Some(second_end), None, true)
            .map(taken)
            .unwrap();
        assert_eq!(
            m.copied().map(|(g, end)| (g.seq, end.offset)),
            Some((3, HEADER_SIZE + 536))
        );
    }

    #[test]
    fn only_what_the_index_says_is_committed_is_copied() {
        let f = fixture();
        // Two valid transactions in the WAL; the index says one: the second is a commit
        // that failed (its frames will be overwritten), never to be copied.
        write_wal(&f.wal, 512, (3, 3), &[vec![(1, 1)], vec![(2, 2)]]);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        assert_eq!(m.copy_new(says((3, 3), 1, 1)).unwrap(), Copied::Some);
        let (_, end) = m.copied().unwrap();
        assert_eq!(end.offset, 32 + (24 + 512));
        assert!(m.caught_up(&index((3, 3), 512, 1, 1)));
        assert!(!m.caught_up(&index((3, 3), 512, 2, 2)));
        // No connection has the WAL open: SQLite's recovery rule, both transactions.
        assert_eq!(m.copy_new(Some(Committed::Recovery)).unwrap(), Copied::Some);
        assert_eq!(m.copied().unwrap().1.offset, 32 + 2 * (24 + 512));
    }

    #[test]
    fn a_restart_that_dropped_frames_is_found_out() {
        // The count: 3 transactions committed since the last round, 1 copied (the restart
        // came between, unsealed and unseen: salts numbered as if nothing happened).
        let f = fixture();
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)]]);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        assert_eq!(m.copy_new(says((5, 5), 1, 10)).unwrap(), Copied::Some);
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)], vec![(2, 2)]]);
        match m.copy_new(says((5, 5), 2, 13)).unwrap() {
            Copied::Lost(why) => assert!(why.contains("3 transactions"), "{why}"),
            other => panic!("{other:?}"),
        }

        // A new generation while the one before was never sealed.
        let f = fixture();
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)]]);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        assert_eq!(m.copy_new(says((5, 5), 1, 1)).unwrap(), Copied::Some);
        write_wal(&f.wal, 512, (77, 1), &[vec![(2, 2)]]);
        assert!(matches!(
            m.copy_new(says((77, 1), 1, 2)).unwrap(),
            Copied::Lost(_)
        ));

        // The same, sealed by another process that checked the copy was complete: fine.
        let f = fixture();
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)]]);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        assert_eq!(m.copy_new(says((5, 5), 1, 1)).unwrap(), Copied::Some);
        let (gen, end) = m.copied().unwrap();
        let meta = f.mirrors.parent().unwrap();
        seal_for_follower(meta, gen, &end).unwrap();
        write_wal(&f.wal, 512, (77, 1), &[vec![(2, 2)]]);
        assert_eq!(m.copy_new(says((77, 1), 1, 2)).unwrap(), Copied::Some);
    }

    #[test]
    fn start_up_takes_up_the_copies_or_says_what_is_missing() {
        let f = fixture();
        let (m, first, sealed_end) = two_generations(&f);
        let live_end = m.chain[1].end;
        drop(m);

        // A crash: from the shipped position, through the sealed copy, to the live WAL.
        let r = Mirrors::recover(&f.mirrors, &f.db, Some(first), None, true)
            .map(taken)
            .unwrap();
        assert_eq!(r.chain.len(), 2);
        assert_eq!((r.chain[0].end, r.chain[1].end), (sealed_end, live_end));
        assert_eq!(
            r.generations().iter().map(|g| g.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        drop(r);
        // From None (the database file held what shipped): the oldest copy's start.
        let r = Mirrors::recover(&f.mirrors, &f.db, None, None, true)
            .map(taken)
            .unwrap();
        assert_eq!(r.chain[0].start, first);
        drop(r);

        // A sealed copy that lost its tail (not synced, a power failure) is found out.
        let copy = f.mirrors.join(
            names(&f.mirrors)
                .iter()
                .find(|n| n.starts_with("00000001") && n.ends_with(".wal"))
                .unwrap(),
        );
        let len = std::fs::metadata(&copy).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let why = Mirrors::recover(&f.mirrors, &f.db, Some(first), None, true)
            .map(unknown)
            .unwrap();
        assert!(why.contains("never sealed where it ends"), "{why}");

        // A WAL of an unrelated generation and no copy of the shipped one.
        let g = fixture();
        write_wal(&g.wal, 512, (99, 1), &[vec![(1, 1)]]);
        let why = Mirrors::recover(&g.mirrors, &g.db, Some(first), None, true)
            .map(unknown)
            .unwrap();
        assert!(why.contains("neither in the WAL nor copied"), "{why}");
    }

    #[test]
    fn a_generation_appended_after_its_seal_is_unsealed_and_copied_on() {
        let f = fixture();
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)]]);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        m.copy_new(says((5, 5), 1, 1)).unwrap();
        let first = m.source(None).unwrap().unwrap();
        assert_eq!(first.txns.map(|t| t.len()), Some(1));
        // A RESTART checkpoint took the restart locks, then a reader stopped the restart.
        m.seal().unwrap();
        assert!(names(&f.mirrors).iter().any(|n| n.ends_with(".sealed")));
        write_wal(&f.wal, 512, (5, 5), &[vec![(1, 1)], vec![(2, 2)]]);
        assert_eq!(m.copy_new(says((5, 5), 2, 2)).unwrap(), Copied::Some);
        assert!(!names(&f.mirrors).iter().any(|n| n.ends_with(".sealed")));
        // The list goes on after what the shipper took.
        let rest = m.source(Some(first.end)).unwrap().unwrap();
        let listed = rest.txns.unwrap();
        assert_eq!((listed.len(), listed[0].end), (1, rest.end));
        assert_eq!(listed[0].pages.keys().copied().collect::<Vec<_>>(), vec![2]);
        // The names round-trip.
        let gen = Generation {
            seq: 3,
            salt1: 5,
            salt2: 5,
        };
        assert_eq!(parse_name(&copy_name(&gen)), Some(Name::Copy(gen)));
        let end = SealedEnd {
            offset: 600,
            cksum1: 1,
            cksum2: 2,
        };
        assert_eq!(
            parse_name(&seal_name(&gen, &end)),
            Some(Name::Seal(gen, end))
        );
    }

    #[test]
    fn a_copier_far_behind_goes_on_in_steps_that_fit_in_memory() {
        let f = fixture();
        // Three transactions of 400 pages of 4 KiB: more than one read keeps in memory,
        // each smaller than that; then one of 1100 pages, larger than that.
        let txn = |fill: u8, n: u32| -> Vec<(u32, u8)> { (1..=n).map(|pg| (pg, fill)).collect() };
        write_wal(
            &f.wal,
            4096,
            (3, 4),
            &[txn(1, 400), txn(2, 400), txn(3, 400), txn(4, 1100)],
        );
        let bytes = std::fs::read(&f.wal).unwrap();
        assert!(bytes.len() as u64 > 2 * COPY_IN_MEMORY);
        let mut m = Mirrors::fresh(&f.mirrors, &f.db, None).unwrap();
        let says = Some(Committed::Index(index((3, 4), 4096, 2300, 4)));
        assert_eq!(m.copy_new(says).unwrap(), Copied::Some);
        assert_eq!(
            m.copy_new(says).unwrap(),
            Copied::Nothing,
            "all of it in one call"
        );
        let src = m.source(None).unwrap().unwrap();
        assert_eq!(src.end.offset, bytes.len() as u64);
        assert_eq!(std::fs::read(&m.chain[0].path).unwrap(), bytes);
        assert_eq!(
            wal::copied_until(&src.file, &src.hdr, &src.from, src.end.offset)
                .unwrap()
                .len(),
            4
        );
    }
}
