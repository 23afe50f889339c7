//! Parsed lines as Arrow column buffers (validity bitmap, offsets, values) in a layout the caller
//! names, so that Python wraps them into a record batch without touching a row.

use crate::contract::{Contract, Kind};
use crate::line::{Entry, Line, Reject, Scanner};

/// What an output column holds.
#[derive(Clone, Copy)]
pub enum Source {
    SampleId,
    Click,
    Conversion,
    Key,
    /// The feature id of the first entry of a field (null when the line has none).
    Id(usize),
    /// The value of the first entry of a field.
    Value(usize),
    /// Every `(id, value)` entry of a (history) field, in line order.
    History(usize),
}

/// Which rows of a column are set: one byte per row while the batch grows (a push is a store),
/// packed into Arrow's bitmap (least significant bit first) once, by [`Validity::bitmap`].
#[derive(Default)]
pub struct Validity {
    rows: Vec<u8>,
}

impl Validity {
    fn with_capacity(rows: usize) -> Validity {
        Validity {
            rows: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, valid: bool) {
        self.rows.push(u8::from(valid));
    }

    /// The Arrow bitmap, or `None` when no row is null (Arrow's way of saying so).
    pub fn bitmap(&self) -> Option<Vec<u8>> {
        if self.rows.iter().all(|&valid| valid == 1) {
            return None;
        }
        Some(
            self.rows
                .chunks(8)
                .map(|byte| {
                    byte.iter()
                        .enumerate()
                        .fold(0u8, |bits, (at, &valid)| bits | (valid << at))
                })
                .collect(),
        )
    }
}

pub enum Values {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Float64(Vec<f64>),
    /// Utf8 or binary: `offsets` has one more element than the column has rows.
    Bytes {
        offsets: Vec<i32>,
        data: Vec<u8>,
    },
    /// A list of `(id, value)` structs.
    Pairs {
        offsets: Vec<i32>,
        ids: Vec<i64>,
        values: Vec<f64>,
    },
}

impl Values {
    /// Empty values for a column of `rows` rows, with room for them.
    fn for_source(source: Source, rows: usize) -> Values {
        match source {
            Source::SampleId | Source::Id(_) => Values::Int64(Vec::with_capacity(rows)),
            Source::Click | Source::Conversion => Values::Int32(Vec::with_capacity(rows)),
            Source::Value(_) => Values::Float64(Vec::with_capacity(rows)),
            Source::Key => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Values::Bytes {
                    offsets,
                    data: Vec::with_capacity(rows * 16),
                }
            }
            Source::History(_) => Values::Pairs {
                offsets: vec![0],
                ids: Vec::new(),
                values: Vec::new(),
            },
        }
    }

    fn bytes() -> Values {
        Values::Bytes {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    fn push_bytes(&mut self, token: &[u8]) {
        if let Values::Bytes { offsets, data } = self {
            data.extend_from_slice(token);
            offsets.push(data.len() as i32);
        }
    }
}

pub struct Column {
    pub validity: Validity,
    pub values: Values,
}

impl Column {
    fn new(values: Values) -> Column {
        let rows = match &values {
            Values::Int64(v) => v.capacity(),
            Values::Int32(v) => v.capacity(),
            Values::Float64(v) => v.capacity(),
            Values::Bytes { offsets, .. } | Values::Pairs { offsets, .. } => offsets.capacity(),
        };
        Column {
            validity: Validity::with_capacity(rows),
            values,
        }
    }
}

/// The first `(id, value)` of each field on the current line. The array is reused from line to
/// line: `seen` says which of its slots belong to the current line.
struct FirstEntries {
    seen: u64,
    entries: [(i64, f64); 64],
}

impl FirstEntries {
    fn get(&self, field: usize) -> Option<(i64, f64)> {
        (self.seen & (1 << field) != 0).then(|| self.entries[field])
    }
}

/// No history column for a field.
const NO_COLUMN: usize = usize::MAX;

/// Record columns in the caller's layout, then the rejection columns: reason, message and the
/// raw bytes (all three null on a good line, and every record column null on a rejected one).
pub struct Batch {
    sources: Vec<Source>,
    first: FirstEntries,
    /// The history column of each field ([`NO_COLUMN`] if none), for the pass over a line's entries.
    history_column: [usize; 64],
    pub columns: Vec<Column>,
    pub rows: usize,
}

impl Batch {
    pub fn new(sources: Vec<Source>, rows: usize) -> Batch {
        let mut columns: Vec<Column> = sources
            .iter()
            .map(|&s| Column::new(Values::for_source(s, rows)))
            .collect();
        columns.extend((0..3).map(|_| Column::new(Values::bytes())));
        let mut history_column = [NO_COLUMN; 64];
        for (column, source) in sources.iter().enumerate() {
            if let Source::History(field) = source {
                history_column[*field] = column;
            }
        }
        let first = FirstEntries {
            seen: 0,
            entries: [(0, 0.0); 64],
        };
        Batch {
            sources,
            first,
            history_column,
            columns,
            rows: 0,
        }
    }

    /// Parse `data` cut at `ends` (the end offset of each record) and append every record.
    pub fn extend(&mut self, scanner: &mut Scanner, kind: Kind, data: &[u8], ends: &[usize]) {
        let mut start = 0;
        for &end in ends {
            let raw = &data[start..end];
            match scanner.parse(kind, raw) {
                Ok(line) => self.push_line(&line, &scanner.entries),
                Err(rejection) => self.push_reject(&rejection, raw),
            }
            start = end;
        }
    }

    fn push_line(&mut self, line: &Line, entries: &[Entry]) {
        // One pass over the entries: the first of each field, and the history lists.
        self.first.seen = 0;
        for entry in entries {
            let bit = 1u64 << entry.field;
            if self.first.seen & bit == 0 {
                self.first.seen |= bit;
                self.first.entries[entry.field] = (entry.id, entry.value);
            }
            let column = self.history_column[entry.field];
            if column != NO_COLUMN {
                if let Values::Pairs { ids, values, .. } = &mut self.columns[column].values {
                    ids.push(entry.id);
                    values.push(entry.value);
                }
            }
        }
        let first = &self.first;
        let (record, rejection) = self.columns.split_at_mut(self.sources.len());
        for (column, &source) in record.iter_mut().zip(&self.sources) {
            let valid = match (&mut column.values, source) {
                (Values::Int64(v), Source::SampleId) => push(v, line.sample_id, true),
                (Values::Int32(v), Source::Click) => push(v, line.click, true),
                (Values::Int32(v), Source::Conversion) => push(v, line.conversion, true),
                (values @ Values::Bytes { .. }, Source::Key) => {
                    values.push_bytes(line.key);
                    true
                }
                (Values::Int64(v), Source::Id(field)) => {
                    let entry = first.get(field);
                    push(v, entry.map_or(0, |e| e.0), entry.is_some())
                }
                (Values::Float64(v), Source::Value(field)) => {
                    let entry = first.get(field);
                    push(v, entry.map_or(0.0, |e| e.1), entry.is_some())
                }
                (Values::Pairs { offsets, ids, .. }, Source::History(_)) => {
                    offsets.push(ids.len() as i32);
                    true
                }
                _ => unreachable!("each column's values are made for its source"),
            };
            column.validity.push(valid);
        }
        for column in rejection {
            column.values.push_bytes(b"");
            column.validity.push(false);
        }
        self.rows += 1;
    }

    fn push_reject(&mut self, rejection: &Reject, raw: &[u8]) {
        let (record, outcome) = self.columns.split_at_mut(self.sources.len());
        for column in record {
            match &mut column.values {
                Values::Int64(v) => v.push(0),
                Values::Int32(v) => v.push(0),
                Values::Float64(v) => v.push(0.0),
                values @ Values::Bytes { .. } => values.push_bytes(b""),
                Values::Pairs { offsets, ids, .. } => offsets.push(ids.len() as i32),
            }
            column.validity.push(false);
        }
        let texts: [&[u8]; 3] = [
            rejection.reason.code().as_bytes(),
            rejection.message.as_bytes(),
            raw,
        ];
        for (column, text) in outcome.iter_mut().zip(texts) {
            column.values.push_bytes(text);
            column.validity.push(true);
        }
        self.rows += 1;
    }
}

fn push<T>(values: &mut Vec<T>, value: T, valid: bool) -> bool {
    values.push(value);
    valid
}

/// The fields a layout refers to, checked against the contract: a field the kind does not have
/// would give an always-null column, which is a mistake in the layout.
pub fn source(
    contract: &Contract,
    kind: Kind,
    what: &str,
    field_id: &str,
) -> Result<Source, String> {
    let field = || {
        contract
            .field(field_id.as_bytes())
            .filter(|&f| contract.fields[f].kind == kind)
            .ok_or_else(|| {
                format!(
                    "field {field_id:?} is not a field of {}",
                    contract.kinds[kind as usize]
                )
            })
    };
    Ok(match (what, kind) {
        ("sample_id", Kind::Sample) => Source::SampleId,
        ("click", Kind::Sample) => Source::Click,
        ("conversion", Kind::Sample) => Source::Conversion,
        ("common_feature_index", _) => Source::Key,
        ("id", _) => Source::Id(field()?),
        ("value", _) => Source::Value(field()?),
        ("history", _) if contract.fields[field()?].history => Source::History(field()?),
        _ => {
            return Err(format!(
                "no column {what:?} (field {field_id:?}) in {}",
                contract.kinds[kind as usize]
            ))
        }
    })
}
