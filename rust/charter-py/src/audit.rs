//! `charter._core.AuditSink`: the buffer between deciding threads and the
//! Python writer thread. The writer calls `take` with the GIL released.

use crate::errors;
use charter_core::audit::{AuditConfig, Mode};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Arc;
use std::time::Duration;

/// One encoded batch: (data, first seq, last seq, count, chain hash).
type TakenBatch<'py> = (Bound<'py, PyBytes>, u64, u64, u64, Bound<'py, PyBytes>);

/// The audit buffer; see `charter.audit`.
#[pyclass(frozen, module = "charter._core")]
pub struct AuditSink {
    pub(crate) inner: Arc<charter_core::audit::AuditSink>,
}

fn duration(py: Python<'_>, seconds: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        errors::to_py(
            py,
            charter_core::Error::InvalidArgument(format!(
                "{name} must be a non-negative number of seconds"
            )),
        )
    })
}

#[pymethods]
impl AuditSink {
    #[new]
    #[pyo3(signature = (*, capacity, strict, block_timeout, stream, first_seq, hash_key))]
    fn new(
        py: Python<'_>,
        capacity: usize,
        strict: bool,
        block_timeout: f64,
        stream: u32,
        first_seq: u64,
        hash_key: Vec<u8>,
    ) -> PyResult<Self> {
        if capacity == 0 {
            return Err(errors::to_py(
                py,
                charter_core::Error::InvalidArgument("capacity must be positive".into()),
            ));
        }
        let cfg = AuditConfig {
            capacity,
            mode: if strict {
                Mode::Strict
            } else {
                Mode::BestEffort
            },
            block_timeout: duration(py, block_timeout, "block_timeout")?,
            stream,
            first_seq,
            hash_key,
        };
        Ok(AuditSink {
            inner: Arc::new(charter_core::audit::AuditSink::new(cfg)),
        })
    }

    /// Wait up to `wait` seconds for records, take them all and encode them
    /// (`prefix` first) as one batch chained to `prev`; None if none came.
    fn take<'py>(
        &self,
        py: Python<'py>,
        prev: &[u8],
        prefix: &[u8],
        wait: f64,
    ) -> PyResult<Option<TakenBatch<'py>>> {
        let prev: [u8; 32] = prev.try_into().map_err(|_| {
            errors::to_py(
                py,
                charter_core::Error::InvalidArgument("prev must be 32 bytes".into()),
            )
        })?;
        let wait = duration(py, wait, "wait")?;
        let sink = &self.inner;
        let Some(b) = py.detach(|| sink.take_encoded(&prev, prefix, wait)) else {
            return Ok(None);
        };
        let data = PyBytes::new(py, &b.data);
        let taken = (data, b.first, b.last, b.count, PyBytes::new(py, &b.hash));
        sink.recycle(b.data);
        Ok(Some(taken))
    }

    /// Ask the writer's `take` to return now with what is pending.
    fn request_flush(&self) {
        self.inner.request_flush();
    }

    /// Report the log unwritable (strict producers stop waiting) or writable again.
    fn set_failed(&self, failed: bool) {
        self.inner.set_failed(failed);
    }

    /// Refuse new records; pending ones can still be taken.
    fn close(&self) {
        self.inner.close();
    }

    /// The writer is gone: refuse even events from now on.
    fn finish(&self) {
        self.inner.finish();
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Records waiting for the writer.
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending()
    }

    /// Records dropped since the last `take_dropped`.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// The dropped count, reset to zero.
    fn take_dropped(&self) -> u64 {
        self.inner.take_dropped()
    }

    /// The next sequence number to be assigned.
    #[getter]
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// The stream tag.
    #[getter]
    fn stream(&self) -> u32 {
        self.inner.config().stream
    }

    /// Whether the sink is strict.
    #[getter]
    fn strict(&self) -> bool {
        self.inner.mode() == Mode::Strict
    }
}
