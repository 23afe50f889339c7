//! `taobao_parser_core`: the compiled core of taobao-feature-platform's raw-line parser.
//!
//! Python's `taobao_assets.source.parser` is the API; this module does the byte work behind it:
//! [`Parser::parse_line`] gives one line's typed values (the Python side makes the record), and
//! [`Parser::parse_batch`] parses many records at once into Arrow column buffers, with the GIL
//! released, so that no per-record Python object is made. [`CopyDecoder`] does the same for
//! Postgres's binary `COPY` output (the offline store's training sets).

mod arrow;
mod buffer;
mod contract;
mod line;
mod pgcopy;
mod text;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::arrow::{Batch, Column, Values};
use crate::buffer::{Buffer, Owned};

/// A column of a parsed batch: its validity bitmap, if any row is null, and its Arrow buffers.
type BatchColumn = (Option<Py<Buffer>>, Vec<Py<Buffer>>);
use crate::contract::{byte_class, pack, Contract, Field, FieldTable, Kind};
use crate::line::{Reason, Scanner, MAX_COLUMNS};
use crate::pgcopy::{Decoder, Wire};

/// The parser, made once per process from the format contract.
#[pyclass(frozen, module = "taobao_parser_core")]
struct Parser {
    contract: Contract,
    /// The field ids as Python strings, made once: every record's dicts are keyed by them.
    field_ids: Vec<Py<PyString>>,
}

fn kind_of(kind: usize) -> PyResult<Kind> {
    match kind {
        0 => Ok(Kind::Sample),
        1 => Ok(Kind::Common),
        _ => Err(PyValueError::new_err(format!("kind must be 0 (sample) or 1 (common), got {kind}"))),
    }
}

fn separator(name: &str, bytes: &[u8]) -> PyResult<u8> {
    match bytes {
        [byte] => Ok(*byte),
        _ => Err(PyValueError::new_err(format!("{name} must be one byte, got {bytes:?}"))),
    }
}

/// A built column as Python objects: its validity bitmap (`None` when no row is null) and its
/// Arrow buffers, each handed over without a copy.
fn column_buffers(py: Python<'_>, column: Column) -> PyResult<BatchColumn> {
    let validity =
        column.validity.bitmap().map(|bits| Py::new(py, Buffer::new(Owned::U8(bits)))).transpose()?;
    let owned = match column.values {
        Values::Int64(v) => vec![Owned::I64(v)],
        Values::Int32(v) => vec![Owned::I32(v)],
        Values::Float64(v) => vec![Owned::F64(v)],
        Values::Bytes { offsets, data } => vec![Owned::I32(offsets), Owned::U8(data)],
        Values::Pairs { offsets, ids, values } => {
            vec![Owned::I32(offsets), Owned::I64(ids), Owned::F64(values)]
        }
    };
    let buffers = owned.into_iter().map(|o| Py::new(py, Buffer::new(o))).collect::<PyResult<_>>()?;
    Ok((validity, buffers))
}

#[pymethods]
impl Parser {
    /// `kinds`: the two file-kind names (sample first); `columns`: each kind's column names;
    /// `fields`: `(field_id, name, kind index, is_history)` of every field.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        column_sep: &[u8],
        entry_sep: &[u8],
        field_sep: &[u8],
        value_sep: &[u8],
        kinds: [String; 2],
        columns: [Vec<String>; 2],
        fields: Vec<(String, String, usize, bool)>,
        key_chars: &[u8],
        value_chars: &[u8],
        max_id: u64,
    ) -> PyResult<Self> {
        if fields.len() > 64 {
            return Err(PyValueError::new_err("at most 64 fields are supported"));
        }
        let fields = fields
            .into_iter()
            .map(|(id, name, kind, history)| {
                let packed = pack(id.as_bytes()).ok_or_else(|| {
                    PyValueError::new_err(format!("field id {id:?} is longer than 7 bytes"))
                })?;
                Ok(Field { id: id.into_bytes(), packed, name, kind: kind_of(kind)?, history })
            })
            .collect::<PyResult<Vec<Field>>>()?;
        let field_ids =
            fields.iter().map(|f| PyString::new(py, &String::from_utf8_lossy(&f.id)).unbind()).collect();
        let (entry_sep, field_sep, value_sep) = (
            separator("entry_sep", entry_sep)?,
            separator("field_sep", field_sep)?,
            separator("value_sep", value_sep)?,
        );
        // A plain decimal is converted without the value-character check (line::PlainDecimal).
        if !b"0123456789.".iter().all(|b| value_chars.contains(b)) {
            return Err(PyValueError::new_err("the value characters must include the digits and the point"));
        }
        if columns.iter().any(|names| names.len() > MAX_COLUMNS) {
            return Err(PyValueError::new_err(format!("a file kind has at most {MAX_COLUMNS} columns")));
        }
        let contract = Contract {
            column_sep: separator("column_sep", column_sep)?,
            entry_sep,
            field_sep,
            value_sep,
            separator: byte_class(&[entry_sep, field_sep, value_sep]),
            kinds,
            columns,
            field_table: FieldTable::new(&fields)
                .ok_or_else(|| PyValueError::new_err("no field lookup table separates these field ids"))?,
            fields,
            key_chars: byte_class(key_chars),
            value_chars: byte_class(value_chars),
            max_id,
        };
        Ok(Parser { contract, field_ids })
    }

    /// The reason codes this core can give.
    #[staticmethod]
    fn reasons() -> Vec<&'static str> {
        Reason::ALL.iter().map(|r| r.code()).collect()
    }

    /// One line: `("reject", reason, message)`, or for a good sample line
    /// `("sample", sample_id, click, conversion, key, num_features, features, repeats)`, for a
    /// good common-features line `("common", key, num_features, features, histories, repeats)`.
    /// `features` maps a field id to its first `(id, value)`, `repeats` lists later entries of
    /// single-valued fields as `(field_id, id, value)`, `histories` maps every history field id
    /// to its entries.
    fn parse_line<'py>(&self, py: Python<'py>, kind: usize, raw: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
        let kind = kind_of(kind)?;
        let mut scanner = Scanner::new(&self.contract);
        let line = match scanner.parse(kind, raw) {
            Ok(line) => line,
            Err(rejection) => {
                return ("reject", rejection.reason.code(), rejection.message).into_pyobject(py)
            }
        };
        let features = PyDict::new(py);
        let repeats = PyList::empty(py);
        let histories = PyDict::new(py);
        for (index, field) in self.contract.fields.iter().enumerate() {
            if field.history && field.kind == kind {
                histories.set_item(self.field_ids[index].bind(py), PyList::empty(py))?;
            }
        }
        for entry in &scanner.entries {
            let field_id = self.field_ids[entry.field].bind(py);
            let pair = (entry.id, entry.value);
            if self.contract.fields[entry.field].history {
                histories
                    .get_item(field_id)?
                    .expect("every history field has a list")
                    .cast::<PyList>()?
                    .append(pair)?;
            } else if features.contains(field_id)? {
                repeats.append((field_id, entry.id, entry.value))?;
            } else {
                features.set_item(field_id, pair)?;
            }
        }
        let key = PyString::new(py, std::str::from_utf8(line.key).expect("keys are ASCII"));
        match kind {
            Kind::Sample => (
                "sample",
                line.sample_id,
                line.click,
                line.conversion,
                key,
                line.num_features,
                features,
                repeats,
            )
                .into_pyobject(py),
            Kind::Common => {
                ("common", key, line.num_features, features, histories, repeats).into_pyobject(py)
            }
        }
    }

    /// Many records: `data` holds them back to back, `ends` (native-endian int64) the end offset
    /// of each; without `ends`, the records are the lines of `data` (each ends after a newline, and
    /// bytes after the last newline are a final record without one). `layout` names the record columns as `(what, field_id)`, `what` one of
    /// `sample_id`, `click`, `conversion`, `common_feature_index`, `id`, `value`, `history`.
    /// Returns the row count and, per column (the layout's, then reason, message and raw), its
    /// validity bitmap (`None` when no row is null) and its Arrow buffers.
    #[allow(clippy::type_complexity)]
    fn parse_batch<'py>(
        &self,
        py: Python<'py>,
        kind: usize,
        layout: Vec<(String, String)>,
        data: PyBuffer<u8>,
        ends: Option<&[u8]>,
    ) -> PyResult<(usize, Vec<BatchColumn>)> {
        let kind = kind_of(kind)?;
        let data = contiguous(&data)?;
        let sources = layout
            .iter()
            .map(|(what, field_id)| arrow::source(&self.contract, kind, what, field_id))
            .collect::<Result<Vec<_>, String>>()
            .map_err(PyValueError::new_err)?;
        let ends = match ends {
            None => line_ends(data),
            Some(ends) if ends.len().is_multiple_of(8) => ends
                .chunks_exact(8)
                .map(|b| i64::from_ne_bytes(b.try_into().expect("chunks of 8")) as usize)
                .collect(),
            Some(_) => return Err(PyValueError::new_err("ends must be int64 values")),
        };
        if ends.windows(2).any(|w| w[0] > w[1]) || ends.last().is_some_and(|&end| end > data.len()) {
            return Err(PyValueError::new_err("ends must be non-decreasing offsets within data"));
        }
        // Arrow's 32-bit offsets: the raw bytes of rejects and the keys stay well below this.
        if data.len() >= 1 << 30 {
            return Err(PyValueError::new_err("a batch must hold less than 1 GiB of records"));
        }
        let contract = &self.contract;
        let batch = py.detach(|| {
            let mut batch = Batch::new(sources, ends.len());
            batch.extend(&mut Scanner::new(contract), kind, data, &ends);
            batch
        });
        let rows = batch.rows;
        let columns = batch.into_columns().into_iter().map(|column| column_buffers(py, column));
        Ok((rows, columns.collect::<PyResult<_>>()?))
    }
}

/// The bytes of a contiguous buffer, borrowed for as long as `buffer` lives.
fn contiguous(buffer: &PyBuffer<u8>) -> PyResult<&[u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("data must be a contiguous buffer of bytes"));
    }
    Ok(if buffer.len_bytes() == 0 {
        &[]
    } else {
        // SAFETY: a contiguous buffer of len_bytes bytes, kept alive by `buffer` (the caller must
        // not resize it meanwhile: bytes and mmap cannot be).
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) }
    })
}

/// A Postgres binary `COPY` stream decoded into Arrow column buffers (see `pgcopy.rs`): made with
/// each column's Postgres type name, fed the stream's bytes in any cuts, finished once.
#[pyclass(module = "taobao_parser_core")]
struct CopyDecoder {
    decoder: Option<Decoder>,
}

#[pymethods]
impl CopyDecoder {
    #[new]
    fn new(types: Vec<String>) -> PyResult<Self> {
        let wires = types
            .iter()
            .map(|t| Wire::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PyValueError::new_err)?;
        Ok(CopyDecoder { decoder: Some(Decoder::new(wires)) })
    }

    /// Decode the complete rows of what was fed so far and `data` (the GIL released).
    fn feed(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<()> {
        let decoder =
            self.decoder.as_mut().ok_or_else(|| PyValueError::new_err("the decoder is finished"))?;
        let bytes = contiguous(&data)?;
        py.detach(|| decoder.feed(bytes)).map_err(PyValueError::new_err)
    }

    /// The row count and, per column, its validity bitmap (`None` when no row is null) and buffers.
    fn finish(&mut self, py: Python<'_>) -> PyResult<(usize, Vec<BatchColumn>)> {
        let decoder = self.decoder.take().ok_or_else(|| PyValueError::new_err("the decoder is finished"))?;
        let (rows, columns) = decoder.finish().map_err(PyValueError::new_err)?;
        let columns = columns.into_iter().map(|column| column_buffers(py, column));
        Ok((rows, columns.collect::<PyResult<_>>()?))
    }
}

/// The end offset of each line of `data` (after its newline; the bytes after the last newline are
/// a final line without one).
fn line_ends(data: &[u8]) -> Vec<usize> {
    let mut ends: Vec<usize> = memchr::memchr_iter(b'\n', data).map(|at| at + 1).collect();
    if ends.last().copied().unwrap_or(0) < data.len() {
        ends.push(data.len());
    }
    ends
}

#[pymodule]
fn taobao_parser_core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Parser>()?;
    module.add_class::<CopyDecoder>()?;
    module.add_class::<Buffer>()
}
