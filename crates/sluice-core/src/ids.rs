//! Typed ids, so a task id is never passed where a job id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id!(
    /// One user submission (a hunt).
    JobId
);
id!(
    /// One (job, lake) unit of work.
    TaskId
);
id!(
    /// The fencing token of one claim of a task: it grows by one at every claim, so a write
    /// carrying an older token comes from a worker that lost the task and is rejected.
    LeaseToken
);
