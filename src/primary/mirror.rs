//! Mirrors of the WAL: the committed frames of each WAL generation, copied into a file of
//! their own as soon as they commit (at the same offsets, after the WAL's header; written
//! from the buffer they were validated in, or copied by the kernel when far behind). The
//! shipper encodes LTX files from the mirrors, never from the live WAL.
//!
//! This is what lets SQLite restart the WAL at once while the replica is behind. Before a
//! restart, the restart hook copies the few frames the copier has not reached yet and
//! *seals* the mirror: everything the generation committed is in it, and the WAL may be
//! overwritten. The writer therefore never waits for the encoder or the network; it pays
//! for a copy of the frames committed since the copier's last round.
//!
//! After a crash, the mirrors hold every transaction that had not shipped from the
//! generations SQLite has restarted since, and the live WAL holds the rest. A sealed
//! mirror's file name gives where its generation ended, so that a mirror whose tail was
//! lost (they are not synced: a power failure can take it) is found out at start-up, and
//! the primary ships the whole database rather than a replica with a hole.
//!
//! File names, in `<db>-litestream/wal/`:
//! - `<salt1>-<salt2>.wal` while SQLite may still append to that generation;
//! - `<salt1>-<salt2>-<end offset>-<cksum1>-<cksum2>.sealed` once it may restart the WAL.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::wal::{self, Txn, WalHeader, WalPos, HEADER_SIZE};
use crate::error::{Error, Result};

type Salts = (u32, u32);
/// Where a sealed mirror's generation ends: offset, and the running checksum there.
type SealedEnd = (u64, u32, u32);
/// The mirror files found in the folder: generation → (path, where it ends if sealed).
type Found = HashMap<Salts, (PathBuf, Option<SealedEnd>)>;

fn salts(pos: &WalPos) -> Salts {
    (pos.salt1, pos.salt2)
}

/// The copy of one WAL generation.
pub(super) struct Mirror {
    hdr: WalHeader,
    path: PathBuf,
    file: File,
    /// Where copying started: the generation's start, or where shipping went on from.
    start: WalPos,
    /// The end of the committed frames copied so far.
    end: WalPos,
    /// SQLite may have restarted the WAL past this generation: it ends at `end`.
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

pub(super) struct Mirrors {
    dir: PathBuf,
    wal_path: PathBuf,
    /// Oldest generation first; all but the newest are sealed.
    chain: VecDeque<Mirror>,
    /// Where the live WAL's mirror starts when it has none yet (shipping goes on from
    /// there); None: at the start of the generation.
    resume: Option<WalPos>,
    /// Write-transaction ends noted before the last copy: what committed before them is
    /// in the mirrors.
    pub notes: u64,
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

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::io(what, e)
}

fn live_name(s: Salts) -> String {
    format!("{:08x}-{:08x}.wal", s.0, s.1)
}

fn sealed_name(end: &WalPos) -> String {
    format!(
        "{:08x}-{:08x}-{:x}-{:08x}-{:08x}.sealed",
        end.salt1, end.salt2, end.offset, end.cksum1, end.cksum2
    )
}

/// A mirror's file name: its generation, and where it ends if sealed (offset, checksums).
fn parse_name(name: &str) -> Option<(Salts, Option<SealedEnd>)> {
    let hex32 = |s: &str| u32::from_str_radix(s, 16).ok();
    if let Some(stem) = name.strip_suffix(".wal") {
        let (a, b) = stem.split_once('-')?;
        return Some(((hex32(a)?, hex32(b)?), None));
    }
    let parts: Vec<&str> = name.strip_suffix(".sealed")?.split('-').collect();
    let [a, b, off, c1, c2] = parts[..] else {
        return None;
    };
    let end = (u64::from_str_radix(off, 16).ok()?, hex32(c1)?, hex32(c2)?);
    Some(((hex32(a)?, hex32(b)?), Some(end)))
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

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))
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

impl Mirror {
    /// A new mirror of the live WAL's generation `hdr`, copying from `start`.
    fn create(dir: &Path, live: &File, hdr: WalHeader, start: WalPos) -> Result<Mirror> {
        let path = dir.join(live_name((hdr.salt1, hdr.salt2)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        copy_range(live, &file, 0, HEADER_SIZE).map_err(io_err("writing", &path))?;
        Ok(Mirror {
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

    fn rename(&mut self, name: String, sealed: bool) -> Result<()> {
        let to = self.path.with_file_name(name);
        std::fs::rename(&self.path, &to).map_err(io_err("renaming", &self.path))?;
        self.path = to;
        self.sealed = sealed;
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        self.rename(sealed_name(&self.end), true)
    }

    /// SQLite went on appending to a sealed generation (a RESTART checkpoint takes the
    /// restart locks without restarting; the next writer may then fail to).
    fn unseal(&mut self) -> Result<()> {
        self.rename(live_name((self.hdr.salt1, self.hdr.salt2)), false)
    }

    fn holds(&self, pos: &WalPos) -> bool {
        self.hdr.same_generation(pos)
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Mirrors {
    /// No mirrors: copying starts at `from` in the live WAL (None: at the start of the
    /// next generation). Mirrors left from before are deleted.
    pub fn fresh(dir: &Path, wal_path: &Path, from: Option<WalPos>) -> Result<Mirrors> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        for (path, _) in list(dir)?.into_values() {
            let _ = std::fs::remove_file(path);
        }
        Ok(Mirrors {
            dir: dir.to_path_buf(),
            wal_path: wal_path.to_path_buf(),
            chain: VecDeque::new(),
            resume: from,
            notes: 0,
            buf: Vec::new(),
        })
    }

    /// Start-up after shipping reached `from`: takes up the mirrors left by the last run,
    /// from `from`'s generation through each sealed one to the live WAL. `from` None: the
    /// database file holds what shipped, and the mirrors (if any) start at the beginning of
    /// their oldest generation. Err(reason) when some transaction after `from` is in
    /// neither: the mirrors cannot say what changed.
    pub fn recover(
        dir: &Path,
        wal_path: &Path,
        from: Option<WalPos>,
    ) -> Result<std::result::Result<Mirrors, String>> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut found = list(dir)?;
        let live = open_wal(wal_path)?.map(|(_, h)| h);
        let from = match from {
            Some(pos) => pos,
            None if found.is_empty() => return Mirrors::fresh(dir, wal_path, None).map(Ok),
            None => match oldest(&found) {
                Some(pos) => pos,
                None => return Ok(Err("the copies of the WAL have no readable oldest".into())),
            },
        };
        let mut m = Mirrors {
            dir: dir.to_path_buf(),
            wal_path: wal_path.to_path_buf(),
            chain: VecDeque::new(),
            resume: None,
            notes: 0,
            buf: Vec::new(),
        };
        let outcome = m.take_up(&mut found, live, from);
        for (path, _) in found.into_values() {
            let _ = std::fs::remove_file(path);
        }
        Ok(outcome.map(|()| m))
    }

    fn take_up(
        &mut self,
        found: &mut Found,
        live: Option<WalHeader>,
        mut at: WalPos,
    ) -> std::result::Result<(), String> {
        let is_live = |pos: &WalPos| live.is_some_and(|h| h.same_generation(pos));
        loop {
            let Some((path, seal)) = found.remove(&salts(&at)) else {
                // No copy of this generation: the live WAL must still hold it.
                if is_live(&at) {
                    self.resume = Some(at);
                    return Ok(());
                }
                return Err(format!(
                    "WAL generation {:08x}-{:08x} is neither in the WAL nor copied",
                    at.salt1, at.salt2
                ));
            };
            let broken = |why: &str| format!("the copy {} {why}", path.display());
            let file = open_rw(&path).map_err(|e| broken(&e.to_string()))?;
            let hdr = wal::read_header(&file)
                .ok()
                .flatten()
                .filter(|h| h.same_generation(&at))
                .ok_or_else(|| broken("has no valid header"))?;
            let txns =
                wal::committed_after(&file, &hdr, &at).map_err(|e| broken(&e.to_string()))?;
            let reached = txns.last().map_or(at, |t| t.end);
            let mut mirror = Mirror {
                hdr,
                path: path.clone(),
                file,
                start: at,
                end: at,
                sealed: seal.is_some(),
                listed_from: Some(at),
                listed: Vec::new(),
            };
            mirror.append(txns);
            if is_live(&at) {
                // The live WAL is this generation: it has everything, and the copier goes
                // on from what the copy holds.
                if mirror.sealed {
                    mirror.unseal().map_err(|e| broken(&e.to_string()))?;
                }
                self.chain.push_back(mirror);
                return Ok(());
            }
            let ends_where_sealed = seal == Some((reached.offset, reached.cksum1, reached.cksum2));
            if !ends_where_sealed {
                return Err(broken(if seal.is_some() {
                    "is shorter than its generation"
                } else {
                    "was never sealed and the WAL has moved on"
                }));
            }
            self.chain.push_back(mirror);
            // The next generation: SQLite adds one to salt-1 at each restart.
            let next = at.salt1.wrapping_add(1);
            let copied = found.keys().find(|s| s.0 == next).copied();
            at = match (copied, live) {
                (Some(s), _) => {
                    let (p, _) = &found[&s];
                    let f = File::open(p).map_err(|e| broken(&e.to_string()))?;
                    match wal::read_header(&f).ok().flatten() {
                        Some(h) => h.start(),
                        None => {
                            return Err(format!("the copy {} has no valid header", p.display()))
                        }
                    }
                }
                (None, Some(h)) if h.salt1 == next => h.start(),
                // Truncated or deleted after the restart: nothing committed since.
                (None, None) => return Ok(()),
                (None, Some(h)) => {
                    return Err(format!(
                    "the WAL's generation {:08x}-{:08x} does not follow the copied {:08x}-{:08x}",
                    h.salt1, h.salt2, at.salt1, at.salt2
                ))
                }
            };
        }
    }

    /// Copies what was committed in the live WAL since the last copy. Returns whether
    /// there was anything.
    pub fn copy_new(&mut self) -> Result<bool> {
        let Some((live, hdr)) = open_wal(&self.wal_path)? else {
            return Ok(false);
        };
        let known = self.chain.back().filter(|m| m.holds(&hdr.start()));
        let new_generation = known.is_none();
        let mut from = match (known, self.resume) {
            (Some(m), _) => m.end,
            (None, Some(p)) if hdr.same_generation(&p) => p,
            (None, _) => hdr.start(),
        };
        let reading = |e| io_err("reading", &self.wal_path)(e);
        let mut copied = false;
        loop {
            // The usual case, what committed since the copier's last round: read once,
            // validated in memory and written out from there, `COPY_IN_MEMORY` at a time.
            // Only a transaction larger than that is copied by the kernel, after a walk.
            let kept = wal::committed_kept(&live, &hdr, &from, &mut self.buf, COPY_IN_MEMORY)
                .map_err(reading)?;
            let (txns, in_memory, more) = match kept {
                Some((txns, more)) => (txns, true, more),
                None => (
                    wal::committed_after(&live, &hdr, &from).map_err(reading)?,
                    false,
                    false,
                ),
            };
            let Some(last) = txns.last() else {
                return Ok(copied);
            };
            if new_generation && !copied {
                // A new generation: SQLite restarted the WAL (the restart hook sealed the
                // one before), or it deleted the WAL at a close after everything had shipped.
                if let Some(m) = self.chain.back_mut() {
                    m.seal()?;
                }
                self.resume = None;
                self.chain
                    .push_back(Mirror::create(&self.dir, &live, hdr, from)?);
            }
            let m = self.chain.back_mut().expect("pushed above");
            if m.sealed {
                m.unseal()?;
            }
            let len = last.end.offset - from.offset;
            if in_memory {
                m.file.write_all_at(&self.buf[..len as usize], from.offset)
            } else {
                // Safe from a restart between reading and copying: restarts wait for this lock.
                copy_range(&live, &m.file, from.offset, len)
            }
            .map_err(io_err("copying the WAL to", &m.path))?;
            m.append(txns);
            copied = true;
            if !more {
                return Ok(true);
            }
            from = m.end;
        }
    }

    /// SQLite is about to restart the WAL: the newest mirror now ends its generation.
    pub fn seal(&mut self) -> Result<()> {
        match self.chain.back_mut() {
            Some(m) => m.seal(),
            None => Ok(()),
        }
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
            (Some(i), Some(c)) if self.chain[i].sealed && self.chain[i].end == c => {
                (i + 1, self.chain.get(i + 1)?.start)
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
            let done = front.sealed
                && (front.end == *shipped || self.chain.iter().skip(1).any(|m| m.holds(shipped)));
            if !done {
                break;
            }
            if let Some(m) = self.chain.pop_front() {
                m.remove();
            }
        }
    }

    /// Everything shipped and SQLite is deleting the WAL: no mirror is needed any more, and
    /// what the WAL holds is not copied again.
    pub fn clear(&mut self) -> Result<()> {
        for m in self.chain.drain(..) {
            m.remove();
        }
        self.resume = match open_wal(&self.wal_path)? {
            Some((f, h)) => {
                let txns = wal::committed_after(&f, &h, &h.start())
                    .map_err(io_err("reading", &self.wal_path))?;
                Some(txns.last().map_or(h.start(), |t| t.end))
            }
            None => None,
        };
        Ok(())
    }
}

/// The start of the oldest generation among `found`: the one whose predecessor (salt-1
/// less one) is not there.
fn oldest(found: &Found) -> Option<WalPos> {
    let (_, (path, _)) = found
        .iter()
        .find(|(s, _)| !found.keys().any(|o| o.0 == s.0.wrapping_sub(1)))?;
    let f = File::open(path).ok()?;
    wal::read_header(&f).ok().flatten().map(|h| h.start())
}

/// The mirror files in `dir`, by generation.
fn list(dir: &Path) -> Result<Found> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        let name = e.file_name();
        match name.to_str().and_then(parse_name) {
            Some((s, seal)) => {
                out.insert(s, (e.path(), seal));
            }
            None => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Two generations: the first copied and sealed at a restart, the second live.
    fn two_generations(dir: &Path, wal_path: &Path) -> (Mirrors, WalPos, WalPos) {
        write_wal(
            wal_path,
            512,
            (10, 1),
            &[vec![(1, 1), (2, 2)], vec![(2, 3)]],
        );
        let first = header(wal_path).start();
        let mut m = Mirrors::fresh(dir, wal_path, None).unwrap();
        assert!(m.copy_new().unwrap());
        assert!(!m.copy_new().unwrap(), "nothing new the second time");
        m.seal().unwrap();
        let sealed_end = m.chain[0].end;
        // SQLite restarts the WAL: salt-1 plus one, and it overwrites the old frames.
        write_wal(wal_path, 512, (11, 7), &[vec![(3, 4)]]);
        assert!(m.copy_new().unwrap());
        (m, first, sealed_end)
    }

    #[test]
    fn copies_seal_and_hand_the_shipper_each_generation_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mdir, wal_path) = (dir.path().join("wal"), dir.path().join("db-wal"));
        let (mut m, first, sealed_end) = two_generations(&mdir, &wal_path);
        assert_eq!(names(&mdir).len(), 2);
        assert!(names(&mdir)[0].ends_with(".sealed"), "{:?}", names(&mdir));

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
        // Asked again (as after a failed round): handed over already, so read back.
        assert!(m.source(None).unwrap().unwrap().txns.is_none());
        assert_eq!(
            wal::read_page(&src.file, 512, txns[1].pages[&2], (10, 1)).unwrap()[0],
            3
        );
        // At the sealed end it goes on with the next generation.
        let next = m.source(Some(sealed_end)).unwrap().unwrap();
        assert_eq!((next.hdr.salt1, next.from.offset), (11, HEADER_SIZE));
        assert!(m.source(Some(next.end)).unwrap().is_none());

        // Shipped past the first generation: its copy goes, the live one stays.
        m.release(&sealed_end);
        assert_eq!(names(&mdir), vec![live_name((11, 7))]);
        m.release(&next.end);
        assert_eq!(names(&mdir).len(), 1);
    }

    #[test]
    fn a_copier_far_behind_copies_through_the_kernel_what_it_validated() {
        let dir = tempfile::tempdir().unwrap();
        let (mdir, wal_path) = (dir.path().join("wal"), dir.path().join("db-wal"));
        // More than one copy reads into memory: a transaction of 1100 pages of 4 KiB, a
        // small one after it, then the frames of one that never committed.
        let big: Vec<(u32, u8)> = (1..=1100).map(|pg| (pg, pg as u8)).collect();
        write_wal(&wal_path, 4096, (3, 4), &[big, vec![(2, 9)], vec![(5, 5)]]);
        let mut bytes = std::fs::read(&wal_path).unwrap();
        let committed = bytes.len() - 24 - 4096;
        bytes[committed + 4..committed + 8].copy_from_slice(&0u32.to_be_bytes());
        std::fs::write(&wal_path, &bytes).unwrap();
        assert!(bytes.len() as u64 > COPY_IN_MEMORY);

        let mut m = Mirrors::fresh(&mdir, &wal_path, None).unwrap();
        assert!(m.copy_new().unwrap());
        let src = m.source(None).unwrap().unwrap();
        assert_eq!(src.end.offset, committed as u64);
        let copied = std::fs::read(src_path(&m)).unwrap();
        assert_eq!(copied[..committed], bytes[..committed]);
        let txns = src.txns.unwrap();
        assert_eq!(
            (txns.len(), txns[1].pages[&2]),
            (2, 32 + 1100 * (24 + 4096))
        );
        assert_eq!(
            wal::copied_until(&src.file, &src.hdr, &src.from, src.end.offset).unwrap(),
            txns
        );
    }

    #[test]
    fn a_copier_far_behind_goes_on_in_steps_that_fit_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (mdir, wal_path) = (dir.path().join("wal"), dir.path().join("db-wal"));
        // Three transactions of 400 pages of 4 KiB: more than one read keeps in memory,
        // each smaller than that.
        let txn = |fill: u8| -> Vec<(u32, u8)> { (1..=400).map(|pg| (pg, fill)).collect() };
        write_wal(&wal_path, 4096, (3, 4), &[txn(1), txn(2), txn(3)]);
        let bytes = std::fs::read(&wal_path).unwrap();
        assert!(bytes.len() as u64 > COPY_IN_MEMORY);

        let mut m = Mirrors::fresh(&mdir, &wal_path, None).unwrap();
        assert!(m.copy_new().unwrap());
        assert!(!m.copy_new().unwrap(), "all of it in one call");
        let src = m.source(None).unwrap().unwrap();
        assert_eq!(src.end.offset, bytes.len() as u64);
        assert_eq!(std::fs::read(src_path(&m)).unwrap(), bytes);
        assert_eq!(src.txns.map(|t| t.len()), Some(3));
    }

    fn src_path(m: &Mirrors) -> PathBuf {
        m.chain.back().unwrap().path.clone()
    }

    #[test]
    fn start_up_takes_up_the_copies_or_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (mdir, wal_path) = (dir.path().join("wal"), dir.path().join("db-wal"));
        let (m, first, sealed_end) = two_generations(&mdir, &wal_path);
        let live_end = m.chain[1].end;
        drop(m);

        // A crash: from the shipped position, through the sealed copy, to the live WAL.
        let r = Mirrors::recover(&mdir, &wal_path, Some(first))
            .unwrap()
            .unwrap();
        assert_eq!(r.chain.len(), 2);
        assert_eq!((r.chain[0].end, r.chain[1].end), (sealed_end, live_end));
        // From None (the database file held what shipped): the oldest copy's start.
        let r = Mirrors::recover(&mdir, &wal_path, None).unwrap().unwrap();
        assert_eq!(r.chain[0].start, first);
        drop(r);

        // A sealed copy that lost its tail (not synced, a power failure) is found out.
        let sealed = mdir.join(&names(&mdir)[0]);
        let len = std::fs::metadata(&sealed).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&sealed)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let why = Mirrors::recover(&mdir, &wal_path, Some(first))
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("shorter than its generation"), "{why}");

        // A WAL of an unrelated generation and no copy of the shipped one.
        let dir2 = tempfile::tempdir().unwrap();
        let wal2 = dir2.path().join("db-wal");
        write_wal(&wal2, 512, (99, 1), &[vec![(1, 1)]]);
        let why = Mirrors::recover(&dir2.path().join("wal"), &wal2, Some(first))
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("neither in the WAL nor copied"), "{why}");
    }

    #[test]
    fn a_generation_appended_after_its_seal_is_unsealed_and_copied_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mdir, wal_path) = (dir.path().join("wal"), dir.path().join("db-wal"));
        write_wal(&wal_path, 512, (5, 5), &[vec![(1, 1)]]);
        let mut m = Mirrors::fresh(&mdir, &wal_path, None).unwrap();
        m.copy_new().unwrap();
        let first = m.source(None).unwrap().unwrap();
        assert_eq!(first.txns.map(|t| t.len()), Some(1));
        // A RESTART checkpoint took the restart locks, then a reader stopped the restart.
        m.seal().unwrap();
        write_wal(&wal_path, 512, (5, 5), &[vec![(1, 1)], vec![(2, 2)]]);
        assert!(m.copy_new().unwrap());
        assert_eq!(names(&mdir), vec![live_name((5, 5))]);
        // The list goes on after what the shipper took.
        let rest = m.source(Some(first.end)).unwrap().unwrap();
        let listed = rest.txns.unwrap();
        assert_eq!((listed.len(), listed[0].end), (1, rest.end));
        assert_eq!(listed[0].pages.keys().copied().collect::<Vec<_>>(), vec![2]);
        let src = m.source(None).unwrap().unwrap();
        let txns = wal::copied_until(&src.file, &src.hdr, &src.from, src.end.offset).unwrap();
        assert_eq!(txns.len(), 2);
        // The names round-trip.
        assert_eq!(parse_name(&live_name((5, 5))), Some(((5, 5), None)));
        assert_eq!(
            parse_name(&sealed_name(&src.end)),
            Some((
                (5, 5),
                Some((src.end.offset, src.end.cksum1, src.end.cksum2))
            ))
        );
    }
}
