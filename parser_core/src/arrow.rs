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
    pub(crate) fn with_capacity(rows: usize) -> Validity {
        Validity { rows: Vec::with_capacity(rows) }
    }

    pub(crate) fn push(&mut self, valid: bool) {
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
                .map(|byte| byte.iter().enumerate().fold(0u8, |bits, (at, &valid)| bits | (valid << at)))
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
                Values::Bytes { offsets, data: Vec::with_capacity(rows * 16) }
            }
            Source::History(_) => Values::Pairs { offsets: vec![0], ids: Vec::new(), values: Vec::new() },
        }
    }

    pub(crate) fn bytes() -> Values {
        Values::Bytes { offsets: vec![0], data: Vec::new() }
    }

    pub(crate) fn push_bytes(&mut self, token: &[u8]) {
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
    pub(crate) fn new(values: Values) -> Column {
        let rows = match &values {
            Values::Int64(v) => v.capacity(),
            Values::Int32(v) => v.capacity(),
            Values::Float64(v) => v.capacity(),
            Values::Bytes { offsets, .. } | Values::Pairs { offsets, .. } => offsets.capacity(),
        };
        Column { validity: Validity::with_capacity(rows), values }
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

/// A column of the first entry's id (`T = i64`) or value (`T = f64`) of one field: kept apart from
/// the other columns so that filling it is a tight loop without a dispatch per cell.
struct FirstOf<T> {
    column: usize,
    field: usize,
    values: Vec<T>,
    validity: Validity,
}

impl<T: Copy + Default> FirstOf<T> {
    fn new(column: usize, field: usize, rows: usize) -> FirstOf<T> {
        FirstOf { column, field, values: Vec::with_capacity(rows), validity: Validity::with_capacity(rows) }
    }

    #[inline]
    fn push(&mut self, value: Option<T>) {
        self.values.push(value.unwrap_or_default());
        self.validity.push(value.is_some());
    }
}

/// Record columns in the caller's layout, then the rejection columns: reason, message and the
/// raw bytes (all three null on a good line, and every record column null on a rejected one).
pub struct Batch {
    sources: Vec<Source>,
    first: FirstEntries,
    /// The history column of each field ([`NO_COLUMN`] if none), for the pass over a line's entries.
    history_column: [usize; 64],
    ids: Vec<FirstOf<i64>>,
    values: Vec<FirstOf<f64>>,
    /// Every other column, in layout order (the id and value columns' places hold empty values
    /// until [`Batch::into_columns`]), then the three rejection columns.
    columns: Vec<Column>,
    pub rows: usize,
}

impl Batch {
    pub fn new(sources: Vec<Source>, rows: usize) -> Batch {
        let mut columns: Vec<Column> = sources
            .iter()
            .map(|&s| match s {
                Source::Id(_) | Source::Value(_) => Column::new(Values::Int64(Vec::new())),
                _ => Column::new(Values::for_source(s, rows)),
            })
            .collect();
        columns.extend((0..3).map(|_| Column::new(Values::bytes())));
        let mut history_column = [NO_COLUMN; 64];
        let (mut ids, mut values) = (Vec::new(), Vec::new());
        for (column, &source) in sources.iter().enumerate() {
            match source {
                Source::History(field) => history_column[field] = column,
                Source::Id(field) => ids.push(FirstOf::new(column, field, rows)),
                Source::Value(field) => values.push(FirstOf::new(column, field, rows)),
                _ => {}
            }
        }
        let first = FirstEntries { seen: 0, entries: [(0, 0.0); 64] };
        Batch { sources, first, history_column, ids, values, columns, rows: 0 }
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

    /// The columns in layout order, then reason, message and raw.
    pub fn into_columns(mut self) -> Vec<Column> {
        for id in self.ids {
            self.columns[id.column] = Column { validity: id.validity, values: Values::Int64(id.values) };
        }
        for value in self.values {
            self.columns[value.column] =
                Column { validity: value.validity, values: Values::Float64(value.values) };
        }
        self.columns
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
        for id in &mut self.ids {
            id.push(self.first.get(id.field).map(|e| e.0));
        }
        for value in &mut self.values {
            value.push(self.first.get(value.field).map(|e| e.1));
        }
        let (record, rejection) = self.columns.split_at_mut(self.sources.len());
        for (column, &source) in record.iter_mut().zip(&self.sources) {
            match (&mut column.values, source) {
                (_, Source::Id(_) | Source::Value(_)) => continue,
                (Values::Int64(v), Source::SampleId) => v.push(line.sample_id),
                (Values::Int32(v), Source::Click) => v.push(line.click),
                (Values::Int32(v), Source::Conversion) => v.push(line.conversion),
                (values @ Values::Bytes { .. }, Source::Key) => values.push_bytes(line.key),
                (Values::Pairs { offsets, ids, .. }, Source::History(_)) => offsets.push(ids.len() as i32),
                _ => unreachable!("each column's values are made for its source"),
            }
            column.validity.push(true);
        }
        for column in rejection {
            column.values.push_bytes(b"");
            column.validity.push(false);
        }
        self.rows += 1;
    }

    fn push_reject(&mut self, rejection: &Reject, raw: &[u8]) {
        for id in &mut self.ids {
            id.push(None);
        }
        for value in &mut self.values {
            value.push(None);
        }
        let (record, outcome) = self.columns.split_at_mut(self.sources.len());
        for (column, &source) in record.iter_mut().zip(&self.sources) {
            match (&mut column.values, source) {
                (_, Source::Id(_) | Source::Value(_)) => continue,
                (Values::Int64(v), _) => v.push(0),
                (Values::Int32(v), _) => v.push(0),
                (Values::Float64(v), _) => v.push(0.0),
                (values @ Values::Bytes { .. }, _) => values.push_bytes(b""),
                (Values::Pairs { offsets, ids, .. }, _) => offsets.push(ids.len() as i32),
            }
            column.validity.push(false);
        }
        let texts: [&[u8]; 3] = [rejection.reason.code().as_bytes(), rejection.message.as_bytes(), raw];
        for (column, text) in outcome.iter_mut().zip(texts) {
            column.values.push_bytes(text);
            column.validity.push(true);
        }
        self.rows += 1;
    }
}

/// The fields a layout refers to, checked against the contract: a field the kind does not have
/// would give an always-null column, which is a mistake in the layout.
pub fn source(contract: &Contract, kind: Kind, what: &str, field_id: &str) -> Result<Source, String> {
    let field = || {
        contract
            .field(field_id.as_bytes())
            .filter(|&f| contract.fields[f].kind == kind)
            .ok_or_else(|| format!("field {field_id:?} is not a field of {}", contract.kinds[kind as usize]))
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
