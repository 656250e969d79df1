//! Engine errors as meanings, and the one place foreign errors are classified: whether a
//! failure is the user's (permanent), the provider's (throttled, frozen: defer, never spend an
//! attempt), a missing object, or transient.

use datafusion::error::DataFusionError;

/// How a refusal of DataFusion's memory pool begins once converted (the engine names the
/// task's memory limit in it).
pub(crate) const RESOURCES_EXHAUSTED: &str = "resources exhausted";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngineError {
    /// The query or spec is wrong: bad SQL, unknown column, forbidden statement. Permanent.
    #[error("{0}")]
    User(String),
    /// A lake or object that does not exist. Permanent for this task.
    #[error("not found: {0}")]
    NotFound(String),
    /// The provider asked us to slow down (429, 503 SlowDown, Throttling).
    #[error("provider throttled: {0}")]
    Throttled(String),
    /// The provider refused the account (403 AccountProblem and kin).
    #[error("provider account frozen: {0}")]
    Frozen(String),
    /// A limit of the task was hit (memory, time, CPU, result size): the same query will hit
    /// it again. The message names the limit.
    #[error("{0}")]
    Limit(String),
    /// Worth trying again later (network, I/O).
    #[error("transient: {0}")]
    Transient(String),
    /// Local I/O outside a query (generator, results folder).
    #[error("i/o: {0}")]
    Io(String),
    /// The provider guard did not let a call go (breaker open, budget exhausted): not the
    /// task's fault; try again after `retry_after`, without spending an attempt.
    #[error("held back: {reason}")]
    Refused {
        reason: String,
        retry_after: std::time::Duration,
    },
    /// The run was cancelled (job cancelled, lease lost, shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The process running the hunt died of something other than a limit it was given (a
    /// signal, an abort, the kernel's out-of-memory killer): maybe the hunt, maybe not.
    #[error("{0}")]
    Crashed(String),
}

/// The guard's refusal, or an error classified where it happened, somewhere in an error's
/// `source()` chain.
fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<EngineError> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<crate::s3::ProviderRefusal>() {
            return Some(EngineError::Refused {
                reason: r.0.to_string(),
                retry_after: r.0.retry_after(chrono::Utc::now()),
            });
        }
        if let Some(c) = e.downcast_ref::<crate::s3::Classified>() {
            return Some(c.0.clone());
        }
        cur = e.source();
    }
    None
}

/// Error codes with which providers refuse a whole account (DESIGN.md section 5).
const FROZEN_MARKERS: [&str; 4] = [
    "AccountProblem",
    "AllAccessDisabled",
    "AccountIsDisabled",
    "accountDisabled",
];
const THROTTLE_MARKERS: [&str; 6] = [
    "SlowDown",
    "Throttl",
    "TooManyRequests",
    "429",
    "503",
    "RequestLimitExceeded",
];

/// A provider answer quoted in an error's text (a reader that flattened the error to a
/// string): frozen or throttled, never the user's fault.
fn provider_text(text: &str) -> Option<EngineError> {
    if FROZEN_MARKERS.iter().any(|m| text.contains(m)) {
        Some(EngineError::Frozen(text.to_string()))
    } else if [
        "SlowDown",
        "Throttl",
        "TooManyRequests",
        "RequestLimitExceeded",
    ]
    .iter()
    .any(|m| text.contains(m))
    {
        Some(EngineError::Throttled(text.to_string()))
    } else {
        None
    }
}

fn classify_object_store(e: &object_store::Error) -> EngineError {
    if let Some(r) = refusal_in(e) {
        return r;
    }
    let text = e.to_string();
    if FROZEN_MARKERS.iter().any(|m| text.contains(m)) {
        return EngineError::Frozen(text);
    }
    match e {
        object_store::Error::NotFound { .. } => EngineError::NotFound(text),
        _ if THROTTLE_MARKERS.iter().any(|m| text.contains(m)) => EngineError::Throttled(text),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            EngineError::User(format!("access denied: {text}"))
        }
        object_store::Error::InvalidPath { .. } | object_store::Error::NotSupported { .. } => {
            EngineError::User(text)
        }
        _ => EngineError::Transient(text),
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        // A refusal of the provider guard anywhere in the chain (through object_store,
        // parquet or arrow errors) decides first.
        if let Some(r) = refusal_in(&e) {
            return r;
        }
        // The root cause decides; the message keeps DataFusion's whole context.
        let message = e.to_string();
        let root = e.find_root();
        match root {
            DataFusionError::ObjectStore(os) => classify_object_store(os),
            DataFusionError::External(inner) => {
                if let Some(os) = inner.downcast_ref::<object_store::Error>() {
                    classify_object_store(os)
                } else if let Some(pq) =
                    inner.downcast_ref::<datafusion::parquet::errors::ParquetError>()
                {
                    provider_text(&message)
                        .unwrap_or_else(|| EngineError::User(format!("unreadable data: {pq}")))
                } else {
                    EngineError::Transient(message)
                }
            }
            DataFusionError::ResourcesExhausted(m) => {
                EngineError::Limit(format!("{RESOURCES_EXHAUSTED}: {m}"))
            }
            DataFusionError::IoError(_) => EngineError::Transient(message),
            DataFusionError::ParquetError(pq) => provider_text(&message)
                .unwrap_or_else(|| EngineError::User(format!("unreadable data: {pq}"))),
            _ => EngineError::User(message),
        }
    }
}

impl From<datafusion::parquet::errors::ParquetError> for EngineError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        EngineError::Io(format!("parquet: {e}"))
    }
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EngineError::User(format!("arrow: {e}"))
    }
}

impl From<object_store::path::Error> for EngineError {
    fn from(e: object_store::path::Error) -> Self {
        EngineError::User(format!("bad lake path: {e}"))
    }
}

impl From<object_store::Error> for EngineError {
    fn from(e: object_store::Error) -> Self {
        classify_object_store(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_answers_are_classified() {
        let generic = |s: &str| object_store::Error::Generic {
            store: "S3",
            source: s.to_string().into(),
        };
        let denied = |s: &str| object_store::Error::PermissionDenied {
            path: "x".into(),
            source: s.to_string().into(),
        };
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "404".into(),
        };
        // (the provider's error, the class it converts to)
        type Class = fn(String) -> EngineError;
        let cases: [(object_store::Error, Class); 7] = [
            (
                generic("Error performing GET: 503 Service Unavailable <Code>SlowDown</Code>"),
                EngineError::Throttled,
            ),
            (generic("429 Too Many Requests"), EngineError::Throttled),
            (
                denied("403 <Code>AccountProblem</Code>"),
                EngineError::Frozen,
            ),
            (generic("403 AllAccessDisabled"), EngineError::Frozen),
            (not_found, EngineError::NotFound),
            (denied("403 AccessDenied"), EngineError::User),
            (generic("connection reset by peer"), EngineError::Transient),
        ];
        for (err, class) in cases {
            let text = err.to_string();
            let via_df = EngineError::from(DataFusionError::ObjectStore(Box::new(err)));
            assert_eq!(
                std::mem::discriminant(&via_df),
                std::mem::discriminant(&class(String::new())),
                "{text} -> {via_df:?}"
            );
        }
        let plan = EngineError::from(DataFusionError::Plan("no field named x".into()));
        assert!(matches!(plan, EngineError::User(_)));
        let mem = EngineError::from(DataFusionError::ResourcesExhausted("pool".into()));
        assert!(matches!(mem, EngineError::Limit(_)));
        let ctx = DataFusionError::Context(
            "scanning lake".into(),
            Box::new(DataFusionError::ObjectStore(Box::new(generic(
                "503 SlowDown",
            )))),
        );
        assert!(matches!(EngineError::from(ctx), EngineError::Throttled(_)));
    }
}
