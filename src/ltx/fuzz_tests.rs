//! Robustness: no decoder panics or over-allocates on any input, corrupted files are refused
//! (or, for the few LZ4 bits decoders ignore, decode to exactly the original pages), and
//! encode → decode is the identity.

use proptest::prelude::*;

use super::*;

/// A few real files (both page encodings, 1 KiB and 64 KiB pages) as mutation seeds.
const SEEDS: &[&[u8]] = &[
    include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ltx/v0.5.17-1024/replica/ltx/0/0000000000000003-0000000000000003.ltx"
    )),
    include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ltx/v0.5.10-1024/replica/ltx/9/0000000000000001-0000000000000002.ltx"
    )),
    include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ltx/mixed-1024/replica/ltx/0/0000000000000004-0000000000000004.ltx"
    )),
    include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ltx/v0.5.17-65536/replica/ltx/1/0000000000000002-0000000000000004.ltx"
    )),
    include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ltx/v0.5.10-65536/replica/ltx/0/0000000000000002-0000000000000002.ltx"
    )),
];

/// Runs every decoder over `b` as if it were each kind of input; only panics matter here.
fn poke_all_decoders(b: &[u8]) {
    let _ = Header::decode(b);
    let _ = decode_tail(b);
    let _ = decode_page_index(b);
    let _ = page_frame_len(b);
    for ps in [512, 1024, 65536] {
        let pgno = b
            .get(..4)
            .map_or(1, |x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]));
        let _ = decode_page_frame(b, ps, pgno);
    }
    let _ = index_range(b.len() as u64, b.len() as u64 / 3);
}

/// Decodes a possibly corrupted file the way both a full reader and a VFS would; a success
/// must give the original pages (no silent corruption).
fn check_mutant(b: &[u8], original: &[DecodedPage]) {
    poke_all_decoders(b);
    let verified = verify_file(b).is_ok();
    if let Ok(d) = decode_file(b) {
        assert_eq!(
            d.pages, original,
            "a corrupted file decoded to different pages"
        );
        assert!(verified);
    }
    // Random access: each frame the (possibly corrupt) index points at.
    let Ok((size, _)) = decode_tail(b) else {
        return;
    };
    let Ok(r) = index_range(b.len() as u64, size) else {
        return;
    };
    let Ok(index) = decode_page_index(&b[r.start as usize..r.end as usize]) else {
        return;
    };
    let Ok(h) = Header::decode(b) else { return };
    for e in index {
        if let Some(frame) = b.get(e.offset as usize..e.end() as usize) {
            let _ = decode_page_frame(frame, h.page_size, e.pgno);
        }
    }
}

#[test]
fn every_truncation_and_bit_flip_of_real_files_is_caught() {
    for seed in SEEDS {
        let original = decode_file(seed).unwrap().pages;
        for cut in 0..seed.len() {
            assert!(decode_file(&seed[..cut]).is_err(), "cut at {cut}");
            check_mutant(&seed[..cut], &original);
        }
        // One flip per byte, cycling through the bit positions; decoding is slow in debug
        // builds (LZ4 frames allocate 128 KiB each), so 64 KiB-page files get every 16th byte.
        let step = if original[0].data.len() > 4096 { 16 } else { 1 };
        for i in (0..seed.len()).step_by(step) {
            let mut b = seed.to_vec();
            b[i] ^= 1 << (i % 8);
            check_mutant(&b, &original);
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Xor(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Xor(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..32usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len().max(1);
    match m {
        Mutation::Xor(i, x) => {
            if let Some(v) = b.get_mut(i % len) {
                *v ^= x;
            }
        }
        Mutation::Set(i, x) => {
            if let Some(v) = b.get_mut(i % len) {
                *v = *x;
            }
        }
        Mutation::Insert(i, v) => {
            let at = i % (b.len() + 1);
            b.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i % len;
            let end = (at + n).min(b.len());
            b.drain(at.min(end)..end);
        }
        Mutation::Truncate(i) => b.truncate(i % len),
    }
}

/// Pages with some structure (so LZ4 finds matches) but varied content.
fn page_strategy(ps: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        1..64usize,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(move |(fill, period, noise)| {
            let mut p: Vec<u8> = (0..ps)
                .map(|i| fill.wrapping_add((i % period) as u8))
                .collect();
            for (i, n) in noise.iter().enumerate() {
                let at = (usize::from(*n) * 131 + i * 977) % ps;
                p[at] = *n;
            }
            p
        })
}

#[derive(Debug, Clone)]
struct FileSpec {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    encoding: PageEncoding,
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    let sizes = prop_oneof![Just(512u32), Just(1024), Just(4096), Just(65536)];
    (
        sizes,
        any::<bool>(),
        any::<bool>(),
        1..1000u64,
        0..5u64,
        any::<i64>(),
    )
        .prop_flat_map(|(ps, snapshot, old, min, span, ts)| {
            let min = if snapshot { 1 } else { min + 1 };
            let n_pages = if ps == 65536 { 1..4usize } else { 1..12usize };
            (
                prop::collection::btree_set(1..40u32, n_pages.clone()),
                prop::collection::vec(page_strategy(ps as usize), n_pages.end),
                1..60u32,
            )
                .prop_map(move |(pgnos, datas, extra)| {
                    let pgnos: Vec<u32> = if snapshot {
                        (1..=pgnos.len() as u32).collect()
                    } else {
                        pgnos.into_iter().collect()
                    };
                    let last = *pgnos.last().unwrap_or(&1);
                    let commit = if snapshot { last } else { last + extra % 5 };
                    let header = Header::new(ps, commit, Txid::new(min), Txid::new(min + span), ts);
                    let pages = pgnos.into_iter().zip(datas).collect();
                    let encoding = if old {
                        PageEncoding::Lz4Frame
                    } else {
                        PageEncoding::Lz4Block
                    };
                    FileSpec {
                        header,
                        pages,
                        encoding,
                    }
                })
        })
}

fn encode(spec: &FileSpec) -> Vec<u8> {
    let mut e = Encoder::with_encoding(Vec::new(), spec.header.clone(), spec.encoding).unwrap();
    for (pgno, data) in &spec.pages {
        e.add_page(*pgno, data).unwrap();
    }
    e.finish(0).unwrap().0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..4096)) {
        poke_all_decoders(&b);
        prop_assert!(decode_file(&b).is_err());
        prop_assert!(verify_file(&b).is_err());
    }

    /// Arbitrary bytes behind a valid header, and frames with valid-looking prefixes, reach
    /// the deeper decoders (index, LZ4 block and frame) instead of failing on the magic.
    #[test]
    fn plausible_prefixes_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..2048),
        flag in 0..2u16,
        size in any::<u32>(),
        lz4_flg in any::<u8>(),
    ) {
        let h = Header::new(1024, 9, Txid::new(1), Txid::new(2), 0).encode();
        let mut file = h.to_vec();
        file.extend_from_slice(&tail);
        poke_all_decoders(&file);
        prop_assert!(decode_file(&file).is_err());

        let mut frame = vec![0, 0, 0, 3];
        frame.extend_from_slice(&flag.to_be_bytes());
        if flag == 1 {
            frame.extend_from_slice(&size.min(tail.len() as u32 + 2).to_be_bytes());
        } else {
            frame.extend_from_slice(&[0x04, 0x22, 0x4d, 0x18, lz4_flg, 0x40]);
        }
        frame.extend_from_slice(&tail);
        poke_all_decoders(&frame);
        let _ = decode_page_frame(&frame, 1024, 3);
    }

    #[test]
    fn mutated_real_files_never_panic_nor_lie(
        seed in 0..SEEDS.len(),
        muts in prop::collection::vec(mutation(), 1..5),
    ) {
        let original = decode_file(SEEDS[seed]).unwrap().pages;
        let mut b = SEEDS[seed].to_vec();
        for m in &muts {
            mutate(&mut b, m);
        }
        check_mutant(&b, &original);
    }

    #[test]
    fn encode_decode_round_trips(spec in file_spec()) {
        let bytes = encode(&spec);
        let d = decode_file(&bytes).unwrap();
        prop_assert_eq!(&d.header, &spec.header);
        let got: Vec<(u32, Vec<u8>)> = d.pages.iter().map(|p| (p.pgno, p.data.clone())).collect();
        prop_assert_eq!(&got, &spec.pages);
        prop_assert!(d.pages.iter().all(|p| p.encoding == spec.encoding));
        // And through the index, as a VFS reads it.
        let (size, _) = decode_tail(&bytes).unwrap();
        let r = index_range(bytes.len() as u64, size).unwrap();
        let index = decode_page_index(&bytes[r.start as usize..r.end as usize]).unwrap();
        prop_assert_eq!(&index, &d.index);
        for (e, (pgno, data)) in index.iter().zip(&spec.pages) {
            let frame = &bytes[e.offset as usize..e.end() as usize];
            prop_assert_eq!(&decode_page_frame(frame, spec.header.page_size, *pgno).unwrap(), data);
        }
    }

    #[test]
    fn mutated_encoded_files_never_panic_nor_lie(
        spec in file_spec(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut b = encode(&spec);
        let original = decode_file(&b).unwrap().pages;
        for m in &muts {
            mutate(&mut b, m);
        }
        check_mutant(&b, &original);
    }
}
