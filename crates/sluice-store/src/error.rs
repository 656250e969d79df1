//! Store errors as meanings; sqlx errors are converted in exactly one place ([`from_sqlx`]).

use sluice_core::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The request contradicts stored state, e.g. the same idempotency key with another body.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database could not be reached or the transaction lost a race (deadlock,
    /// serialization failure): the same call may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Intake is closed (`sluice drain`): new jobs are refused until it is reopened.
    #[error("intake closed: {0}")]
    Closed(String),
    /// The database answers but this process should not serve yet (schema behind the build).
    #[error("not ready: {0}")]
    NotReady(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLSTATEs after which the transaction can simply be run again.
const RETRYABLE_SQLSTATE: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available
    "57P01", // admin_shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now
    "08000", "08003", "08006", "08001", "08004", // connection exceptions
];

pub(crate) fn from_sqlx(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &e {
        E::RowNotFound => StoreError::NotFound("row".into()),
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => {
            StoreError::Unavailable(e)
        }
        E::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("already exists: {}", db.message()))
        }
        E::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // SQLite: 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED.
            if RETRYABLE_SQLSTATE.contains(&code) || code == "5" || code == "6" {
                StoreError::Unavailable(e)
            } else {
                StoreError::Database(e)
            }
        }
        _ => StoreError::Database(e),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
