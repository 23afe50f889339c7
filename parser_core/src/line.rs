//! One raw line to a typed line or a rejection, with exactly the reference parser's meaning.
//!
//! The happy path is one pass over the feature list that checks and converts as it goes. Any
//! doubt sends the line to [`Scanner::explain`], which repeats the checks one at a time in the
//! reference's order (separators, entry count, feature ids, values, field ids) so that a
//! rejection has the same reason and message whichever of its faults the fast pass met first.

use crate::contract::{Contract, Kind};
use crate::text::{bytes_repr, utf8_error};

/// The most columns a file kind has (sample_skeleton's six).
pub const MAX_COLUMNS: usize = 6;

/// Why a line was rejected; [`Reason::code`] is the code of the Python `Reason` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    WrongColumnCount,
    NumFeaturesMismatch,
    BadSeparator,
    NonNumericId,
    NegativeId,
    BadCommonFeatureIndex,
    BadLabel,
    ConversionWithoutClick,
    UnknownFieldId,
    FieldInWrongFile,
    BadValue,
    BadEncoding,
    TruncatedLastLine,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::WrongColumnCount,
        Reason::NumFeaturesMismatch,
        Reason::BadSeparator,
        Reason::NonNumericId,
        Reason::NegativeId,
        Reason::BadCommonFeatureIndex,
        Reason::BadLabel,
        Reason::ConversionWithoutClick,
        Reason::UnknownFieldId,
        Reason::FieldInWrongFile,
        Reason::BadValue,
        Reason::BadEncoding,
        Reason::TruncatedLastLine,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::WrongColumnCount => "wrong_column_count",
            Reason::NumFeaturesMismatch => "num_features_mismatch",
            Reason::BadSeparator => "bad_separator",
            Reason::NonNumericId => "non_numeric_id",
            Reason::NegativeId => "negative_id",
            Reason::BadCommonFeatureIndex => "bad_common_feature_index",
            Reason::BadLabel => "bad_label",
            Reason::ConversionWithoutClick => "conversion_without_click",
            Reason::UnknownFieldId => "unknown_field_id",
            Reason::FieldInWrongFile => "field_in_wrong_file",
            Reason::BadValue => "bad_value",
            Reason::BadEncoding => "bad_encoding",
            Reason::TruncatedLastLine => "truncated_last_line",
        }
    }

    /// The line's structure is broken: on a final line without a newline, a cut copy is the
    /// likely cause.
    fn structural(self) -> bool {
        matches!(self, Reason::WrongColumnCount | Reason::NumFeaturesMismatch | Reason::BadSeparator)
    }
}

#[derive(Debug)]
pub struct Reject {
    pub reason: Reason,
    pub message: String,
}

fn reject(reason: Reason, message: String) -> Reject {
    Reject { reason, message }
}

/// One entry of a feature list: the field (an index into [`Contract::fields`]), id and value.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub field: usize,
    pub id: i64,
    pub value: f64,
}

/// A good line; its entries are in [`Scanner::entries`] until the next line is parsed.
/// `sample_id`, `click` and `conversion` are 0 on a common-features line.
#[derive(Debug)]
pub struct Line<'a> {
    pub sample_id: i64,
    pub click: i32,
    pub conversion: i32,
    pub key: &'a [u8],
    pub num_features: i64,
}

/// `num_features` of a sample line as written: any run of digits (the reference checks it only
/// against the entry count, so a count beyond 64 bits is a mismatch, not a bad id).
#[derive(Clone, Copy)]
struct Count<'a> {
    digits: &'a [u8],
    value: Option<u64>,
}

impl<'a> Count<'a> {
    fn new(digits: &'a [u8]) -> Self {
        let significant = &digits[digits.iter().position(|&d| d != b'0').unwrap_or(digits.len())..];
        Count { digits: significant, value: decimal(significant) }
    }

    fn equals(self, entries: usize) -> bool {
        self.value == Some(entries as u64)
    }

    /// `int(token)` as Python prints it.
    fn text(self) -> String {
        if self.digits.is_empty() {
            "0".to_string()
        } else {
            String::from_utf8_lossy(self.digits).into_owned()
        }
    }
}

/// The value of a run of ASCII digits, if it fits in 64 bits.
fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn is_digits(token: &[u8]) -> bool {
    !token.is_empty() && token.iter().all(u8::is_ascii_digit)
}

pub struct Scanner<'c> {
    contract: &'c Contract,
    pub entries: Vec<Entry>,
}

impl<'c> Scanner<'c> {
    pub fn new(contract: &'c Contract) -> Self {
        Scanner { contract, entries: Vec::new() }
    }

    /// Parse one raw line of `kind`, terminator included as read.
    pub fn parse<'a>(&mut self, kind: Kind, raw: &'a [u8]) -> Result<Line<'a>, Reject> {
        self.parse_body(kind, raw).map_err(|rejection| {
            let trimmed = &raw[..raw.len() - raw.iter().rev().take_while(|&&b| b == b'\r').count()];
            let cut = rejection.reason.structural() || trimmed.last() == Some(&self.contract.value_sep);
            if cut && raw.last() != Some(&b'\n') {
                reject(
                    Reason::TruncatedLastLine,
                    format!("final line has no newline and is incomplete: {}", rejection.message),
                )
            } else {
                rejection
            }
        })
    }

    fn parse_body<'a>(&mut self, kind: Kind, raw: &'a [u8]) -> Result<Line<'a>, Reject> {
        let body = body(raw)?;
        let columns = self.columns(kind, body)?;
        let feature_list = columns[self.contract.columns[kind as usize].len() - 1];
        self.parse_columns(kind, columns).map_err(|rejection| {
            // The feature list is cut off at the last column separator expected, so a separator
            // inside it is found only now; a wrong column count comes before any other fault.
            if memchr::memchr(self.contract.column_sep, feature_list).is_some() {
                self.wrong_column_count(kind, body)
            } else {
                rejection
            }
        })
    }

    /// The columns of a line: the body cut at the first column separators, the last column
    /// taking the rest.
    fn columns<'a>(&self, kind: Kind, body: &'a [u8]) -> Result<[&'a [u8]; MAX_COLUMNS], Reject> {
        let mut columns: [&[u8]; MAX_COLUMNS] = [&[]; MAX_COLUMNS];
        let last = self.contract.columns[kind as usize].len() - 1;
        let mut rest = body;
        for column in columns.iter_mut().take(last) {
            let Some(at) = memchr::memchr(self.contract.column_sep, rest) else {
                return Err(self.wrong_column_count(kind, body));
            };
            *column = &rest[..at];
            rest = &rest[at + 1..];
        }
        columns[last] = rest;
        Ok(columns)
    }

    fn wrong_column_count(&self, kind: Kind, body: &[u8]) -> Reject {
        let names = &self.contract.columns[kind as usize];
        let found = body.iter().filter(|&&b| b == self.contract.column_sep).count() + 1;
        reject(
            Reason::WrongColumnCount,
            format!("expected {} comma-separated columns ({}), found {found}", names.len(), names.join(", ")),
        )
    }

    fn parse_columns<'a>(
        &mut self,
        kind: Kind,
        columns: [&'a [u8]; MAX_COLUMNS],
    ) -> Result<Line<'a>, Reject> {
        match kind {
            Kind::Sample => {
                let sample_id = self.non_negative_int(columns[0], "column sample_id")?;
                let click = label(columns[1], "click")?;
                let conversion = label(columns[2], "conversion")?;
                let key = self.key(columns[3])?;
                if !is_digits(columns[4]) {
                    self.non_negative_int(columns[4], "column num_features")?;
                }
                let count = Count::new(columns[4]);
                self.entries(kind, columns[5], count)?;
                if conversion > click {
                    return Err(reject(
                        Reason::ConversionWithoutClick,
                        "conversion is 1 but click is 0 (a known quirk of the real files; ESMM \
                         preprocessing drops it)"
                            .to_string(),
                    ));
                }
                let num_features = self.entries.len() as i64;
                Ok(Line { sample_id, click, conversion, key, num_features })
            }
            Kind::Common => {
                let key = self.key(columns[0])?;
                let num_features = self.non_negative_int(columns[1], "column num_features")?;
                self.entries(kind, columns[2], Count::new(columns[1]))?;
                Ok(Line { sample_id: 0, click: 0, conversion: 0, key, num_features })
            }
        }
    }

    fn non_negative_int(&self, token: &[u8], what: &str) -> Result<i64, Reject> {
        if is_digits(token) {
            return match decimal(token) {
                Some(number) if number <= self.contract.max_id => Ok(number as i64),
                _ => Err(reject(
                    Reason::NonNumericId,
                    format!("{what} does not fit in 64 bits: {}", bytes_repr(token)),
                )),
            };
        }
        if token.first() == Some(&b'-') && is_digits(&token[1..]) {
            return Err(reject(Reason::NegativeId, format!("{what} is negative: {}", bytes_repr(token))));
        }
        Err(reject(
            Reason::NonNumericId,
            format!("{what} is not a non-negative integer: {}", bytes_repr(token)),
        ))
    }

    fn key<'a>(&self, token: &'a [u8]) -> Result<&'a [u8], Reject> {
        if token.is_empty() || !token.iter().all(|&b| self.contract.key_chars[b as usize]) {
            return Err(reject(
                Reason::BadCommonFeatureIndex,
                format!(
                    "column common_feature_index must be a non-empty word ([0-9A-Za-z_-]), found {}",
                    bytes_repr(token)
                ),
            ));
        }
        Ok(token)
    }

    /// A strict decimal float: only the value characters, finite.
    #[inline]
    fn value(&self, token: &[u8]) -> Option<f64> {
        if token.is_empty() || !token.iter().all(|&b| self.contract.value_chars[b as usize]) {
            return None;
        }
        // The value characters are ASCII, so the token is valid UTF-8.
        let value: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
        value.is_finite().then_some(value)
    }

    /// Check and convert a feature list into [`Scanner::entries`] in one pass.
    fn entries(&mut self, kind: Kind, list: &[u8], count: Count) -> Result<(), Reject> {
        self.entries.clear();
        if list.is_empty() {
            if count.equals(0) {
                return Ok(());
            }
            return Err(reject(
                Reason::NumFeaturesMismatch,
                format!("num_features is {} but feature_list is empty", count.text()),
            ));
        }
        let c = self.contract;
        let n = list.len();
        let mut i = 0;
        loop {
            // The field id, packed as it is read (see contract::pack).
            let start = i;
            let mut packed: u64 = 0;
            while i < n && !c.separator[list[i] as usize] {
                packed |= u64::from(list[i]) << (8 * ((i - start) & 7));
                i += 1;
            }
            if i == n || list[i] != c.field_sep || i - start > 7 {
                break;
            }
            packed |= ((i - start) as u64) << 56;
            i += 1;
            let start = i;
            let mut id: u64 = 0;
            while i < n && list[i].is_ascii_digit() {
                id = id.wrapping_mul(10).wrapping_add(u64::from(list[i] - b'0'));
                i += 1;
            }
            // 19 digits cannot overflow; a longer id is exact only with its leading zeros dropped.
            if i - start > 19 {
                id = Count::new(&list[start..i]).value.unwrap_or(u64::MAX);
            }
            if i == start || i == n || list[i] != c.value_sep || id > c.max_id {
                break;
            }
            let id = id as i64;
            i += 1;
            // The value, converted as it is read when it is a plain decimal (see PlainDecimal).
            let start = i;
            let mut plain = PlainDecimal::default();
            while i < n && !c.separator[list[i] as usize] {
                plain.push(list[i]);
                i += 1;
            }
            if i < n && list[i] != c.entry_sep {
                break;
            }
            let Some(value) = plain.value().or_else(|| self.value(&list[start..i])) else {
                break;
            };
            let Some(field) = c.field_packed(packed).filter(|&f| c.fields[f].kind == kind) else {
                break;
            };
            self.entries.push(Entry { field, id, value });
            if i == n {
                if !count.equals(self.entries.len()) {
                    break;
                }
                return Ok(());
            }
            i += 1;
        }
        Err(self.explain(kind, list, count))
    }

    /// The rejection of a feature list the fast pass refused, found check by check in the
    /// reference's order.
    fn explain(&self, kind: Kind, list: &[u8], count: Count) -> Reject {
        let c = self.contract;
        let mut expected = c.field_sep;
        for &byte in list.iter().filter(|&&b| c.is_separator(b)) {
            if byte != expected {
                return reject(Reason::BadSeparator, self.explain_separators(list));
            }
            expected = if byte == c.field_sep {
                c.value_sep
            } else if byte == c.value_sep {
                c.entry_sep
            } else {
                c.field_sep
            };
        }
        if expected != c.entry_sep {
            return reject(Reason::BadSeparator, self.explain_separators(list));
        }
        let entries: Vec<[&[u8]; 3]> = list
            .split(|&b| b == c.entry_sep)
            .map(|entry| {
                let mut parts = entry.split(|&b| b == c.field_sep || b == c.value_sep);
                [(); 3].map(|_| parts.next().unwrap_or_default())
            })
            .collect();
        if !count.equals(entries.len()) {
            return reject(
                Reason::NumFeaturesMismatch,
                format!("num_features is {} but feature_list has {} entries", count.text(), entries.len()),
            );
        }
        for (index, [field, id, _]) in entries.iter().enumerate() {
            let what = format!("entry {} (field {}): feature id", index + 1, bytes_repr(field));
            if let Err(rejection) = self.non_negative_int(id, &what) {
                return rejection;
            }
        }
        for (index, [field, _, value]) in entries.iter().enumerate() {
            if self.value(value).is_none() {
                return reject(
                    Reason::BadValue,
                    format!(
                        "entry {} (field {}): value {} is not a float",
                        index + 1,
                        bytes_repr(field),
                        bytes_repr(value)
                    ),
                );
            }
        }
        for (index, [token, _, _]) in entries.iter().enumerate() {
            match c.field(token).map(|f| &c.fields[f]) {
                None => {
                    return reject(
                        Reason::UnknownFieldId,
                        format!("entry {}: unknown field id {}", index + 1, bytes_repr(token)),
                    )
                }
                Some(spec) if spec.kind != kind => {
                    return reject(
                        Reason::FieldInWrongFile,
                        format!(
                            "entry {}: field {} ({}) belongs in {}, not {}",
                            index + 1,
                            String::from_utf8_lossy(&spec.id),
                            spec.name,
                            c.kinds[spec.kind as usize],
                            c.kinds[kind as usize]
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        unreachable!("the fast pass refused a feature list that passes every check")
    }

    /// Name the first entry whose separators are wrong.
    fn explain_separators(&self, list: &[u8]) -> String {
        let c = self.contract;
        for (index, entry) in list.split(|&b| b == c.entry_sep).enumerate() {
            let field_at = entry.iter().position(|&b| b == c.field_sep);
            let value_at = entry.iter().position(|&b| b == c.value_sep);
            let fields = entry.iter().filter(|&&b| b == c.field_sep).count();
            let values = entry.iter().filter(|&&b| b == c.value_sep).count();
            if fields != 1 || values != 1 || field_at > value_at {
                let field_id = &entry[..field_at.unwrap_or(entry.len())];
                return format!(
                    "entry {} (field {}) is not field_id\\x02feature_id\\x03value: {}",
                    index + 1,
                    bytes_repr(&field_id[..field_id.len().min(20)]),
                    bytes_repr(&entry[..entry.len().min(60)])
                );
            }
        }
        "the feature list's separators are out of order".to_string()
    }
}

/// The line without its terminator (`\n`, then one `\r`), if it is valid UTF-8.
fn body(raw: &[u8]) -> Result<&[u8], Reject> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if !body.is_ascii() {
        if let Some((start, why)) = utf8_error(body) {
            return Err(reject(
                Reason::BadEncoding,
                format!("byte {start} of the line is not ASCII/UTF-8 ({why})"),
            ));
        }
    }
    Ok(body)
}

fn label(token: &[u8], column: &str) -> Result<i32, Reject> {
    match token {
        b"0" => Ok(0),
        b"1" => Ok(1),
        _ => Err(reject(
            Reason::BadLabel,
            format!("column {column} must be 0 or 1, found {}", bytes_repr(token)),
        )),
    }
}

/// Powers of ten exactly representable as f64.
const EXACT_POWERS_OF_TEN: [f64; 16] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// A plain decimal (`digits[.digits]`, at most 15 digits, no sign or exponent) read byte by byte:
/// the values the files hold (`1.0`, `0.693147`, counts). Both the digits and the power of ten
/// are exact in f64, so one division is correctly rounded: the same value `float()` gives.
/// Anything else is left to the general parser.
#[derive(Default)]
struct PlainDecimal {
    mantissa: u64,
    /// The digits before the point.
    whole: u64,
    digits: usize,
    decimals: usize,
    point: bool,
    /// A digit other than 0 after the point: without one the value is the integer part, and the
    /// division (the slowest instruction of the whole scan) is not needed.
    fraction: bool,
    other: bool,
}

impl PlainDecimal {
    #[inline]
    fn push(&mut self, byte: u8) {
        if byte.is_ascii_digit() {
            self.mantissa = self.mantissa.wrapping_mul(10).wrapping_add(u64::from(byte - b'0'));
            self.digits += 1;
            self.decimals += usize::from(self.point);
            self.fraction |= self.point && byte != b'0';
            if !self.point {
                self.whole = self.mantissa;
            }
        } else if byte == b'.' && !self.point {
            self.point = true;
        } else {
            self.other = true;
        }
    }

    /// `None` unless the bytes were a plain decimal ("." alone is not).
    #[inline]
    fn value(&self) -> Option<f64> {
        if self.other || !(1..=15).contains(&self.digits) {
            return None;
        }
        // At most 15 digits: below 2^53, so the conversions are exact.
        Some(if self.fraction {
            self.mantissa as i64 as f64 / EXACT_POWERS_OF_TEN[self.decimals]
        } else {
            self.whole as i64 as f64
        })
    }
}
