//! Postgres's binary `COPY ... TO STDOUT (FORMAT binary)` stream as Arrow column buffers.
//!
//! The text (CSV) form of a training set costs Postgres a decimal conversion per double and the
//! reader a parse per double: most of a point-in-time read's CPU. The binary form is each value's
//! bytes in network order, behind a length (-1 for NULL): read here a field at a time, no text.
//!
//! The stream: an 11-byte signature, a flags word and a header extension; then per row a 16-bit
//! field count followed by each field as a 32-bit length and its bytes; then a count of -1.
//! Postgres sends it in one message per row, but [`Decoder::feed`] takes any cut: an incomplete
//! row waits in the decoder for the next block.

use crate::arrow::{Column, Values};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Seconds from 1970-01-01 (Arrow's epoch) to 2000-01-01 (Postgres's).
const EPOCH_SECONDS: i64 = 946_684_800;
const EPOCH_DAYS: i32 = 10_957;

/// How a column's values come over the wire, by Postgres type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire {
    /// `int2` and `bool` are widened to 32 bits; the caller narrows them.
    Int2,
    Bool,
    Int4,
    Int8,
    /// `float4` is widened to 64 bits (exactly); the caller narrows it.
    Float4,
    Float8,
    /// `text`, `varchar`, `bpchar`, `name`: UTF-8 bytes.
    Text,
    /// `timestamp` and `timestamptz`: microseconds since 1970-01-01 UTC.
    Timestamp,
    /// Days since 1970-01-01.
    Date,
}

impl Wire {
    pub fn parse(name: &str) -> Result<Wire, String> {
        Ok(match name {
            "int2" => Wire::Int2,
            "bool" => Wire::Bool,
            "int4" => Wire::Int4,
            "int8" => Wire::Int8,
            "float4" => Wire::Float4,
            "float8" => Wire::Float8,
            "text" => Wire::Text,
            "timestamp" => Wire::Timestamp,
            "date" => Wire::Date,
            _ => return Err(format!("no binary decoding for Postgres type {name:?}")),
        })
    }

    fn values(self) -> Values {
        match self {
            Wire::Int2 | Wire::Bool | Wire::Int4 | Wire::Date => Values::Int32(Vec::new()),
            Wire::Int8 | Wire::Timestamp => Values::Int64(Vec::new()),
            Wire::Float4 | Wire::Float8 => Values::Float64(Vec::new()),
            Wire::Text => Values::bytes(),
        }
    }
}

pub struct Decoder {
    wires: Vec<Wire>,
    columns: Vec<Column>,
    pub rows: usize,
    /// Bytes of a row (or of the header) not complete yet.
    pending: Vec<u8>,
    header_read: bool,
    finished: bool,
}

/// Why a stream cannot be decoded (the message names the row and column).
pub type Error = String;

fn be_i16(bytes: &[u8]) -> i16 {
    i16::from_be_bytes(bytes.try_into().expect("two bytes"))
}

fn be_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes(bytes.try_into().expect("four bytes"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("eight bytes"))
}

impl Decoder {
    pub fn new(wires: Vec<Wire>) -> Decoder {
        let columns = wires.iter().map(|wire| Column::new(wire.values())).collect();
        Decoder { wires, columns, rows: 0, pending: Vec::new(), header_read: false, finished: false }
    }

    /// Decode the complete rows of `pending` + `data`; keep what is left of an incomplete one.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.pending.is_empty() {
            let used = self.decode(data)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(data);
            let used = self.decode(&joined)?;
            joined.drain(..used);
            self.pending = joined;
        }
        Ok(())
    }

    /// The columns, once the stream has ended with its trailer.
    pub fn finish(self) -> Result<(usize, Vec<Column>), Error> {
        if !self.finished || !self.pending.is_empty() {
            return Err(format!("the COPY stream ended after {} rows without its trailer", self.rows));
        }
        Ok((self.rows, self.columns))
    }

    /// Decode what is complete in `data`; returns the bytes used.
    fn decode(&mut self, data: &[u8]) -> Result<usize, Error> {
        let mut at = 0;
        if !self.header_read {
            if data.len() < 19 {
                return Ok(0);
            }
            if &data[..11] != SIGNATURE {
                return Err("not a binary COPY stream (no PGCOPY signature)".into());
            }
            let extension = be_i32(&data[15..19]);
            let end = 19 + usize::try_from(extension).map_err(|_| "negative header extension length")?;
            if data.len() < end {
                return Ok(0);
            }
            self.header_read = true;
            at = end;
        }
        while at + 2 <= data.len() {
            if self.finished {
                return Err(format!("bytes after the COPY trailer (after {} rows)", self.rows));
            }
            let fields = be_i16(&data[at..at + 2]);
            if fields == -1 {
                self.finished = true;
                at += 2;
                continue;
            }
            if fields as usize != self.wires.len() {
                return Err(format!("row {}: {} fields, expected {}", self.rows, fields, self.wires.len()));
            }
            match self.row_end(data, at + 2)? {
                Some(end) => {
                    self.push_row(&data[at + 2..end])?;
                    at = end;
                }
                None => break,
            }
        }
        Ok(at)
    }

    /// Where the row whose first field starts at `start` ends, if all of it is in `data`.
    fn row_end(&self, data: &[u8], start: usize) -> Result<Option<usize>, Error> {
        let mut at = start;
        for _ in 0..self.wires.len() {
            if at + 4 > data.len() {
                return Ok(None);
            }
            let length = be_i32(&data[at..at + 4]);
            at += 4;
            if length >= 0 {
                at += length as usize;
            } else if length != -1 {
                return Err(format!("row {}: field length {length}", self.rows));
            }
        }
        Ok((at <= data.len()).then_some(at))
    }

    /// Append one complete row (its fields, after the field count).
    fn push_row(&mut self, mut row: &[u8]) -> Result<(), Error> {
        for (column, (wire, target)) in self.wires.iter().zip(self.columns.iter_mut()).enumerate() {
            let length = be_i32(&row[..4]);
            row = &row[4..];
            let value = if length < 0 {
                None
            } else {
                let (value, rest) = row.split_at(length as usize);
                row = rest;
                Some(value)
            };
            push(*wire, target, value)
                .map_err(|message| format!("row {}, column {column}: {message}", self.rows))?;
        }
        self.rows += 1;
        Ok(())
    }
}

fn sized<const N: usize>(wire: Wire, value: &[u8]) -> Result<&[u8; N], String> {
    value.try_into().map_err(|_| format!("{wire:?} value of {} bytes", value.len()))
}

/// Append `value` (None: NULL) to `column` as `wire` decodes it.
fn push(wire: Wire, column: &mut Column, value: Option<&[u8]>) -> Result<(), String> {
    column.validity.push(value.is_some());
    match (&mut column.values, value) {
        (Values::Int32(v), None) => v.push(0),
        (Values::Int64(v), None) => v.push(0),
        (Values::Float64(v), None) => v.push(0.0),
        (values @ Values::Bytes { .. }, None) => values.push_bytes(b""),
        (Values::Int32(v), Some(bytes)) => v.push(match wire {
            Wire::Bool => i32::from(sized::<1>(wire, bytes)?[0] != 0),
            Wire::Int2 => i32::from(be_i16(sized::<2>(wire, bytes)?)),
            Wire::Int4 => be_i32(sized::<4>(wire, bytes)?),
            _ => be_i32(sized::<4>(wire, bytes)?)
                .checked_add(EPOCH_DAYS)
                .ok_or("date out of range (infinity?)")?,
        }),
        (Values::Int64(v), Some(bytes)) => {
            let raw = be_i64(sized::<8>(wire, bytes)?);
            v.push(match wire {
                Wire::Int8 => raw,
                _ => {
                    raw.checked_add(EPOCH_SECONDS * 1_000_000).ok_or("timestamp out of range (infinity?)")?
                }
            })
        }
        (Values::Float64(v), Some(bytes)) => v.push(match wire {
            Wire::Float4 => f64::from(f32::from_bits(u32::from_be_bytes(*sized::<4>(wire, bytes)?))),
            _ => f64::from_bits(u64::from_be_bytes(*sized::<8>(wire, bytes)?)),
        }),
        (values @ Values::Bytes { .. }, Some(bytes)) => {
            std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_string())?;
            values.push_bytes(bytes)
        }
        (Values::Pairs { .. }, _) => unreachable!("no wire decodes to pairs"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_decode_whatever_the_cuts() {
        let rows = vec![
            vec![
                Some(7i64.to_be_bytes().to_vec()),
                Some(1.5f64.to_be_bytes().to_vec()),
                Some(b"a\xc3\xa9".to_vec()),
            ],
            vec![None, Some((-0.0f64).to_be_bytes().to_vec()), None],
            vec![Some((-1i64).to_be_bytes().to_vec()), None, Some(Vec::new())],
        ];
        let data = stream(&rows);
        for cut in 1..data.len() {
            let mut decoder = Decoder::new(vec![Wire::Int8, Wire::Float8, Wire::Text]);
            decoder.feed(&data[..cut]).unwrap();
            decoder.feed(&data[cut..]).unwrap();
            let (count, columns) = decoder.finish().unwrap();
            assert_eq!(count, 3);
            match &columns[0].values {
                Values::Int64(v) => assert_eq!(v, &[7, 0, -1]),
                _ => panic!("int8 column"),
            }
            assert_eq!(columns[0].validity.bitmap(), Some(vec![0b101]));
            match &columns[2].values {
                Values::Bytes { offsets, data } => {
                    assert_eq!(offsets, &[0, 3, 3, 3]);
                    assert_eq!(data, b"a\xc3\xa9");
                }
                _ => panic!("text column"),
            }
        }
    }

    #[test]
    fn timestamps_and_dates_move_to_the_unix_epoch() {
        let data = stream(&[vec![Some(0i64.to_be_bytes().to_vec()), Some((-1i32).to_be_bytes().to_vec())]]);
        let mut decoder = Decoder::new(vec![Wire::Timestamp, Wire::Date]);
        decoder.feed(&data).unwrap();
        let (_, columns) = decoder.finish().unwrap();
        match (&columns[0].values, &columns[1].values) {
            (Values::Int64(t), Values::Int32(d)) => {
                assert_eq!(t, &[946_684_800_000_000]);
                assert_eq!(d, &[10_956]);
            }
            _ => panic!("timestamp and date columns"),
        }
    }

    #[test]
    fn a_stream_without_its_trailer_or_with_a_wrong_row_is_refused() {
        let data = stream(&[vec![Some(1i32.to_be_bytes().to_vec())]]);
        let mut decoder = Decoder::new(vec![Wire::Int4]);
        decoder.feed(&data[..data.len() - 2]).unwrap();
        assert!(decoder.finish().err().unwrap().contains("without its trailer"));
        let mut decoder = Decoder::new(vec![Wire::Int8]);
        assert!(decoder.feed(&data).unwrap_err().contains("row 0, column 0: Int8 value of 4 bytes"));
        let mut decoder = Decoder::new(vec![Wire::Int4, Wire::Int4]);
        assert!(decoder.feed(&data).unwrap_err().contains("1 fields, expected 2"));
    }
}
