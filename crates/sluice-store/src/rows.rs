//! Rows as both databases return them, decoded once: one `#[derive(sqlx::FromRow)]` struct per
//! table serves PostgreSQL and SQLite, and [`read`] turns it into the model type.
//!
//! Timestamps are [`Ts`]: `timestamptz` in PostgreSQL, integer microseconds since the epoch in
//! SQLite (sqlx's own SQLite encoding of `DateTime` is RFC 3339 text, which neither sorts by
//! instant across offsets nor matches the migrations).

use crate::error::{Result, StoreError};
use crate::model::Lease;
use crate::model::{
    ApiToken, BreakerRow, Budget, ClaimedTask, ConsoleSession, Event, IntakeHold, Job, Lake,
    Leadership, Pause, PauseTarget, Role, Schedule, Task,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_core::state::JobCounts;
use sluice_core::{JobId, JobState, LeaseToken, TaskId, TaskState};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, FromRow, Postgres, Row, Sqlite, Type};

/// A point in time as each database keeps it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ts(pub DateTime<Utc>);

impl From<Ts> for DateTime<Utc> {
    fn from(t: Ts) -> Self {
        t.0
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(v: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(<DateTime<Utc> as Decode<Postgres>>::decode(v)?))
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(v: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let us = <i64 as Decode<Sqlite>>::decode(v)?;
        DateTime::from_timestamp_micros(us)
            .map(Ts)
            .ok_or_else(|| format!("timestamp {us} µs is out of range").into())
    }
}

fn ts(t: Option<Ts>) -> Option<DateTime<Utc>> {
    t.map(|t| t.0)
}

/// A model type read from one row of its table.
pub(crate) trait Decoded: Sized {
    type Row;
    fn decode(row: Self::Row) -> Result<Self>;
}

/// Rows a script uses as they are read.
macro_rules! decoded_as_read {
    ($($t:ty),+) => {$(
        impl Decoded for $t {
            type Row = $t;
            fn decode(r: $t) -> Result<$t> {
                Ok(r)
            }
        }
    )+};
}
decoded_as_read!(
    RunningRow,
    ExpiredRow,
    IntakeRow,
    ClaimRow,
    JobCountsRow,
    Scalar,
    MaybeScalar,
    Text,
    HoldRow,
    Pair,
    DeliveryRow
);

/// Reads a model type from a row of either database.
pub(crate) fn read<'r, T, R>(r: &'r R) -> Result<T>
where
    T: Decoded,
    R: Row,
    T::Row: FromRow<'r, R>,
{
    let row = T::Row::from_row(r).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt(e.to_string())
        }
        e => crate::error::from_sqlx(e),
    })?;
    T::decode(row)
}

/// A state column's value.
pub(crate) fn state<T>(s: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parsed("state", s, parse)
}

fn parsed<T>(what: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}

fn de<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The columns [`JobRow`] reads.
macro_rules! job_cols {
    () => {
        "id, owner, idempotency_key, spec, sql, state, priority, lakes_total, \
    lakes_done, lakes_failed, lakes_cancelled, rows_found, created_at, started_at, finished_at, error, \
    retention_secs, webhook"
    };
}
pub(crate) use job_cols;

#[derive(FromRow)]
pub(crate) struct JobRow {
    id: i64,
    owner: String,
    idempotency_key: Option<String>,
    spec: Value,
    sql: Option<String>,
    state: String,
    priority: i16,
    lakes_total: i64,
    lakes_done: i64,
    lakes_failed: i64,
    lakes_cancelled: i64,
    rows_found: i64,
    created_at: Ts,
    started_at: Option<Ts>,
    finished_at: Option<Ts>,
    error: Option<String>,
    retention_secs: Option<i64>,
    webhook: Option<String>,
}

impl Decoded for Job {
    type Row = JobRow;
    fn decode(r: JobRow) -> Result<Job> {
        Ok(Job {
            id: JobId(r.id),
            owner: r.owner,
            idempotency_key: r.idempotency_key,
            spec: r.spec,
            sql: r.sql,
            state: parsed("job state", &r.state, JobState::parse)?,
            priority: r.priority,
            counts: JobCounts {
                total: r.lakes_total,
                done: r.lakes_done,
                failed: r.lakes_failed,
                cancelled: r.lakes_cancelled,
            },
            rows_found: r.rows_found,
            created_at: r.created_at.0,
            started_at: ts(r.started_at),
            finished_at: ts(r.finished_at),
            error: r.error,
            retention_secs: r.retention_secs,
            webhook: r.webhook,
        })
    }
}

/// A webhook delivery as `webhook_take` leases it.
#[derive(FromRow)]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub job_id: i64,
    pub url: String,
    pub body: Value,
    pub attempts: i32,
}

/// The columns [`TaskRow`] reads.
macro_rules! task_cols {
    () => {
        "id, job_id, lake, scope, state, priority, attempt, max_attempts, run_after, \
    lease_owner, lease_token, lease_expires_at, est_calls, rows_found, result_uri, last_error, \
    created_at, updated_at"
    };
}
pub(crate) use task_cols;

#[derive(FromRow)]
pub(crate) struct TaskRow {
    id: i64,
    job_id: i64,
    lake: String,
    scope: String,
    state: String,
    priority: i16,
    attempt: i32,
    max_attempts: i32,
    run_after: Ts,
    lease_owner: Option<String>,
    lease_token: i64,
    lease_expires_at: Option<Ts>,
    est_calls: i32,
    rows_found: Option<i64>,
    result_uri: Option<String>,
    last_error: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl Decoded for Task {
    type Row = TaskRow;
    fn decode(r: TaskRow) -> Result<Task> {
        Ok(Task {
            id: TaskId(r.id),
            job_id: JobId(r.job_id),
            lake: r.lake,
            scope: r.scope,
            state: parsed("task state", &r.state, TaskState::parse)?,
            priority: r.priority,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_after: r.run_after.0,
            lease_owner: r.lease_owner,
            lease_token: LeaseToken(r.lease_token),
            lease_expires_at: ts(r.lease_expires_at),
            est_calls: r.est_calls,
            rows_found: r.rows_found,
            result_uri: r.result_uri,
            last_error: r.last_error,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct TokenRow {
    id: i64,
    owner: String,
    role: String,
    lakes: Value,
    label: String,
    created_at: Ts,
    revoked_at: Option<Ts>,
}

impl Decoded for ApiToken {
    type Row = TokenRow;
    fn decode(r: TokenRow) -> Result<ApiToken> {
        Ok(ApiToken {
            id: r.id,
            owner: r.owner,
            role: parsed("token role", &r.role, Role::parse)?,
            lakes: de("api_tokens.lakes", r.lakes)?,
            label: r.label,
            created_at: r.created_at.0,
            revoked_at: ts(r.revoked_at),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct SessionRow {
    token_hash: String,
    csrf: String,
    created_at: Ts,
    expires_at: Ts,
}

impl Decoded for ConsoleSession {
    type Row = SessionRow;
    fn decode(r: SessionRow) -> Result<ConsoleSession> {
        Ok(ConsoleSession {
            token_hash: r.token_hash,
            csrf: r.csrf,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ScheduleRow {
    id: i64,
    owner: String,
    name: String,
    request: Value,
    every_secs: Option<i64>,
    cron: Option<String>,
    range_secs: Option<i64>,
    lakes: Value,
    token_hash: Option<String>,
    next_at: Ts,
    paused_at: Option<Ts>,
    paused_by: Option<String>,
    runs: i64,
    last_job_id: Option<i64>,
    last_run_at: Option<Ts>,
    last_error: Option<String>,
    created_at: Ts,
}

impl Decoded for Schedule {
    type Row = ScheduleRow;
    fn decode(r: ScheduleRow) -> Result<Schedule> {
        Ok(Schedule {
            id: r.id,
            owner: r.owner,
            name: r.name,
            request: r.request,
            every_secs: r.every_secs,
            cron: r.cron,
            range_secs: r.range_secs,
            lakes: de("schedules.lakes", r.lakes)?,
            token_hash: r.token_hash,
            next_at: r.next_at.0,
            paused_at: ts(r.paused_at),
            paused_by: r.paused_by,
            runs: r.runs,
            last_job_id: r.last_job_id.map(JobId),
            last_run_at: ts(r.last_run_at),
            last_error: r.last_error,
            created_at: r.created_at.0,
        })
    }
}

/// A running task as SQLite's hand-back and rescue read it before moving it: enough to guard
/// the write with its token and journal the move.
#[derive(FromRow)]
pub(crate) struct RunningRow {
    pub(crate) id: i64,
    pub(crate) job_id: i64,
    pub(crate) scope: String,
    pub(crate) lease_token: i64,
}

/// A running task whose lease expired, as SQLite's rescue reads it.
#[derive(FromRow)]
pub(crate) struct ExpiredRow {
    #[sqlx(flatten)]
    pub(crate) task: RunningRow,
    pub(crate) lease_owner: Option<String>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) crashes: i32,
}

#[derive(FromRow)]
pub(crate) struct LeaderRow {
    name: String,
    holder: String,
    term: i64,
    expires_at: Ts,
    elected_at: Ts,
}

impl Decoded for Leadership {
    type Row = LeaderRow;
    fn decode(r: LeaderRow) -> Result<Leadership> {
        Ok(Leadership {
            name: r.name,
            holder: r.holder,
            term: r.term,
            expires_at: r.expires_at.0,
            elected_at: r.elected_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct LakeRow {
    id: i64,
    name: String,
    url: String,
    scope: String,
    partition_cols: Value,
    schema: Value,
    tags: Value,
    options: Value,
    created_at: Ts,
}

impl Decoded for Lake {
    type Row = LakeRow;
    fn decode(r: LakeRow) -> Result<Lake> {
        Ok(Lake {
            id: r.id,
            name: r.name,
            url: r.url,
            scope: r.scope,
            partition_cols: de("lakes.partition_cols", r.partition_cols)?,
            schema: r.schema,
            tags: de("lakes.tags", r.tags)?,
            options: de("lakes.options", r.options)?,
            created_at: r.created_at.0,
        })
    }
}

/// The columns of a budget row, in [`BudgetRow`]'s order.
macro_rules! budget_cols {
    () => {
        "scope, parent, rate, burst, tokens, refilled_at, adaptive, ramp, dry_until"
    };
}
pub(crate) use budget_cols;

#[derive(FromRow)]
pub(crate) struct BudgetRow {
    scope: String,
    parent: Option<String>,
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Ts,
    adaptive: Option<Value>,
    ramp: Option<Value>,
    dry_until: Option<Ts>,
}

impl Decoded for Budget {
    type Row = BudgetRow;
    fn decode(r: BudgetRow) -> Result<Budget> {
        Ok(Budget {
            scope: r.scope,
            parent: r.parent,
            rate: r.rate,
            burst: r.burst,
            tokens: r.tokens,
            refilled_at: r.refilled_at.0,
            adaptive: r
                .adaptive
                .map(|a| de("budget adaptive state", a))
                .transpose()?,
            ramp: r
                .ramp
                .map(|a| de("budget ramp", a))
                .transpose()?
                .unwrap_or_default(),
            dry_until: ts(r.dry_until),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct BreakerDbRow {
    scope: String,
    detail: Value,
    updated_at: Ts,
}

impl Decoded for BreakerRow {
    type Row = BreakerDbRow;
    fn decode(r: BreakerDbRow) -> Result<BreakerRow> {
        Ok(BreakerRow {
            scope: r.scope,
            breaker: de("breaker state", r.detail)?,
            updated_at: r.updated_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct PauseRow {
    target: String,
    reason: String,
    paused_by: String,
    at: Ts,
}

impl Decoded for Pause {
    type Row = PauseRow;
    fn decode(r: PauseRow) -> Result<Pause> {
        Ok(Pause {
            target: parsed("pause target", &r.target, PauseTarget::parse)?,
            reason: r.reason,
            by: r.paused_by,
            at: r.at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct QuotaRow {
    owner: String,
    max_running: i64,
    set_by: String,
    at: Ts,
}

impl Decoded for crate::model::Quota {
    type Row = QuotaRow;
    fn decode(r: QuotaRow) -> Result<Self> {
        Ok(crate::model::Quota {
            target: sluice_core::QuotaTarget::from_key(&r.owner),
            max_running: r.max_running,
            by: r.set_by,
            at: r.at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct EventRow {
    id: i64,
    at: Ts,
    job_id: Option<i64>,
    task_id: Option<i64>,
    scope: Option<String>,
    kind: String,
    detail: Option<Value>,
}

impl Decoded for Event {
    type Row = EventRow;
    fn decode(r: EventRow) -> Result<Event> {
        Ok(Event {
            id: r.id,
            at: r.at.0,
            job_id: r.job_id.map(JobId),
            task_id: r.task_id.map(TaskId),
            scope: r.scope,
            kind: r.kind,
            detail: r.detail,
        })
    }
}

/// The intake row: closed, reason, by, closed at.
#[derive(FromRow)]
pub(crate) struct IntakeRow {
    closed: bool,
    reason: String,
    closed_by: String,
    closed_at: Option<Ts>,
}

/// The hold on intake, if it is closed.
pub(crate) fn intake_hold(r: IntakeRow) -> Option<IntakeHold> {
    Some(IntakeHold {
        reason: r.reason,
        by: r.closed_by,
        at: r.closed_at.filter(|_| r.closed)?.0,
    })
}

/// A budget's adaptive state as stored (JSON in both databases).
pub(crate) fn adaptive_json(b: &Budget) -> Option<Value> {
    b.adaptive.and_then(|a| serde_json::to_value(a).ok())
}

/// When a lease taken at `now` for `lease` ends.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::Invalid(format!("lease duration {lease:?} out of range")))
}

/// A task a claim took: `id, job_id, owner, lake, scope, attempt, max_attempts, crashes,
/// lease_token, shareable` (its lease's end is the claim's, not a column read back).
#[derive(FromRow)]
pub(crate) struct ClaimRow {
    id: i64,
    job_id: i64,
    owner: String,
    lake: String,
    scope: String,
    attempt: i32,
    max_attempts: i32,
    crashes: i32,
    lease_token: i64,
    shareable: bool,
}

impl ClaimRow {
    pub(crate) fn leased_until(self, expires: DateTime<Utc>) -> ClaimedTask {
        ClaimedTask {
            lease: Lease {
                task_id: TaskId(self.id),
                token: LeaseToken(self.lease_token),
            },
            job_id: JobId(self.job_id),
            owner: self.owner,
            lake: self.lake,
            scope: self.scope,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            crashes: self.crashes,
            shareable: self.shareable,
            lease_expires_at: expires,
        }
    }
}

/// A job's state and counters, as a script that moves them reads them.
#[derive(FromRow)]
pub(crate) struct JobCountsRow {
    state: String,
    lakes_total: i64,
    lakes_done: i64,
    lakes_failed: i64,
    lakes_cancelled: i64,
}

impl JobCountsRow {
    pub(crate) fn into_parts(self) -> Result<(JobState, JobCounts)> {
        Ok((
            state(&self.state, JobState::parse)?,
            JobCounts {
                total: self.lakes_total,
                done: self.lakes_done,
                failed: self.lakes_failed,
                cancelled: self.lakes_cancelled,
            },
        ))
    }
}

/// One integer column.
#[derive(FromRow)]
pub(crate) struct Scalar(pub i64);

/// Two integer columns.
#[derive(FromRow)]
pub(crate) struct Pair(pub i64, pub i64);

/// One integer column that may be NULL.
#[derive(FromRow)]
pub(crate) struct MaybeScalar(pub Option<i64>);

/// One text column, named `v`.
#[derive(FromRow)]
pub(crate) struct Text {
    pub v: String,
}

/// A hold as the claim reads it: its kind and its pause key or scope.
#[derive(FromRow)]
pub(crate) struct HoldRow {
    kind: String,
    v: String,
    n: Option<i64>,
}

impl HoldRow {
    pub(crate) fn hold(self) -> Result<crate::model::Hold> {
        use crate::model::Hold;
        Ok(match self.kind.as_str() {
            "pause" => Hold::Pause(parsed("pause target", &self.v, PauseTarget::parse)?),
            "breaker" => Hold::Breaker(self.v),
            "dry" => Hold::Dry(self.v),
            "quota" => Hold::Quota(
                sluice_core::QuotaTarget::from_key(&self.v),
                self.n.unwrap_or(0),
            ),
            "running" => Hold::Running(self.v, self.n.unwrap_or(0)),
            other => return Err(StoreError::Corrupt(format!("unknown hold kind {other:?}"))),
        })
    }
}

/// An open job's fairness tag layout, as the rebalance pass reads it.
#[derive(FromRow)]
pub(crate) struct OpenJobRow {
    id: i64,
    owner: String,
    priority: i16,
    stride: i64,
}

impl Decoded for sluice_core::fair::OpenJob {
    type Row = OpenJobRow;
    fn decode(r: OpenJobRow) -> Result<Self> {
        Ok(sluice_core::fair::OpenJob {
            id: r.id,
            owner: r.owner,
            priority: r.priority,
            stride: r.stride,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct FinishedRow {
    id: i64,
    priority: i16,
    state: String,
    created_at: Ts,
    finished_at: Ts,
}

impl Decoded for crate::model::FinishedJob {
    type Row = FinishedRow;
    fn decode(r: FinishedRow) -> Result<Self> {
        Ok(crate::model::FinishedJob {
            id: JobId(r.id),
            priority: r.priority,
            state: state(&r.state, JobState::parse)?,
            created_at: r.created_at.0,
            finished_at: r.finished_at.0,
        })
    }
}
