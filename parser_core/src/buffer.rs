//! Arrow buffers handed to Python without a copy: the Rust vector a column was built in, behind
//! Python's buffer protocol, so `pyarrow.py_buffer` wraps it where it lies.

use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;

/// The vector behind a [`Buffer`].
pub enum Owned {
    I64(Vec<i64>),
    I32(Vec<i32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
}

/// A read-only buffer of bytes owned by Rust; freed when Python drops the last reference (an
/// Arrow array that wraps it holds one).
#[pyclass(frozen, module = "taobao_parser_core")]
pub struct Buffer {
    owned: Owned,
}

impl Buffer {
    pub fn new(owned: Owned) -> Buffer {
        Buffer { owned }
    }

    fn bytes(&self) -> &[u8] {
        match &self.owned {
            Owned::I64(v) => as_bytes(v),
            Owned::I32(v) => as_bytes(v),
            Owned::F64(v) => as_bytes(v),
            Owned::U8(v) => v,
        }
    }
}

/// A slice of plain numbers as its bytes.
fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: T is only ever i32, i64 or f64 here: no padding, every byte initialised.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

#[pymethods]
impl Buffer {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let bytes = slf.get().bytes();
        // Read-only; FillInfo keeps a reference to this object for as long as the view lives.
        let filled = ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            bytes.as_ptr() as *mut std::os::raw::c_void,
            bytes.len() as ffi::Py_ssize_t,
            1,
            flags,
        );
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.bytes().len()
    }
}
