//! What a transaction script needs of a database, so that a script is written once for
//! PostgreSQL and SQLite (River's driver layering: the backends differ in single statements,
//! not in business rules).
//!
//! SQL in shared scripts is portable: `$1 … $n` placeholders (sqlx's SQLite driver binds them
//! by number), no casts on parameters, timestamps bound as [`Ts`], JSON as
//! `serde_json::Value`. A script that must lock a row it reads appends [`Db::FOR_UPDATE`]
//! (SQLite's `BEGIN IMMEDIATE` already serialises writers).
//!
//! Text is bound owned (`String`) or `&'static str`: a borrowed `&str` would tie the
//! statement to the borrow, which the trait's bounds cannot name.
//!
//! Generic code cannot name sqlx's per-database bounds once for all (`i64: Encode<'_, D>` is
//! not implied by any bound on `D`), so [`Db`] carries them as supertraits of its own: `Bind<T>`
//! for every type a script binds, `Reads<T>` for every row type it reads.

use crate::error::{Result, StoreError, from_sqlx};
use crate::rows::{Decoded, Ts, read};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::{Database, Encode, FromRow, Postgres, Sqlite, Type};

/// A statement of database `D` with its arguments.
pub(crate) type Q<'q, D> = Query<'q, D, <D as Database>::Arguments>;

/// `T` can be bound as a parameter of `Self`'s statements.
pub(crate) trait Bind<T>: Database {
    fn bind<'q>(q: Q<'q, Self>, v: T) -> Q<'q, Self>;
}

impl<D: Database, T> Bind<T> for D
where
    T: for<'t> Encode<'t, D> + Type<D>,
{
    fn bind<'q>(q: Q<'q, Self>, v: T) -> Q<'q, Self> {
        q.bind(v)
    }
}

/// `T` can be read from a row of `Self`.
pub(crate) trait Reads<T>: Database {
    fn read(r: &Self::Row) -> Result<T>;
}

impl<D: Database, T: Decoded> Reads<T> for D
where
    T::Row: for<'r> FromRow<'r, D::Row>,
{
    fn read(r: &D::Row) -> Result<T> {
        read(r)
    }
}

/// Binds on a statement of any [`Db`]: `sqlx::query(SQL).arg(a).arg(b)`.
pub(crate) trait Args<D: Database>: Sized {
    fn arg<T>(self, v: T) -> Self
    where
        D: Bind<T>;
}

impl<'q, D: Database> Args<D> for Q<'q, D> {
    fn arg<T>(self, v: T) -> Self
    where
        D: Bind<T>,
    {
        D::bind(self, v)
    }
}

/// A database a shared script runs on.
#[async_trait]
pub(crate) trait Db:
    Database
    + Bind<i64>
    + Bind<Option<i64>>
    + Bind<i32>
    + Bind<i16>
    + Bind<f64>
    + Bind<bool>
    + Bind<&'static str>
    + Bind<Option<&'static str>>
    + Bind<String>
    + Bind<Option<String>>
    + Bind<Ts>
    + Bind<Option<Ts>>
    + Bind<Value>
    + Bind<Option<Value>>
    + Reads<crate::model::Budget>
    + Reads<crate::model::BreakerRow>
    + Reads<crate::model::Job>
    + Reads<crate::model::Task>
    + Reads<crate::model::ApiToken>
    + Reads<crate::model::ConsoleSession>
    + Reads<crate::model::Schedule>
    + Reads<crate::model::Lake>
    + Reads<crate::model::Pause>
    + Reads<crate::model::Quota>
    + Reads<crate::model::Leadership>
    + Reads<crate::model::FinishedJob>
    + Reads<crate::rows::IntakeRow>
    + Reads<crate::rows::JobCountsRow>
    + Reads<crate::rows::Scalar>
    + Reads<crate::rows::MaybeScalar>
    + Reads<sluice_core::fair::OpenJob>
    + Reads<crate::rows::Text>
    + Reads<crate::rows::HoldRow>
    + Reads<crate::rows::Pair>
    + Reads<crate::rows::DeliveryRow>
    + Reads<crate::model::Event>
{
    /// Appended to a `SELECT` whose rows the script will update.
    const FOR_UPDATE: &'static str;
    /// Around a timestamp column: its seconds since the epoch (a number).
    const EPOCH_SECS: (&'static str, &'static str);

    async fn execute(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<u64>;
    async fn fetch_one(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<Self::Row>;
    async fn fetch_optional(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<Option<Self::Row>>;
    async fn fetch_all(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<Vec<Self::Row>>;
}

macro_rules! impl_db {
    ($db:ty, $for_update:literal, $epoch:expr) => {
        #[async_trait]
        impl Db for $db {
            const FOR_UPDATE: &'static str = $for_update;
            const EPOCH_SECS: (&'static str, &'static str) = $epoch;

            async fn execute(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<u64> {
                Ok(q.execute(c).await.map_err(from_sqlx)?.rows_affected())
            }
            async fn fetch_one(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<Self::Row> {
                q.fetch_one(c).await.map_err(from_sqlx)
            }
            async fn fetch_optional(
                q: Q<'_, Self>,
                c: &mut Self::Connection,
            ) -> Result<Option<Self::Row>> {
                q.fetch_optional(c).await.map_err(from_sqlx)
            }
            async fn fetch_all(q: Q<'_, Self>, c: &mut Self::Connection) -> Result<Vec<Self::Row>> {
                q.fetch_all(c).await.map_err(from_sqlx)
            }
        }
    };
}

impl_db!(Postgres, " FOR UPDATE", ("EXTRACT(EPOCH FROM ", ")"));
// Timestamps are integer microseconds there.
impl_db!(Sqlite, "", ("(", " / 1000000)"));

/// A JSON value of a model type, for a bind.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::Invalid(e.to_string()))
}
