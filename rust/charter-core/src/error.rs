//! The one error type of the core. A denial is never an error: it is a
//! [`crate::Decision`]. Errors are for callers that asked for something that
//! cannot be done (a malformed policy, an unknown template, a bad argument).

use thiserror::Error;

/// Every way a core operation can fail. Messages are lower-case, carry user
/// input in backticks, and never name a Rust type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The policy is malformed; `path` points into the document (`roles.analyst.inherits[1]`).
    #[error("{path}: {message}")]
    Policy {
        /// Where in the policy document the problem is.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Provisioning was refused (unknown template, depth exceeded, inactive delegator, ...).
    #[error("{0}")]
    Provision(String),
    /// No live agent or principal by that id or handle.
    #[error("{0}")]
    UnknownSubject(String),
    /// An argument is malformed (a bad id, a negative ttl, mismatched batch lengths).
    #[error("{0}")]
    InvalidArgument(String),
    /// A fixed capacity of the registry is exhausted.
    #[error("{0}")]
    Capacity(String),
}

impl Error {
    /// A policy error at `path`.
    #[cold]
    pub fn policy(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Policy {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
