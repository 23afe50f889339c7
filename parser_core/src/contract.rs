//! The raw format as the scanner needs it. Python's `taobao_assets.source.format` is where the
//! contract is written down; the module builds a [`Contract`] from it once per process, so the
//! separators, columns, field ids and character classes have one source.

/// The two file kinds, in the order of [`Contract::kinds`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Sample = 0,
    Common = 1,
}

/// One field id of the feature lists.
pub struct Field {
    pub id: Vec<u8>,
    /// `id` packed by [`pack`], for a lookup without a byte comparison.
    pub packed: u64,
    pub name: String,
    pub kind: Kind,
    /// A 14-day history field: a list of entries rather than one value.
    pub history: bool,
}

pub struct Contract {
    pub column_sep: u8,
    pub entry_sep: u8,
    pub field_sep: u8,
    pub value_sep: u8,
    /// File-kind names (`sample_skeleton`, `common_features`), by [`Kind`].
    pub kinds: [String; 2],
    /// Column names of each kind, by [`Kind`].
    pub columns: [Vec<String>; 2],
    pub fields: Vec<Field>,
    /// The three feature-list separators as a lookup table.
    pub separator: [bool; 256],
    pub key_chars: [bool; 256],
    pub value_chars: [bool; 256],
    pub max_id: u64,
}

impl Contract {
    /// The index in [`Contract::fields`] of a field id token, if it is a known field.
    pub fn field(&self, token: &[u8]) -> Option<usize> {
        self.field_packed(pack(token)?)
    }

    /// The index of a field id packed by [`pack`].
    pub fn field_packed(&self, packed: u64) -> Option<usize> {
        self.fields.iter().position(|field| field.packed == packed)
    }

    pub fn is_separator(&self, byte: u8) -> bool {
        self.separator[byte as usize]
    }
}

/// A set of bytes as a lookup table.
pub fn byte_class(bytes: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    for &byte in bytes {
        class[byte as usize] = true;
    }
    class
}

/// A token of at most 7 bytes as one number (its length in the top byte); `None` if longer. Field
/// ids are short (`"205"`, `"109_14"`), so a longer token is not a field id.
pub fn pack(token: &[u8]) -> Option<u64> {
    if token.len() > 7 {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..token.len()].copy_from_slice(token);
    bytes[7] = token.len() as u8;
    Some(u64::from_le_bytes(bytes))
}
