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
//!   generation ended there and SQLite may restart the WAL.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
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
        File::create(&marker).map_err(io_err("creating", &marker))?;
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

    fn remove(self, dir: &Path) {
        let _ = std::fs::remove_file(&self.path);
        if let Ok(names) = list(dir) {
            for (name, path) in names {
                if matches!(name, Name::Seal(g, _) if g == self.gen) {
                    let _ = std::fs::remove_file(path);
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
    shm_path: PathBuf,
    /// Oldest generation first; all but the newest are sealed.
    chain: VecDeque<Mirror>,
    /// The number the next generation seen gets.
    next_seq: u32,
    /// The generation SQLite restarted the WAL from while no mirror held anything of it
    /// (copying starts at the next one): sealed too, by the hook or at start-up.
    clean_until: Option<(u32, u32)>,
    /// The copier's read buffer, kept between rounds (it only grows, up to
    /// `COPY_IN_MEMORY`).
    buf: Vec<u8>,
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
            shm_path: shm::path_for(db_path),
            chain: VecDeque::new(),
            next_seq,
            clean_until: None,
            buf: Vec::new(),
        })
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
    /// their oldest generation. Err(reason) when some transaction after `from` is in
    /// neither: the mirrors cannot say what changed.
    pub fn recover(
        dir: &Path,
        db_path: &Path,
        from: Option<WalPos>,
    ) -> Result<std::result::Result<Mirrors, String>> {
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
        let index = shm::read(&m.shm_path).map_err(io_err("reading", &m.shm_path))?;
        let outcome = m.take_up(&copies, &seals, live, index, from);
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
        Ok(outcome.map(|()| m))
    }

    fn take_up(
        &mut self,
        copies: &[(Generation, PathBuf)],
        seals: &[(Generation, SealedEnd)],
        live: Option<WalHeader>,
        index: Option<shm::Index>,
        from: Option<WalPos>,
    ) -> std::result::Result<(), String> {
        let is_live = |salts: (u32, u32)| live.is_some_and(|h| (h.salt1, h.salt2) == salts);
        // Where the committed frames of the live generation end: the wal-index says, when a
        // connection has it open; otherwise SQLite's recovery rule applies.
        let live_until = |h: &WalHeader| match index {
            Some(i) if i.salts() == (h.salt1, h.salt2) => i.end_offset(),
            _ => u64::MAX,
        };
        let first = match from {
            Some(pos) => copies
                .iter()
                .position(|(g, _)| (g.salt1, g.salt2) == (pos.salt1, pos.salt2)),
            None => (!copies.is_empty()).then_some(0),
        };
        let Some(first) = first else {
            // No copy of the shipped generation: the live WAL must still be it (or have
            // nothing that was not shipped).
            return match (from, live) {
                (Some(pos), Some(h)) if h.same_generation(&pos) => self.start_live(h, pos),
                (None, Some(h)) => self.start_live(h, h.start()),
                (_, None) => Ok(()),
                (Some(pos), Some(_)) => Err(format!(
                    "WAL generation {:08x}-{:08x} is neither in the WAL nor copied",
                    pos.salt1, pos.salt2
                )),
            };
        };
        let mut at = match from {
            Some(pos) => pos,
            None => {
                let f = File::open(&copies[first].1).map_err(|e| e.to_string())?;
                wal::read_header(&f)
                    .ok()
                    .flatten()
                    .map(|h| h.start())
                    .ok_or("the oldest copy of the WAL has no valid header")?
            }
        };
        for (i, (gen, path)) in copies.iter().enumerate().skip(first) {
            let broken = |why: &str| format!("the copy {} {why}", path.display());
            if i > first && gen.seq != copies[i - 1].0.seq.wrapping_add(1) {
                return Err(broken("does not follow the one before it"));
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| broken(&e.to_string()))?;
            let hdr = wal::read_header(&file)
                .ok()
                .flatten()
                .filter(|h| (h.salt1, h.salt2) == (gen.salt1, gen.salt2))
                .ok_or_else(|| broken("has no valid header"))?;
            if i > first {
                at = hdr.start();
            }
            let until = if is_live((gen.salt1, gen.salt2)) {
                live_until(&hdr)
            } else {
                u64::MAX
            };
            let txns = wal::committed_until(&file, &hdr, &at, until)
                .map_err(|e| broken(&e.to_string()))?;
            let reached = txns.last().map_or(at, |t| t.end);
            let sealed = seals
                .iter()
                .any(|(g, e)| g == gen && *e == SealedEnd::of(&reached));
            let mut mirror = Mirror {
                gen: *gen,
                hdr,
                path: path.clone(),
                file,
                start: at,
                end: at,
                sealed,
                listed_from: Some(at),
                listed: Vec::new(),
            };
            mirror.append(txns);
            let last = i + 1 == copies.len();
            if is_live((gen.salt1, gen.salt2)) {
                if !last {
                    return Err(broken("is of the live WAL, yet newer copies follow it"));
                }
                // The live WAL is this generation: the copier goes on from what the copy
                // holds (a seal made before SQLite appended more is stale).
                self.chain.push_back(mirror);
                return Ok(());
            }
            if !sealed {
                return Err(broken(
                    "was never sealed where it ends, and the WAL has moved on",
                ));
            }
            self.chain.push_back(mirror);
            if last {
                // The live WAL is a generation nobody copied from yet. It follows the
                // sealed one only if SQLite numbered it so (salt-1 plus one) — or it is
                // gone, truncated after the restart: nothing committed since.
                return match live {
                    None => Ok(()),
                    Some(h) if h.salt1 == gen.salt1.wrapping_add(1) => {
                        self.start_live(h, h.start())
                    }
                    Some(h) => Err(format!(
                        "the WAL's generation {:08x}-{:08x} does not follow the copied {:08x}-{:08x}",
                        h.salt1, h.salt2, gen.salt1, gen.salt2
                    )),
                };
            }
        }
        Ok(())
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

    /// Copies what the wal-index says was committed in the live WAL since the last copy.
    pub fn copy_new(&mut self) -> Result<Copied> {
        let reading = |p: &Path| io_err("reading", p);
        let Some(index) = shm::read(&self.shm_path).map_err(reading(&self.shm_path))? else {
            return Ok(Copied::Nothing);
        };
        let Some((live, hdr)) = open_wal(&self.wal_path)? else {
            return Ok(Copied::Nothing);
        };
        // The index and the WAL's header disagree while the first transaction of a new
        // generation is written: nothing of it is committed yet.
        if index.salts() != (hdr.salt1, hdr.salt2) || index.mx_frame == 0 {
            return Ok(Copied::Nothing);
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
                .push_back(Mirror::create(&self.dir, gen, &live, hdr, hdr.start())?);
        }
        let until = index.end_offset();
        let dir = self.dir.clone();
        let m = self.chain.back_mut().expect("pushed above");
        let mut from = m.end;
        if until <= from.offset {
            return Ok(Copied::Nothing);
        }
        if m.sealed {
            m.unseal(&dir)?;
        }
        let wal_path = self.wal_path.clone();
        let reading = |e| io_err("reading", &wal_path)(e);
        loop {
            // The usual case, what committed since the copier's last round: read once,
            // validated in memory and written out from there, `COPY_IN_MEMORY` at a time.
            // Only a transaction larger than that is copied by the kernel, after a walk.
            let kept =
                wal::committed_kept(&live, &hdr, &from, until, &mut self.buf, COPY_IN_MEMORY)
                    .map_err(reading)?;
            let (txns, in_memory, more) = match kept {
                Some((txns, more)) => (txns, true, more),
                None => (
                    wal::committed_until(&live, &hdr, &from, until).map_err(reading)?,
                    false,
                    false,
                ),
            };
            let Some(last) = txns.last() else {
                // The index says committed, the frames do not check out: the WAL was
                // restarted under us (the next round sees the new generation), or it is
                // damaged.
                return Ok(Copied::Nothing);
            };
            let len = last.end.offset - from.offset;
            if in_memory {
                m.file.write_all_at(&self.buf[..len as usize], from.offset)
            } else {
                copy_range(&live, &m.file, from.offset, len)
            }
            .map_err(io_err("copying the WAL to", &m.path))?;
            m.append(txns);
            if !more || m.end.offset >= until {
                return Ok(Copied::Some);
            }
            from = m.end;
        }
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

    /// Everything shipped and SQLite is deleting the WAL: no mirror is needed any more, and
    /// what the WAL holds is not copied again.
    pub fn clear(&mut self) -> Result<()> {
        for m in self.chain.drain(..) {
            m.remove(&self.dir);
        }
        if let Some((_, h)) = open_wal(&self.wal_path)? {
            self.clean_until = Some((h.salt1, h.salt2));
        }
        Ok(())
    }
}

/// The files in `dir` with the names of mirrors and seals; anything else there is removed
/// (temporary files of a crashed process).
fn list(dir: &Path) -> Result<Vec<(Name, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        match e.file_name().to_str().and_then(parse_name) {
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
    let marker = mirror_dir(meta_dir).join(seal_name(&gen, &SealedEnd::of(end)));
    File::create(&marker).map_err(io_err("creating", &marker))?;
    Ok(())
}
