//! The vector index file: unit vectors, their ids, and the name of the model that made them, laid
//! out so that the vectors can be searched straight from a memory map.
//!
//! ```text
//! offset  size        field
//! 0       8           magic "FERROVEC"
//! 8       4           version, u32 = 1
//! 12      4           D, u32, the dimension (1..=65536)
//! 16      8           N, u64, the number of vectors
//! 24      4           model name length in bytes, u32 (at most 1024)
//! 28      4           reserved, zero
//! 32      8           id bytes, u64, the length of all ids together
//! 40      24          reserved, zero
//! 64      name        the model name, UTF-8
//!         pad         zeros up to the next multiple of 64
//! V       N * D * 4   vectors (N, D) f32, row-major, each of unit length (or zero)
//! V+N*D*4 (N+1) * 8   id offsets, u64: id i is bytes [off[i], off[i+1]) of the ids; off[0] = 0, off[N] = id bytes
//!         id bytes    the ids, UTF-8, one after another
//! ```
//!
//! All numbers are little-endian; the file ends exactly after the ids. Sizes follow from the
//! header alone, so the reader checks everything the header claims before it uses it: the magic,
//! the version, the dimension and name length against their limits, the reserved bytes, the sizes
//! with overflow checks against the file's length (truncated and overlong files are both errors),
//! the name and every id as UTF-8, and the offsets table (starts at 0, never decreases, ends at
//! the id bytes). It does not read the vectors: opening a 1.5 GB index costs what reading its ids
//! costs. The writer guarantees finite unit vectors; a damaged file's NaN only never ranks.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::cosine::normalize_into;
use crate::RetrieveError;

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"FERROVEC";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 64;
/// The largest dimension a file may have.
pub const MAX_DIM: usize = 1 << 16;
/// The longest model name, in bytes.
pub const MAX_MODEL_NAME: usize = 1024;
/// The vectors start at a multiple of this (a cache line), so that they can be read as f32 in place.
const ALIGN: usize = 64;

/// Where each section of a file starts, from the header's numbers.
#[derive(Clone, Copy, Debug)]
struct Layout {
    dim: usize,
    count: usize,
    vectors_at: usize,
    offsets_at: usize,
    ids_at: usize,
    end: usize,
}

impl Layout {
    /// The sections of a file with these numbers; `None` if a size overflows.
    fn new(dim: u64, count: u64, name_len: u64, id_bytes: u64) -> Option<Layout> {
        let vectors_at = (HEADER_LEN as u64 + name_len).checked_next_multiple_of(ALIGN as u64)?;
        let offsets_at = count.checked_mul(dim)?.checked_mul(4)?.checked_add(vectors_at)?;
        let ids_at = count.checked_add(1)?.checked_mul(8)?.checked_add(offsets_at)?;
        let end = ids_at.checked_add(id_bytes)?;
        let size = |v: u64| usize::try_from(v).ok();
        Some(Layout {
            dim: size(dim)?,
            count: size(count)?,
            vectors_at: size(vectors_at)?,
            offsets_at: size(offsets_at)?,
            ids_at: size(ids_at)?,
            end: size(end)?,
        })
    }
}

/// The bytes of an index: a read-only memory map, or an owned buffer kept 8-byte aligned so the
/// vectors can be viewed as f32 in place.
enum Storage {
    Mapped(Mmap),
    Owned { words: Vec<u64>, len: usize },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment needs.
            Storage::Owned { words, len } => unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, *len) },
        }
    }
}

/// An opened, validated index file.
pub struct VectorIndex {
    path: Option<PathBuf>,
    model: String,
    layout: Layout,
    storage: Storage,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("path", &self.path)
            .field("model", &self.model)
            .field("dim", &self.layout.dim)
            .field("len", &self.layout.count)
            .finish()
    }
}

impl VectorIndex {
    /// Memory-maps and validates the index at `path`; errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<VectorIndex, RetrieveError> {
        let path = path.as_ref();
        let io_error = |cause| RetrieveError::Io { path: path.to_owned(), cause };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some platforms; an empty buffer gives the same error.
            Storage::Owned { words: Vec::new(), len: 0 }
        } else {
            // SAFETY: the map is read-only and private to this struct. A file truncated or
            // rewritten by another process while mapped may fault or show new bytes; like the
            // model loaders, we take it that an index is not modified while in use.
            Storage::Mapped(unsafe { Mmap::map(&file) }.map_err(io_error)?)
        };
        VectorIndex::from_storage(storage, Some(path.to_owned()))
    }

    /// Validates an index held in memory (copied into an aligned buffer).
    pub fn from_bytes(bytes: &[u8]) -> Result<VectorIndex, RetrieveError> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        VectorIndex::from_storage(Storage::Owned { words, len: bytes.len() }, None)
    }

    fn from_storage(storage: Storage, path: Option<PathBuf>) -> Result<VectorIndex, RetrieveError> {
        let in_file = |cause: RetrieveError| match &path {
            Some(path) => RetrieveError::InFile { path: path.clone(), cause: Box::new(cause) },
            None => cause,
        };
        let (layout, model) = validate(storage.bytes()).map_err(in_file)?;
        Ok(VectorIndex { path, model, layout, storage })
    }

    /// The name of the model that made the vectors ("external" for vectors from elsewhere).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// D, the length of each vector.
    pub fn dim(&self) -> usize {
        self.layout.dim
    }

    /// N, the number of vectors.
    pub fn len(&self) -> usize {
        self.layout.count
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.layout.count == 0
    }

    /// The vectors (N, D), row-major, read in place from the file.
    pub fn vectors(&self) -> &[f32] {
        let bytes = &self.storage.bytes()[self.layout.vectors_at..self.layout.offsets_at];
        // SAFETY: validated at open: the range lies in the file and holds N * D * 4 bytes; its
        // start is a multiple of 64 from a page-aligned map or an 8-byte-aligned buffer, so it is
        // aligned for f32; any bit pattern is an f32; the machine is little-endian, as the file.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) }
    }

    /// Vector `i` (D).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors()[i * self.layout.dim..(i + 1) * self.layout.dim]
    }

    /// The id of vector `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn id(&self, i: usize) -> &str {
        assert!(i < self.layout.count, "id {i} of an index of {} vectors", self.layout.count);
        let bytes = self.storage.bytes();
        let (start, end) = (read_u64(bytes, self.layout.offsets_at + 8 * i), read_u64(bytes, self.layout.offsets_at + 8 * (i + 1)));
        let id = &bytes[self.layout.ids_at + start as usize..self.layout.ids_at + end as usize];
        // Validated as UTF-8 at open.
        std::str::from_utf8(id).unwrap_or_default()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks everything the header claims against the bytes (see the module doc); returns the
/// layout and the model name.
fn validate(bytes: &[u8]) -> Result<(Layout, String), RetrieveError> {
    if cfg!(target_endian = "big") {
        return Err(RetrieveError::BigEndian);
    }
    if bytes.len() < HEADER_LEN {
        // A short file that does not even start like an index is more likely something else.
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(magic_error(&bytes[..n]));
        }
        return Err(RetrieveError::TooShort { len: bytes.len() as u64, header: HEADER_LEN });
    }
    if bytes[..8] != MAGIC {
        return Err(magic_error(&bytes[..8]));
    }
    let version = read_u32(bytes, 8);
    if version != VERSION {
        return Err(RetrieveError::Version { found: version, supported: VERSION });
    }
    let dim = read_u32(bytes, 12) as u64;
    if dim == 0 || dim > MAX_DIM as u64 {
        return Err(RetrieveError::Dim { dim, max: MAX_DIM });
    }
    let (count, name_len, id_bytes) = (read_u64(bytes, 16), read_u32(bytes, 24) as u64, read_u64(bytes, 32));
    if name_len > MAX_MODEL_NAME as u64 {
        return Err(RetrieveError::ModelNameLength { len: name_len, max: MAX_MODEL_NAME });
    }
    if let Some(offset) = (28..32).chain(40..64).find(|&i| bytes[i] != 0) {
        return Err(RetrieveError::Reserved { offset });
    }
    let layout = Layout::new(dim, count, name_len, id_bytes).ok_or(RetrieveError::SizeOverflow { count, dim, id_bytes })?;
    if layout.end != bytes.len() {
        return Err(RetrieveError::Length { expected: layout.end as u64, actual: bytes.len() as u64, count, dim, id_bytes });
    }
    let name_end = HEADER_LEN + name_len as usize;
    let model = std::str::from_utf8(&bytes[HEADER_LEN..name_end]).map_err(|_| RetrieveError::ModelUtf8)?.to_owned();
    if let Some(offset) = (name_end..layout.vectors_at).find(|&i| bytes[i] != 0) {
        return Err(RetrieveError::Reserved { offset });
    }
    let ids = &bytes[layout.ids_at..];
    let mut previous = read_u64(bytes, layout.offsets_at);
    if previous != 0 {
        return Err(RetrieveError::IdOffset { index: 0, offset: previous, problem: "expected 0 (the first id starts the id bytes)".into() });
    }
    for i in 1..=count {
        let offset = read_u64(bytes, layout.offsets_at + 8 * i as usize);
        if offset < previous {
            let problem = format!("before offset {} ({previous}): offsets must not decrease", i - 1);
            return Err(RetrieveError::IdOffset { index: i, offset, problem });
        }
        if offset > id_bytes || (i == count && offset != id_bytes) {
            let problem = format!("but the ids are {id_bytes} bytes and the last offset must be their end");
            return Err(RetrieveError::IdOffset { index: i, offset, problem });
        }
        if std::str::from_utf8(&ids[previous as usize..offset as usize]).is_err() {
            return Err(RetrieveError::IdUtf8 { index: i - 1 });
        }
        previous = offset;
    }
    debug_assert!((bytes.as_ptr() as usize + layout.vectors_at).is_multiple_of(4));
    Ok((layout, model))
}

fn magic_error(found: &[u8]) -> RetrieveError {
    RetrieveError::Magic { found: String::from_utf8_lossy(found).into_owned(), expected: String::from_utf8_lossy(&MAGIC).into_owned() }
}

/// Writes an index to any seekable output, one vector at a time: the vectors stream to the output
/// as they come (normalized), the ids wait in memory, and [`IndexWriter::finish`] appends them and
/// writes the header's count. An unfinished output is not a valid index (its header says 0
/// vectors, its length says otherwise).
pub struct IndexWriter<W: Write + Seek> {
    out: W,
    dim: usize,
    model: String,
    count: u64,
    /// (N + 1) offsets into `ids`.
    id_offsets: Vec<u64>,
    ids: Vec<u8>,
    /// (D) the vector being written, normalized, and its bytes.
    unit: Vec<f32>,
    row_bytes: Vec<u8>,
}

impl<W: Write + Seek> IndexWriter<W> {
    /// Starts an index of `dim`-dimensional vectors made by `model` at the output's start.
    pub fn new(mut out: W, dim: usize, model: &str) -> Result<IndexWriter<W>, RetrieveError> {
        if dim == 0 || dim > MAX_DIM {
            return Err(RetrieveError::Shape(format!("vectors of dimension {dim} cannot be indexed (the dimension must be in 1..={MAX_DIM})")));
        }
        if model.len() > MAX_MODEL_NAME {
            return Err(RetrieveError::ModelNameTooLong { len: model.len(), max: MAX_MODEL_NAME });
        }
        out.seek(SeekFrom::Start(0)).map_err(RetrieveError::Write)?;
        let mut writer = IndexWriter {
            out,
            dim,
            model: model.to_owned(),
            count: 0,
            id_offsets: vec![0],
            ids: Vec::new(),
            unit: vec![0.0; dim],
            row_bytes: Vec::with_capacity(dim * 4),
        };
        let header = writer.header();
        writer.out.write_all(&header).map_err(RetrieveError::Write)?;
        Ok(writer)
    }

    /// The header, the model name and the padding, with the count so far.
    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN + self.model.len() + ALIGN);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(self.dim as u32).to_le_bytes());
        h.extend_from_slice(&self.count.to_le_bytes());
        h.extend_from_slice(&(self.model.len() as u32).to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        h.resize(HEADER_LEN, 0);
        h.extend_from_slice(self.model.as_bytes());
        h.resize(h.len().next_multiple_of(ALIGN), 0);
        h
    }

    /// Appends `vector` (D), stored normalized (a zero vector stays zero), with its `id`.
    ///
    /// # Errors
    /// If the vector is not of dimension D or holds a value that is not finite.
    pub fn push(&mut self, id: &str, vector: &[f32]) -> Result<(), RetrieveError> {
        if vector.len() != self.dim {
            return Err(RetrieveError::Vector {
                row: self.count,
                problem: format!("has {} values, the index has dimension {}", vector.len(), self.dim),
            });
        }
        if let Some(at) = vector.iter().position(|v| !v.is_finite()) {
            return Err(RetrieveError::Vector { row: self.count, problem: format!("value {at} is {}, not a finite number", vector[at]) });
        }
        normalize_into(vector, &mut self.unit);
        self.row_bytes.clear();
        self.row_bytes.extend(self.unit.iter().flat_map(|v| v.to_le_bytes()));
        self.out.write_all(&self.row_bytes).map_err(RetrieveError::Write)?;
        self.ids.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.ids.len() as u64);
        self.count += 1;
        Ok(())
    }

    /// The number of vectors pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no vector has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends the id table and the ids, writes the final header, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, RetrieveError> {
        let offsets: Vec<u8> = self.id_offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        self.out.write_all(&offsets).map_err(RetrieveError::Write)?;
        self.out.write_all(&self.ids).map_err(RetrieveError::Write)?;
        let header = self.header();
        self.out.seek(SeekFrom::Start(0)).map_err(RetrieveError::Write)?;
        self.out.write_all(&header).map_err(RetrieveError::Write)?;
        self.out.seek(SeekFrom::End(0)).map_err(RetrieveError::Write)?;
        self.out.flush().map_err(RetrieveError::Write)?;
        Ok(self.out)
    }
}

/// An index in memory: `entries` of (id, vector), each of dimension `dim` (for tests and tools).
pub fn index_bytes<'a>(dim: usize, model: &str, entries: impl IntoIterator<Item = (&'a str, &'a [f32])>) -> Result<Vec<u8>, RetrieveError> {
    let mut writer = IndexWriter::new(std::io::Cursor::new(Vec::new()), dim, model)?;
    for (id, vector) in entries {
        writer.push(id, vector)?;
    }
    Ok(writer.finish()?.into_inner())
}

impl VectorIndex {
    /// For each query of `queries` (Q, D), the `k` vectors of the index most similar to it by
    /// cosine, best first (see [`top_k`](crate::top_k) for the order of equal scores). The queries
    /// are normalized first (a copy; a zero query scores 0 against every vector).
    ///
    /// # Errors
    /// If `queries` is not a whole number of vectors of the index's dimension.
    pub fn search(
        &self,
        pool: &kernels::ThreadPool,
        level: kernels::Level,
        queries: &[f32],
        k: usize,
    ) -> Result<Vec<Vec<crate::Hit>>, RetrieveError> {
        let unit = crate::normalize_rows(queries, self.dim())?;
        crate::top_k(pool, level, self.vectors(), self.dim(), &unit, k)
    }
}
