//! Index runs: immutable files of sorted (key, value) pairs, with a blocked bloom filter of the
//! keys where one pays.
//!
//! The id index maps a transfer id's fingerprint to the transfer's ordinal; the fact index maps
//! a fact's (kind, key) fingerprint to its frame's offset; the account index maps an account's
//! ordinal to the ordinals of the transfers that touch it (so a page of an account's history is
//! a few page reads, whatever its length). Each checkpoint writes the entries it adds as one new
//! run; a background merge folds runs of similar size together, so that a lookup probes few
//! runs. A run file is:
//!
//! | part | content |
//! |---|---|
//! | pages | [`ENTRIES_PER_PAGE`] entries of 16 bytes (fingerprint u64, value u64, little-endian) per 4 KiB page, sorted; the last page padded with `u64::MAX` |
//! | bloom | `bloom_words` u64: a blocked bloom filter, one 512-bit block per probe set ([`Filter::None`]: one block of ones) |
//! | fences | the first fingerprint of every page (u64 each) |
//! | checksums | the crc32c of every page (u32 each) |
//! | footer | magic, entries, pages, bloom_words (u64 each), crc32c of bloom, fences and checksums, crc32c of the footer (u32 each) |
//!
//! Opening a run reads and checks everything but the pages, which stay on disk and are read
//! through the page cache and checked when read. The filter, fences and page checksums stay in
//! memory: [`BLOOM_BITS_PER_ENTRY`] bits per entry and 12 bytes per page, ≈ 1.55 bytes per
//! entry (without a filter, 12 bytes per page: ≈ 0.05 bytes per entry).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::PageCache;
use crate::format::{PAGE_BYTES, u32_at, u64_at};

/// Entries of 16 bytes in a page.
pub const ENTRIES_PER_PAGE: usize = PAGE_BYTES / ENTRY_BYTES;
const ENTRY_BYTES: usize = 16;
/// Bloom filter bits per entry: ≈ 0.6 % false positives with [`BLOOM_PROBES`] probes in
/// 512-bit blocks.
pub const BLOOM_BITS_PER_ENTRY: u64 = 12;
const BLOOM_PROBES: u32 = 7;
const BLOCK_WORDS: usize = 8;
const FOOTER_BYTES: usize = 40;
const RUN_MAGIC: u64 = u64::from_le_bytes(*b"LDGRRUN1");
/// Pages read at once while merging.
const MERGE_READ_PAGES: usize = 256;

const _: () = assert!(PAGE_BYTES.is_multiple_of(ENTRY_BYTES));

/// Why a run cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("index run {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("index run {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { path: path.to_owned(), action, source }
}

fn damaged(path: &Path, reason: impl Into<String>) -> RunError {
    RunError::Damaged { path: path.to_owned(), reason: reason.into() }
}

/// splitmix64: spreads a fingerprint's bits for the filter's probes.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// The block and the bits in it that a fingerprint sets.
fn probes(fingerprint: u64, blocks: usize) -> (usize, [u32; BLOOM_PROBES as usize]) {
    let hash = mix(fingerprint);
    let blocks_u64 = u64::try_from(blocks).expect("fits u64");
    // Multiply-shift maps the hash onto [0, blocks) without a division.
    let block = usize::try_from((u128::from(hash) * u128::from(blocks_u64)) >> 64).expect("below blocks");
    let mut bits = [0_u32; BLOOM_PROBES as usize];
    let mut seed = mix(hash);
    for bit in &mut bits {
        *bit = u32::try_from(seed & 511).expect("below 512");
        seed = seed.rotate_right(9) ^ hash;
    }
    (block, bits)
}

fn bloom_words_for(entries: u64) -> usize {
    let bits = entries.saturating_mul(BLOOM_BITS_PER_ENTRY).max(512);
    let blocks = usize::try_from(bits.div_ceil(512)).expect("fits usize");
    blocks * BLOCK_WORDS
}

fn bloom_add(bloom: &mut [u64], fingerprint: u64) {
    let (block, bits) = probes(fingerprint, bloom.len() / BLOCK_WORDS);
    for bit in bits {
        bloom[block * BLOCK_WORDS + usize::try_from(bit / 64).expect("fits")] |= 1 << (bit % 64);
    }
}

fn bloom_may_contain(bloom: &[u64], fingerprint: u64) -> bool {
    let (block, bits) = probes(fingerprint, bloom.len() / BLOCK_WORDS);
    bits.iter()
        .all(|bit| bloom[block * BLOCK_WORDS + usize::try_from(bit / 64).expect("fits")] & (1 << (bit % 64)) != 0)
}

/// Whether a run carries a bloom filter of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// [`BLOOM_BITS_PER_ENTRY`] bits per entry: for point look-ups of keys most runs lack
    /// (fingerprints).
    PerEntry,
    /// One block of ones, which passes every key: for keys most runs hold (accounts), where a
    /// filter would cost memory and skip little.
    None,
}

impl Filter {
    fn words_for(self, entries: u64) -> usize {
        match self {
            Filter::PerEntry => bloom_words_for(entries),
            Filter::None => BLOCK_WORDS,
        }
    }
}

/// An open run.
pub struct Run {
    pub number: u64,
    pub path: PathBuf,
    file: File,
    filter: Filter,
    entries: u64,
    bloom: Vec<u64>,
    fences: Vec<u64>,
    checksums: Vec<u32>,
    /// The id of this run's pages in the page cache.
    cache_file: u64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Run").field("path", &self.path).field("entries", &self.entries).finish()
    }
}

/// The page cache's file id of run `number` (the history's own files use small ids).
pub fn cache_file_of(number: u64) -> u64 {
    1_000 + number
}

impl Run {
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of memory the filter, fences and checksums take.
    pub fn memory_bytes(&self) -> usize {
        self.bloom.len() * 8 + self.fences.len() * 8 + self.checksums.len() * 4
    }

    /// Writes `entries` (sorted by key, then value; exactly `count`) as the run file `path`,
    /// synced, and opens it.
    pub fn write(
        path: &Path,
        number: u64,
        filter: Filter,
        count: u64,
        entries: impl Iterator<Item = (u64, u64)>,
    ) -> Result<Run, RunError> {
        let file = File::create(path).map_err(io_error(path, "create"))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut bloom = match filter {
            Filter::PerEntry => vec![0_u64; bloom_words_for(count)],
            Filter::None => vec![u64::MAX; BLOCK_WORDS],
        };
        let mut fences = Vec::new();
        let mut checksums = Vec::new();
        let mut page = Vec::with_capacity(PAGE_BYTES);
        let mut written = 0_u64;
        let mut previous: Option<(u64, u64)> = None;
        let mut flush_page = |page: &mut Vec<u8>, writer: &mut BufWriter<File>| -> Result<(), RunError> {
            page.resize(PAGE_BYTES, 0xff);
            checksums.push(crc32c::crc32c(page));
            writer.write_all(page).map_err(io_error(path, "write"))?;
            page.clear();
            Ok(())
        };
        for (fingerprint, value) in entries {
            assert!(previous.is_none_or(|previous| previous <= (fingerprint, value)), "run entries arrive sorted");
            previous = Some((fingerprint, value));
            if page.is_empty() {
                fences.push(fingerprint);
            }
            page.extend_from_slice(&fingerprint.to_le_bytes());
            page.extend_from_slice(&value.to_le_bytes());
            if filter == Filter::PerEntry {
                bloom_add(&mut bloom, fingerprint);
            }
            written += 1;
            if page.len() == PAGE_BYTES {
                flush_page(&mut page, &mut writer)?;
            }
        }
        assert_eq!(written, count, "a run holds exactly the entries announced");
        if !page.is_empty() {
            flush_page(&mut page, &mut writer)?;
        }
        let mut meta = Vec::with_capacity(bloom.len() * 8 + fences.len() * 12);
        for word in &bloom {
            meta.extend_from_slice(&word.to_le_bytes());
        }
        for fence in &fences {
            meta.extend_from_slice(&fence.to_le_bytes());
        }
        for checksum in &checksums {
            meta.extend_from_slice(&checksum.to_le_bytes());
        }
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        footer.extend_from_slice(&RUN_MAGIC.to_le_bytes());
        footer.extend_from_slice(&count.to_le_bytes());
        footer.extend_from_slice(&u64::try_from(fences.len()).expect("fits").to_le_bytes());
        footer.extend_from_slice(&u64::try_from(bloom.len()).expect("fits").to_le_bytes());
        footer.extend_from_slice(&crc32c::crc32c(&meta).to_le_bytes());
        let footer_checksum = crc32c::crc32c(&footer);
        footer.extend_from_slice(&footer_checksum.to_le_bytes());
        writer.write_all(&meta).map_err(io_error(path, "write"))?;
        writer.write_all(&footer).map_err(io_error(path, "write"))?;
        let file = writer.into_inner().map_err(|error| io_error(path, "write")(error.into_error()))?;
        file.sync_all().map_err(io_error(path, "fsync"))?;
        drop(file);
        Run::open(path, number, filter)
    }

    /// Opens and checks a run file written with `filter` (everything but its pages, which are
    /// checked when read).
    pub fn open(path: &Path, number: u64, filter: Filter) -> Result<Run, RunError> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        let length = file.metadata().map_err(io_error(path, "read the length"))?.len();
        let footer_len = u64::try_from(FOOTER_BYTES).expect("fits");
        if length < footer_len {
            return Err(damaged(path, format!("{length} bytes, shorter than a footer")));
        }
        let mut footer = [0_u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, length - footer_len).map_err(io_error(path, "read the footer"))?;
        let stored = u32_at(&footer, 36);
        if crc32c::crc32c(&footer[..36]) != stored || u64_at(&footer, 0) != RUN_MAGIC {
            return Err(damaged(path, "the footer's checksum or magic does not match"));
        }
        let entries = u64_at(&footer, 8);
        let pages = usize::try_from(u64_at(&footer, 16)).map_err(|_| damaged(path, "page count"))?;
        let bloom_words = usize::try_from(u64_at(&footer, 24)).map_err(|_| damaged(path, "filter size"))?;
        let entries_per_page = u64::try_from(ENTRIES_PER_PAGE).expect("fits");
        if entries.div_ceil(entries_per_page) != u64::try_from(pages).expect("fits")
            || bloom_words != filter.words_for(entries)
        {
            return Err(damaged(path, "the footer's counts do not agree"));
        }
        let meta_len = bloom_words * 8 + pages * 12;
        let expected = u64::try_from(pages * PAGE_BYTES + meta_len).expect("fits") + footer_len;
        if length != expected {
            return Err(damaged(path, format!("{length} bytes where {expected} are expected")));
        }
        let mut meta = vec![0_u8; meta_len];
        file.read_exact_at(&mut meta, u64::try_from(pages * PAGE_BYTES).expect("fits"))
            .map_err(io_error(path, "read the filter"))?;
        if crc32c::crc32c(&meta) != u32_at(&footer, 32) {
            return Err(damaged(path, "the filter, fences or page checksums do not match their checksum"));
        }
        let bloom = (0..bloom_words).map(|index| u64_at(&meta, index * 8)).collect();
        let fences_at = bloom_words * 8;
        let fences = (0..pages).map(|index| u64_at(&meta, fences_at + index * 8)).collect();
        let checksums_at = fences_at + pages * 8;
        let checksums = (0..pages).map(|index| u32_at(&meta, checksums_at + index * 4)).collect();
        Ok(Run {
            number,
            path: path.to_owned(),
            file,
            filter,
            entries,
            bloom,
            fences,
            checksums,
            cache_file: cache_file_of(number),
        })
    }

    /// Whether the run may hold `fingerprint` (no false negatives).
    pub fn may_contain(&self, fingerprint: u64) -> bool {
        bloom_may_contain(&self.bloom, fingerprint)
    }

    /// Every value stored under `fingerprint`.
    pub fn lookup(&self, fingerprint: u64, cache: &PageCache) -> Result<Vec<u64>, RunError> {
        let mut values = Vec::new();
        if self.entries == 0 || !self.may_contain(fingerprint) {
            return Ok(values);
        }
        // The first page whose fence is at least the fingerprint; equal entries may start on
        // the page before it.
        let first = self.fences.partition_point(|fence| *fence < fingerprint).saturating_sub(1);
        for page_index in first..self.fences.len() {
            if self.fences[page_index] > fingerprint {
                break;
            }
            let page = self.page(page_index, cache)?;
            for entry in page.chunks_exact(ENTRY_BYTES) {
                let key = u64_at(entry, 0);
                if key == fingerprint {
                    values.push(u64_at(entry, 8));
                } else if key > fingerprint {
                    return Ok(values);
                }
            }
        }
        Ok(values)
    }

    /// The pages that may hold entries of `key`: from the last page whose fence is below it
    /// (equal entries may begin there) to the last whose fence is at most it.
    fn pages_of(&self, key: u64) -> std::ops::Range<usize> {
        let start = self.fences.partition_point(|fence| *fence < key).saturating_sub(1);
        let end = self.fences.partition_point(|fence| *fence <= key);
        start..end.max(start)
    }

    /// The pages [`Run::values_below`] reads first for `key` without a bound (the last two that
    /// may hold it) that the cache lacks, for a caller that reads many runs' pages at once.
    pub fn pages_to_read(&self, key: u64, cache: &PageCache) -> Vec<usize> {
        if !self.may_contain(key) {
            return Vec::new();
        }
        self.pages_of(key).rev().take(2).filter(|&index| cache.get(self.cache_key(index)).is_none()).collect()
    }

    /// Reads page `index` into the cache (checked).
    pub fn load_page(&self, index: usize, cache: &PageCache) -> Result<(), RunError> {
        self.page(index, cache).map(drop)
    }

    /// Largest first: at most `limit` of the values stored under `key` that are below `below`.
    /// Reads the last page holding such a value (found by bisection over the pages of `key`
    /// when there are many) and the pages before it as far as needed.
    pub fn values_below(&self, key: u64, below: u64, limit: usize, cache: &PageCache) -> Result<Vec<u64>, RunError> {
        let mut values = Vec::new();
        let pages = self.pages_of(key);
        if limit == 0 || pages.is_empty() || !self.may_contain(key) {
            return Ok(values);
        }
        let first_entry = |index: usize| -> Result<(u64, u64), RunError> {
            let page = self.page(index, cache)?;
            Ok((u64_at(&page, 0), u64_at(&page, 8)))
        };
        // The answer lies in [low, high): the last page whose first entry is below
        // (key, below), if any.
        let (mut low, mut high) = (pages.start, pages.end);
        if below == u64::MAX {
            low = high - 1;
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if first_entry(middle)? < (key, below) {
                low = middle;
            } else {
                high = middle;
            }
        }
        for index in (pages.start..=low).rev() {
            let page = self.page(index, cache)?;
            for entry in page.chunks_exact(ENTRY_BYTES).rev() {
                let (entry_key, value) = (u64_at(entry, 0), u64_at(entry, 8));
                if entry_key < key {
                    return Ok(values);
                }
                if entry_key == key && value < below {
                    values.push(value);
                    if values.len() == limit {
                        return Ok(values);
                    }
                }
            }
        }
        Ok(values)
    }

    fn cache_key(&self, index: usize) -> (u64, u64) {
        (self.cache_file, u64::try_from(index).expect("fits"))
    }

    fn page(&self, index: usize, cache: &PageCache) -> Result<Arc<[u8]>, RunError> {
        let key = self.cache_key(index);
        if let Some(page) = cache.get(key) {
            return Ok(page);
        }
        let mut page = vec![0_u8; PAGE_BYTES];
        let offset = u64::try_from(index * PAGE_BYTES).expect("fits");
        self.file.read_exact_at(&mut page, offset).map_err(io_error(&self.path, "read a page"))?;
        if crc32c::crc32c(&page) != self.checksums[index] {
            return Err(damaged(&self.path, format!("page {index} does not match its checksum")));
        }
        let page: Arc<[u8]> = Arc::from(page);
        cache.insert(key, page.clone());
        Ok(page)
    }

    /// Every entry in order, read in large sequential chunks (for merges and checks), each
    /// page checked.
    pub fn entries_in_order(&self) -> RunEntries<'_> {
        RunEntries { run: self, chunk: Vec::new(), at: 0, next_page: 0, remaining: self.entries, failed: false }
    }
}

/// The entries of a run, in order.
pub struct RunEntries<'a> {
    run: &'a Run,
    chunk: Vec<u8>,
    at: usize,
    next_page: usize,
    remaining: u64,
    failed: bool,
}

impl Iterator for RunEntries<'_> {
    type Item = Result<(u64, u64), RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        if self.at == self.chunk.len() {
            let pages = MERGE_READ_PAGES.min(self.run.fences.len() - self.next_page);
            self.chunk.resize(pages * PAGE_BYTES, 0);
            let offset = u64::try_from(self.next_page * PAGE_BYTES).expect("fits");
            if let Err(source) = self.run.file.read_exact_at(&mut self.chunk, offset) {
                self.failed = true;
                return Some(Err(RunError::Io { path: self.run.path.clone(), action: "read", source }));
            }
            for (index, page) in self.chunk.chunks_exact(PAGE_BYTES).enumerate() {
                if crc32c::crc32c(page) != self.run.checksums[self.next_page + index] {
                    self.failed = true;
                    let reason = format!("page {} does not match its checksum", self.next_page + index);
                    return Some(Err(damaged(&self.run.path, reason)));
                }
            }
            self.next_page += pages;
            self.at = 0;
        }
        let entry = (u64_at(&self.chunk, self.at), u64_at(&self.chunk, self.at + 8));
        self.at += ENTRY_BYTES;
        self.remaining -= 1;
        Some(Ok(entry))
    }
}

/// Writes the merge of `runs` (a k-way merge of their sorted entries; all written with one
/// [`Filter`]) as run `number` at `path`.
pub fn merge(runs: &[Arc<Run>], path: &Path, number: u64) -> Result<Run, RunError> {
    let filter = runs.first().map_or(Filter::PerEntry, |run| run.filter);
    assert!(runs.iter().all(|run| run.filter == filter), "runs of one index are merged");
    let count: u64 = runs.iter().map(|run| run.entries).sum();
    let mut sources: Vec<RunEntries<'_>> = runs.iter().map(|run| run.entries_in_order()).collect();
    let mut heads: Vec<Option<(u64, u64)>> = Vec::with_capacity(sources.len());
    for source in &mut sources {
        heads.push(source.next().transpose()?);
    }
    let mut error = None;
    let merged = std::iter::from_fn(|| {
        let (index, _) = heads
            .iter()
            .enumerate()
            .filter_map(|(index, head)| head.map(|head| (index, head)))
            .min_by_key(|(_, head)| *head)?;
        let entry = heads[index].take();
        match sources[index].next().transpose() {
            Ok(next) => heads[index] = next,
            Err(failure) => {
                error = Some(failure);
                return None;
            }
        }
        entry
    });
    let written = Run::write(path, number, filter, count, merged);
    if let Some(error) = error {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(entries: &mut [(u64, u64)]) {
        entries.sort_unstable();
    }

    #[test]
    fn lookups_find_every_entry_and_the_filter_is_tight() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<(u64, u64)> = (0..20_000_u64).map(|index| (mix(index), index)).collect();
        // Duplicated fingerprints, some spanning a page boundary.
        entries.extend((0..600_u64).map(|index| (42, 1_000_000 + index)));
        sorted(&mut entries);
        let count = u64::try_from(entries.len()).unwrap();
        let run =
            Run::write(&dir.path().join("run-1.idx"), 1, Filter::PerEntry, count, entries.iter().copied()).unwrap();
        let cache = PageCache::new(1 << 20);
        for index in (0..20_000_u64).step_by(97) {
            assert_eq!(run.lookup(mix(index), &cache).unwrap(), vec![index]);
        }
        assert_eq!(run.lookup(42, &cache).unwrap().len(), 600);
        let false_positives = (0..100_000_u64).filter(|index| run.may_contain(mix(index + 1_000_000_000))).count();
        assert!(false_positives < 1_500, "{false_positives} false positives in 100000");
        let reopened = Run::open(&run.path, 1, Filter::PerEntry).unwrap();
        let read: Vec<(u64, u64)> = reopened.entries_in_order().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, entries);
    }

    #[test]
    fn merges_keep_every_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<Arc<Run>> = (0..4_u64)
            .map(|number| {
                let mut entries: Vec<(u64, u64)> =
                    (0..3_000_u64).map(|index| (mix(index * 4 + number), number)).collect();
                sorted(&mut entries);
                let path = dir.path().join(format!("run-{number}.idx"));
                Arc::new(Run::write(&path, number, Filter::PerEntry, 3_000, entries.into_iter()).unwrap())
            })
            .collect();
        let merged = merge(&runs, &dir.path().join("run-9.idx"), 9).unwrap();
        assert_eq!(merged.entries(), 12_000);
        let read: Vec<(u64, u64)> = merged.entries_in_order().collect::<Result<_, _>>().unwrap();
        assert!(read.windows(2).all(|pair| pair[0] <= pair[1]));
        let cache = PageCache::new(0);
        assert_eq!(merged.lookup(mix(4 * 17 + 3), &cache).unwrap(), vec![3]);
    }

    #[test]
    fn values_below_match_a_scan_of_the_entries() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let mut random = rand::rngs::StdRng::seed_from_u64(7);
        // One key with many pages of values, a few with a page boundary inside, many small.
        let mut entries: Vec<(u64, u64)> = (0..5_000_u64).map(|value| (17, value * 3)).collect();
        for key in 0..400_u64 {
            let values = if key % 50 == 0 { 300 } else { random.random_range(0..6) };
            entries.extend((0..values).map(|_| (key * 2 + 1_000, random.random_range(0..1_000_000))));
        }
        sorted(&mut entries);
        entries.dedup();
        let count = u64::try_from(entries.len()).unwrap();
        let run = Run::write(&dir.path().join("run-1.idx"), 1, Filter::None, count, entries.iter().copied()).unwrap();
        assert_eq!(run.memory_bytes(), BLOCK_WORDS * 8 + run.fences.len() * 12, "no filter");
        let reopened = Run::open(&run.path, 1, Filter::None).unwrap();
        assert!(Run::open(&run.path, 1, Filter::PerEntry).is_err(), "the filter is part of the format");
        let cache = PageCache::new(1 << 16);
        for _ in 0..2_000 {
            let key = match random.random_range(0..3) {
                0 => 17,
                1 => random.random_range(990..1_900),
                _ => random.random_range(0..3_000),
            };
            let below = if random.random_bool(0.2) { u64::MAX } else { random.random_range(0..1_000_001) };
            let limit = random.random_range(1..400);
            let mut expected: Vec<u64> = entries
                .iter()
                .filter(|(entry_key, value)| *entry_key == key && *value < below)
                .map(|(_, value)| *value)
                .collect();
            expected.reverse();
            expected.truncate(limit);
            assert_eq!(reopened.values_below(key, below, limit, &cache).unwrap(), expected, "{key} {below} {limit}");
        }
        assert!(!reopened.pages_to_read(17, &PageCache::new(0)).is_empty());
    }

    #[test]
    fn damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(u64, u64)> = (0..1_000_u64).map(|index| (index, index)).collect();
        let path = dir.path().join("run-1.idx");
        Run::write(&path, 1, Filter::PerEntry, 1_000, entries.into_iter()).unwrap();
        let clean = std::fs::read(&path).unwrap();
        // A flipped byte in a page: found when the page is read.
        let mut bytes = clean.clone();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let run = Run::open(&path, 1, Filter::PerEntry).unwrap();
        assert!(matches!(run.lookup(6, &PageCache::new(0)), Err(RunError::Damaged { .. })));
        // A flipped byte in the filter or footer, or a truncation: found when opened.
        for at in [clean.len() - 1, clean.len() - 30, 4 * PAGE_BYTES + 3] {
            let mut bytes = clean.clone();
            bytes[at] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert!(Run::open(&path, 1, Filter::PerEntry).is_err(), "flip at {at}");
        }
        std::fs::write(&path, &clean[..clean.len() - 8]).unwrap();
        assert!(Run::open(&path, 1, Filter::PerEntry).is_err());
    }
}
