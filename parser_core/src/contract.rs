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
    pub field_table: FieldTable,
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

    /// The index of a field id packed by [`pack`]: one multiply and one probe of [`FieldTable`].
    #[inline]
    pub fn field_packed(&self, packed: u64) -> Option<usize> {
        let slot = self.field_table.slot(packed);
        // An empty token packs to 0, the mark of an empty slot: it is no field.
        (packed != 0 && self.field_table.keys[slot] == packed)
            .then_some(self.field_table.fields[slot] as usize)
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

/// A perfect hash table of the packed field ids: a multiplier under which no two ids share one
/// of the slots, so a lookup is one probe. (A packed id is never 0, so 0 marks an empty slot.)
pub struct FieldTable {
    multiplier: u64,
    keys: Vec<u64>,
    fields: Vec<u8>,
}

/// log2 of the slots: 1,024 slots for a few dozen fields leave most multipliers collision-free.
const SLOT_BITS: u32 = 10;

impl FieldTable {
    /// The table for `fields`, or `None` if no multiplier tried separates them all.
    pub fn new(fields: &[Field]) -> Option<FieldTable> {
        let mut state: u64 = 0;
        for _ in 0..10_000 {
            // splitmix64: a well-spread odd multiplier per attempt.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let multiplier = (z ^ (z >> 31)) | 1;
            let mut table =
                FieldTable { multiplier, keys: vec![0; 1 << SLOT_BITS], fields: vec![0; 1 << SLOT_BITS] };
            let placed = fields.iter().enumerate().all(|(index, field)| {
                let slot = table.slot(field.packed);
                let free = table.keys[slot] == 0;
                table.keys[slot] = field.packed;
                table.fields[slot] = index as u8;
                free
            });
            if placed {
                return Some(table);
            }
        }
        None
    }

    #[inline]
    fn slot(&self, packed: u64) -> usize {
        (packed.wrapping_mul(self.multiplier) >> (64 - SLOT_BITS)) as usize
    }
}
