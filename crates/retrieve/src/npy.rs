//! Matrices of vectors in NumPy's `.npy` format (what `numpy.save` writes), read row by row and
//! written whole: the common way to hand embeddings between programs.
//!
//! ```text
//! "\x93NUMPY" major minor   header length (u16 in version 1, u32 in versions 2 and 3)
//! {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }   padded with spaces and '\n'
//! N * D values, little-endian, row-major
//! ```
//!
//! Read: `<f4` (f32) and `<f8` (f64, converted to f32: NumPy's default float), C order, shape
//! (N, D) or (D,) for one vector; everything else is an error that says what was found. The
//! header is parsed as the small Python literal it is, and the data's length is checked against
//! the shape before a row is read. Written: `<f4`, version 1.

use std::io::{BufRead, Write};

/// The first bytes of every .npy file.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest header read (NumPy's own limit for untrusted files is 10,000 bytes).
const MAX_HEADER: usize = 1 << 16;

/// The element types read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    /// `<f4`
    F32,
    /// `<f8`, converted to f32 as read.
    F64,
}

impl NpyDtype {
    fn bytes(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 => 8,
        }
    }
}

/// An error in a .npy file: one line saying what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a .npy file, or one this reader does not take.
    #[error("{0}")]
    Format(String),
}

fn format_error(message: impl Into<String>) -> NpyError {
    NpyError::Format(message.into())
}

/// A .npy matrix being read row by row.
pub struct NpyReader<R: BufRead> {
    input: R,
    /// N, D
    rows: usize,
    cols: usize,
    dtype: NpyDtype,
    read: usize,
    raw: Vec<u8>,
}

impl<R: BufRead> NpyReader<R> {
    /// Reads and checks the header. `len` is the whole file's length, when known, so that a file
    /// whose data is shorter or longer than its shape is refused before any row is read.
    pub fn new(mut input: R, len: Option<u64>) -> Result<NpyReader<R>, NpyError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|e| short(e, "the 8-byte .npy preamble"))?;
        if &magic[..6] != NPY_MAGIC {
            return Err(format_error(format!("not a .npy file (it starts with {:?}, not \"\\x93NUMPY\")", String::from_utf8_lossy(&magic[..6]))));
        }
        let (major, minor) = (magic[6], magic[7]);
        let header_len = match major {
            1 => {
                let mut b = [0u8; 2];
                input.read_exact(&mut b).map_err(|e| short(e, "the header length"))?;
                u16::from_le_bytes(b) as usize
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                input.read_exact(&mut b).map_err(|e| short(e, "the header length"))?;
                u32::from_le_bytes(b) as usize
            }
            _ => return Err(format_error(format!(".npy format version {major}.{minor} is not known (1, 2 and 3 are)"))),
        };
        if header_len > MAX_HEADER {
            return Err(format_error(format!("the .npy header claims {header_len} bytes, over the limit of {MAX_HEADER}: a damaged file")));
        }
        let mut header = vec![0u8; header_len];
        input.read_exact(&mut header).map_err(|e| short(e, "the header"))?;
        let header = String::from_utf8(header).map_err(|_| format_error("the .npy header is not text"))?;
        let (dtype, rows, cols) = parse_header(&header)?;
        let preamble = if major == 1 { 10 } else { 12 } + header_len as u64;
        let data = (rows as u64).checked_mul(cols as u64).and_then(|v| v.checked_mul(dtype.bytes() as u64));
        let data = data.ok_or_else(|| format_error(format!("shape ({rows}, {cols}) is too large")))?;
        if let Some(len) = len {
            if len.checked_sub(preamble) != Some(data) {
                let got = len.saturating_sub(preamble);
                return Err(format_error(format!("shape ({rows}, {cols}) needs {data} bytes of data, but the file has {got}")));
            }
        }
        Ok(NpyReader { input, rows, cols, dtype, read: 0, raw: vec![0; cols * dtype.bytes()] })
    }

    /// N, the number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// D, the length of a row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type of the file.
    pub fn dtype(&self) -> NpyDtype {
        self.dtype
    }

    /// The next row into `out` (D), or `false` after the last.
    pub fn next_row(&mut self, out: &mut [f32]) -> Result<bool, NpyError> {
        if self.read == self.rows {
            return Ok(false);
        }
        debug_assert_eq!(out.len(), self.cols);
        self.input.read_exact(&mut self.raw).map_err(|e| short(e, &format!("row {} of {}", self.read, self.rows)))?;
        match self.dtype {
            NpyDtype::F32 => {
                for (o, b) in out.iter_mut().zip(self.raw.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            NpyDtype::F64 => {
                for (o, b) in out.iter_mut().zip(self.raw.chunks_exact(8)) {
                    *o = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32;
                }
            }
        }
        self.read += 1;
        Ok(true)
    }

    /// Every remaining row: (rows, D) row-major.
    pub fn read_all(&mut self) -> Result<Vec<f32>, NpyError> {
        let mut all = Vec::with_capacity((self.rows - self.read).saturating_mul(self.cols).min(1 << 28));
        let mut row = vec![0f32; self.cols];
        while self.next_row(&mut row)? {
            all.extend_from_slice(&row);
        }
        Ok(all)
    }
}

fn short(e: std::io::Error, what: &str) -> NpyError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        format_error(format!("the .npy file ends inside {what}: truncated"))
    } else {
        NpyError::Io(e)
    }
}

/// The dtype and shape of a header `{'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }`.
fn parse_header(header: &str) -> Result<(NpyDtype, usize, usize), NpyError> {
    let body = header.trim_end_matches(['\n', ' ', '\0']).trim();
    let body =
        body.strip_prefix('{').and_then(|b| b.strip_suffix('}')).ok_or_else(|| format_error(format!("the .npy header {body:?} is not a dict")))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| format_error(format!("the .npy header has an unreadable key at {rest:?}")))?;
        let after =
            after.trim_start().strip_prefix(':').ok_or_else(|| format_error(format!("the .npy header lacks ':' after {key:?}")))?.trim_start();
        let (value, after) = match key {
            "descr" => quoted(after).map(|(v, a)| (v.to_owned(), a)),
            "fortran_order" => ["True", "False"].iter().find(|w| after.starts_with(**w)).map(|w| (w.to_string(), &after[w.len()..])),
            "shape" => after.find(')').filter(|_| after.starts_with('(')).map(|end| (after[1..end].to_owned(), &after[end + 1..])),
            _ => return Err(format_error(format!("the .npy header has an unknown key {key:?}"))),
        }
        .ok_or_else(|| format_error(format!("the .npy header's {key:?} has an unreadable value")))?;
        match key {
            "descr" => descr = Some(value),
            "fortran_order" => fortran = Some(value == "True"),
            _ => shape = Some(value),
        }
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    let descr = descr.ok_or_else(|| format_error("the .npy header has no 'descr'"))?;
    let dtype = match descr.as_str() {
        "<f4" => NpyDtype::F32,
        "<f8" => NpyDtype::F64,
        other => return Err(format_error(format!("the .npy array holds {other:?}; only float32 ('<f4') and float64 ('<f8') vectors are read"))),
    };
    if fortran.ok_or_else(|| format_error("the .npy header has no 'fortran_order'"))? {
        return Err(format_error("the .npy array is in Fortran (column-major) order; save it in C order (numpy.ascontiguousarray)"));
    }
    let shape = shape.ok_or_else(|| format_error("the .npy header has no 'shape'"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format_error(format!("the .npy shape ({shape}) is not a tuple of sizes"))))
        .collect::<Result<_, _>>()?;
    match dims[..] {
        [rows, cols] => Ok((dtype, rows, cols)),
        [cols] => Ok((dtype, 1, cols)),
        _ => Err(format_error(format!("the .npy array has shape ({shape}); expected a matrix of vectors (N, D) or one vector (D,)"))),
    }
}

/// A Python string literal at the start of `s` ('...' or "..."), and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(quote)? + 1;
    Some((&s[1..end], &s[end + 1..]))
}

/// Writes the .npy header of an f32 matrix (rows, cols); the caller writes rows * cols values
/// after it (see [`write_npy_row`]).
pub fn write_npy_header(out: &mut impl Write, rows: usize, cols: usize) -> std::io::Result<()> {
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is a multiple of 64, as NumPy pads it.
    let total = (10 + dict.len() + 1).next_multiple_of(64);
    dict.push_str(&" ".repeat(total - 10 - dict.len() - 1));
    dict.push('\n');
    out.write_all(NPY_MAGIC)?;
    out.write_all(&[1, 0])?;
    // A dict for any shape of two 20-digit numbers is far below 65,535 bytes.
    out.write_all(&(dict.len() as u16).to_le_bytes())?;
    out.write_all(dict.as_bytes())
}

/// Writes one row of an f32 matrix, little-endian.
pub fn write_npy_row(out: &mut impl Write, row: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(rows: &[Vec<f32>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_npy_header(&mut out, rows.len(), rows.first().map_or(0, Vec::len)).unwrap();
        for row in rows {
            write_npy_row(&mut out, row).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_and_numpy_padding() {
        let rows = vec![vec![1.0f32, -2.5, 3.25], vec![0.0, f32::MIN_POSITIVE, 1e30]];
        let bytes = write(&rows);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes[9 + header_len], b'\n');
        let mut r = NpyReader::new(&bytes[..], Some(bytes.len() as u64)).unwrap();
        assert_eq!((r.rows(), r.cols(), r.dtype()), (2, 3, NpyDtype::F32));
        assert_eq!(r.read_all().unwrap(), rows.concat());
    }

    #[test]
    fn numpy_headers_parse() {
        // As numpy.save writes them (float64, one vector, version 2's u32 length).
        for (header, want) in [
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", (NpyDtype::F64, 3, 2)),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", (NpyDtype::F32, 1, 5)),
            ("{\"shape\": (0, 4), \"fortran_order\": False, \"descr\": \"<f4\"}", (NpyDtype::F32, 0, 4)),
        ] {
            assert_eq!(parse_header(&format!("{header}   \n")).unwrap(), want, "{header}");
        }
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        let dict = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }\n";
        v2.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        v2.extend_from_slice(dict);
        v2.extend(1.5f64.to_le_bytes().into_iter().chain((-2.0f64).to_le_bytes()));
        let mut r = NpyReader::new(&v2[..], Some(v2.len() as u64)).unwrap();
        assert_eq!(r.read_all().unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn malformed_files_are_errors_that_say_why() {
        let good = write(&[vec![1.0, 2.0]]);
        let err = |bytes: &[u8]| match NpyReader::new(bytes, Some(bytes.len() as u64)) {
            Err(e) => e.to_string(),
            Ok(mut r) => r.read_all().err().map(|e| e.to_string()).unwrap_or_else(|| "parsed".into()),
        };
        assert!(err(b"hello world, not npy").contains("not a .npy file"));
        assert!(err(&good[..good.len() - 1]).contains("needs 8 bytes of data, but the file has 7"));
        assert!(err(&[&good[..], &[0u8]].concat()).contains("the file has 9"));
        assert!(err(&good[..5]).contains("truncated"));
        let with_header = |dict: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b
        };
        assert!(err(&with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (0, 2), }")).contains("only float32"));
        assert!(err(&with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (0, 2), }")).contains("Fortran"));
        assert!(err(&with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }")).contains("expected a matrix"));
        assert!(err(&with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 2), }")).contains("not a tuple of sizes"));
        assert!(err(&with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }"))
            .contains("too large"));
        assert!(err(&with_header("[1, 2]")).contains("not a dict"));
        assert!(err(b"\x93NUMPY\x07\x00").contains("version 7.0"));
    }
}
