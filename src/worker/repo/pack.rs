//! Objects held in memory, written as one pack with its index, the files a
//! fetch leaves: `objects/pack/pack-<checksum>.pack` and `.idx` (version 2).
//!
//! A worker commits into memory and writes everything since its last push
//! as one pack right before the push. `git push` then copies the compressed
//! entries as they are, where it opened, mapped, inflated and compressed
//! again every loose object (19–24 times the CPU, `docs/performance.md`),
//! and a commit creates no file. Entries are whole objects, never deltas.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::Kind;
use gix::zlib::stream::deflate::{Compress, FlushCompress};
use gix::zlib::{Compression, Status};

/// Prefix of the files a pack is written to before it is renamed into
/// place. Not git's `tmp_pack_`: the store removes those while a fetch may
/// not run, and a pack is written outside that lock.
pub const TMP_PREFIX: &str = "gr_pack_";

/// Where one object went in the pack.
struct Entry {
    id: ObjectId,
    offset: u64,
    crc: u32,
}

/// Writes `objects` as one pack and its index into `pack_dir`; returns the
/// pack's path, or `None` if there was nothing to write.
pub fn write<'a>(
    pack_dir: &Path,
    objects: impl ExactSizeIterator<Item = (&'a ObjectId, &'a (Kind, Vec<u8>))>,
) -> io::Result<Option<PathBuf>> {
    if objects.len() == 0 {
        return Ok(None);
    }
    let (pack, mut entries, checksum) = encode(objects)?;
    let index = index(&mut entries, &checksum)?;
    let name = format!("pack-{checksum}");
    let pack_path = pack_dir.join(format!("{name}.pack"));
    // A `.keep` while the pack has no index yet, as git's index-pack and
    // gix write theirs: a `git repack -A -d` beside this write lists packs
    // by their `.pack` (git 2.39) but packs only what has an index, and
    // would delete this one with objects it never copied.
    let keep = pack_dir.join(format!("{name}.keep"));
    std::fs::write(&keep, b"gitops-reverser: being written\n")?;
    // The index last: readers find a pack through its index.
    let written = persist(pack_dir, &pack, &pack_path)
        .and_then(|()| persist(pack_dir, &index, &pack_dir.join(format!("{name}.idx"))));
    // NotFound: a writer of the same objects (the same name) removed it.
    let unkept = std::fs::remove_file(&keep).or_else(|e| match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    });
    written?;
    unkept?;
    Ok(Some(pack_path))
}

fn persist(dir: &Path, bytes: &[u8], path: &Path) -> io::Result<()> {
    let mut file = tempfile::Builder::new().prefix(TMP_PREFIX).tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The pack's bytes (trailer included), its entries and its checksum.
fn encode<'a>(
    objects: impl ExactSizeIterator<Item = (&'a ObjectId, &'a (Kind, Vec<u8>))>,
) -> io::Result<(Vec<u8>, Vec<Entry>, ObjectId)> {
    let count =
        u32::try_from(objects.len()).map_err(|_| io::Error::other("too many objects for one pack"))?;
    let mut pack = Vec::with_capacity(4096);
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    let mut entries = Vec::with_capacity(count as usize);
    // Level 1, as git writes loose objects: these are small text files
    // and the bytes stay on a local disk until the push copies them.
    let mut compress = Compress::new(Compression::BEST_SPEED);
    for (id, (kind, data)) in objects {
        let offset = pack.len();
        entry_header(&mut pack, type_code(*kind), data.len() as u64);
        deflate(&mut compress, data, &mut pack)?;
        entries.push(Entry { id: *id, offset: offset as u64, crc: crc32fast::hash(&pack[offset..]) });
    }
    let checksum = sha1(&pack)?;
    pack.extend_from_slice(checksum.as_bytes());
    Ok((pack, entries, checksum))
}

fn type_code(kind: Kind) -> u8 {
    match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    }
}

/// Type and inflated size: 3 bits of type and 4 of size in the first byte,
/// then 7 bits of size per byte, low bits first; the high bit says "more".
fn entry_header(out: &mut Vec<u8>, code: u8, size: u64) {
    let mut byte = (code << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
}

/// Appends `data` as one complete zlib stream.
fn deflate(compress: &mut Compress, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    compress.reset();
    let mut input = data;
    loop {
        let start = out.len();
        out.resize(start + input.len() / 2 + 64, 0);
        let (read, written) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress(input, &mut out[start..], FlushCompress::Finish)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let consumed = (compress.total_in() - read) as usize;
        let produced = (compress.total_out() - written) as usize;
        out.truncate(start + produced);
        input = &input[consumed..];
        match status {
            Status::StreamEnd => return Ok(()),
            _ if consumed == 0 && produced == 0 => return Err(io::Error::other("zlib made no progress")),
            _ => {}
        }
    }
}

/// A version 2 index of `entries` (sorted here) in the pack `checksum`.
fn index(entries: &mut [Entry], checksum: &ObjectId) -> io::Result<Vec<u8>> {
    entries.sort_unstable_by_key(|entry| entry.id);
    let mut index = Vec::with_capacity(8 + 256 * 4 + entries.len() * 28 + 40);
    index.extend_from_slice(&[0xff, b't', b'O', b'c']);
    index.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for entry in entries.iter() {
        fanout[entry.id.as_bytes()[0] as usize] += 1;
    }
    let mut below = 0u32;
    for count in fanout {
        below += count;
        index.extend_from_slice(&below.to_be_bytes());
    }
    for entry in entries.iter() {
        index.extend_from_slice(entry.id.as_bytes());
    }
    for entry in entries.iter() {
        index.extend_from_slice(&entry.crc.to_be_bytes());
    }
    // Offsets past 2 GiB go to a table of 8-byte offsets, flagged by the high bit.
    let mut large = Vec::new();
    for entry in entries.iter() {
        let small = match u32::try_from(entry.offset) {
            Ok(offset) if offset < 0x8000_0000 => offset,
            _ => {
                large.push(entry.offset);
                0x8000_0000 | (large.len() as u32 - 1)
            }
        };
        index.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        index.extend_from_slice(&offset.to_be_bytes());
    }
    index.extend_from_slice(checksum.as_bytes());
    let own = sha1(&index)?;
    index.extend_from_slice(own.as_bytes());
    Ok(index)
}

fn sha1(bytes: &[u8]) -> io::Result<ObjectId> {
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(bytes);
    hasher.try_finalize().map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_header_carries_type_and_size_in_seven_bit_groups() {
        let header = |code, size| {
            let mut out = Vec::new();
            entry_header(&mut out, code, size);
            out
        };
        assert_eq!(header(3, 5), [0x35]);
        assert_eq!(header(1, 15), [0x1f]);
        assert_eq!(header(2, 16), [0xa0, 0x01]);
        // 1,000 = 0b1111101000: low 4 bits 1000, then 0111110.
        assert_eq!(header(3, 1000), [0xb8, 0x3e]);
        assert_eq!(header(3, 1 << 11), [0xb0, 0x80, 0x01]);
    }

    #[test]
    fn nothing_to_write_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let none: Vec<(ObjectId, (Kind, Vec<u8>))> = Vec::new();
        assert_eq!(write(dir.path(), none.iter().map(|(id, o)| (id, o))).unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
