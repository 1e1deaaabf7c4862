//! The element types a safetensors header may name ([`Dtype`]).

use std::fmt;

/// An element type of the safetensors format, as spelt in the header's `dtype` field.
///
/// Every dtype of the format is known, so a file holding, say, an `I64` buffer next to its
/// weights (as `embeddings.position_ids` in BERT files) opens; only [`Dtype::F32`], [`Dtype::F16`]
/// and [`Dtype::BF16`] can be read as f32 ([`crate::SafeTensors::to_f32_vec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// Boolean, one byte.
    Bool,
    /// 4-bit float (e2m1), two per byte.
    F4,
    /// 6-bit float (e2m3), four per three bytes.
    F6E2M3,
    /// 6-bit float (e3m2), four per three bytes.
    F6E3M2,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
    /// 8-bit float (e5m2).
    F8E5M2,
    /// 8-bit float (e4m3).
    F8E4M3,
    /// 8-bit exponent-only scale (e8m0).
    F8E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16: the top half of an f32.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// Complex number of two f32.
    C64,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

/// Every dtype with its header spelling and size in bits.
const ALL: [(Dtype, &str, u64); 20] = [
    (Dtype::Bool, "BOOL", 8),
    (Dtype::F4, "F4", 4),
    (Dtype::F6E2M3, "F6_E2M3", 6),
    (Dtype::F6E3M2, "F6_E3M2", 6),
    (Dtype::U8, "U8", 8),
    (Dtype::I8, "I8", 8),
    (Dtype::F8E5M2, "F8_E5M2", 8),
    (Dtype::F8E4M3, "F8_E4M3", 8),
    (Dtype::F8E8M0, "F8_E8M0", 8),
    (Dtype::I16, "I16", 16),
    (Dtype::U16, "U16", 16),
    (Dtype::F16, "F16", 16),
    (Dtype::BF16, "BF16", 16),
    (Dtype::I32, "I32", 32),
    (Dtype::U32, "U32", 32),
    (Dtype::F32, "F32", 32),
    (Dtype::C64, "C64", 64),
    (Dtype::F64, "F64", 64),
    (Dtype::I64, "I64", 64),
    (Dtype::U64, "U64", 64),
];

impl Dtype {
    /// The dtype spelt `name` in a header (`"F32"`, `"BF16"`, `"F8_E4M3"`...), if the format has it.
    pub fn from_name(name: &str) -> Option<Dtype> {
        ALL.iter().find(|(_, n, _)| *n == name).map(|(d, _, _)| *d)
    }

    /// The header spelling.
    pub fn name(self) -> &'static str {
        ALL.iter().find(|(d, _, _)| *d == self).map_or("?", |(_, n, _)| n)
    }

    /// Size of one element in bits (4 and 6 for the packed small floats).
    pub fn bits(self) -> u64 {
        ALL.iter().find(|(d, _, _)| *d == self).map_or(8, |(_, _, b)| *b)
    }

    /// Whether [`crate::SafeTensors::to_f32_vec`] can convert this dtype.
    pub fn reads_as_f32(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }

    /// The header spellings of every dtype, for error messages.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        ALL.iter().map(|(_, n, _)| *n)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sizes_are_the_formats() {
        for (dtype, name, bits) in ALL {
            assert_eq!(Dtype::from_name(name), Some(dtype));
            assert_eq!(dtype.name(), name);
            assert_eq!(dtype.bits(), bits);
        }
        assert_eq!(Dtype::from_name("f32"), None, "names are case-sensitive, as in the format");
        assert_eq!(Dtype::from_name("Q4_0"), None);
    }
}
