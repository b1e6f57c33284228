//! The one place core errors become Charter's Python exceptions. The classes
//! live in `charter.errors` (so they can also subclass `ValueError`,
//! `LookupError`, ...); they are looked up once and cached.

use charter_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        let module = py.import("charter.errors")?;
        Ok::<_, PyErr>(module.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py).clone())
}

macro_rules! exception {
    ($fn:ident, $name:literal) => {
        pub(crate) fn $fn(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
            static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            class(py, &CELL, $name)
        }
    };
}

exception!(policy_error, "PolicyError");
exception!(provision_error, "ProvisionError");
exception!(unknown_subject_error, "UnknownSubjectError");
exception!(unknown_action_error, "UnknownActionError");
exception!(invalid_request_error, "InvalidRequestError");
exception!(capacity_error, "CapacityError");
exception!(internal_error, "InternalError");
exception!(approval_error, "ApprovalError");

/// Build the Python exception for a core error.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let (cls, msg, path) = match &e {
            Error::Policy { path, message } => {
                (policy_error(py)?, message.clone(), Some(path.clone()))
            }
            Error::Provision(m) => (provision_error(py)?, m.clone(), None),
            Error::UnknownSubject(m) => (unknown_subject_error(py)?, m.clone(), None),
            Error::InvalidArgument(m) => (invalid_request_error(py)?, m.clone(), None),
            Error::Capacity(m) => (capacity_error(py)?, m.clone(), None),
        };
        let kwargs = PyDict::new(py);
        if let Some(p) = path {
            kwargs.set_item("path", p)?;
        }
        let obj = cls.call((msg,), Some(&kwargs))?;
        Ok(PyErr::from_value(obj))
    })();
    made.unwrap_or_else(|err| err)
}

/// A refused approval as `charter.errors.ApprovalError(reason, message)`
/// (a malformed argument as `InvalidRequestError`).
pub(crate) fn approval(py: Python<'_>, e: charter_core::approval::ApprovalError) -> PyErr {
    use charter_core::approval::Refusal;
    if e.refusal == Refusal::InvalidArgument {
        return to_py(py, Error::InvalidArgument(e.message));
    }
    match approval_error(py).and_then(|c| c.call1((e.refusal.as_str(), e.message))) {
        Ok(obj) => PyErr::from_value(obj),
        Err(err) => err,
    }
}

/// An internal failure (a caught panic) as `charter.InternalError`.
#[cold]
pub(crate) fn internal(py: Python<'_>, what: &str) -> PyErr {
    match internal_error(py).and_then(|c| c.call1((what.to_string(),))) {
        Ok(obj) => PyErr::from_value(obj),
        Err(_) => PyRuntimeError::new_err(what.to_string()),
    }
}

/// Extension: `result.py_err(py)?`.
pub(crate) trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    #[inline]
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
