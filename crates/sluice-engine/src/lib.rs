//! Runs one hunt task: DataFusion over object_store in a read-only sandbox, the hunt → SQL
//! compiler, SQL validation with line and column, synthetic lakes, and result writing. Knows
//! nothing of jobs or databases.

pub mod bytecache;
pub mod counting;
mod engine;
mod error;
pub mod generate;
pub mod hunt;
pub mod isolate;
pub mod lakestore;
pub mod metrics;
pub mod s3;
pub mod sys;
pub mod validate;

pub use engine::{
    Engine, EngineConfig, LAKE_COLUMN, LakeRef, ScanMember, ScanOutputs, ScanRun, TaskOutput,
    TaskRun, is_result_key, result_key, results_store,
};
pub use error::EngineError;
pub use hunt::{CompiledHunt, HuntSpec, LakeSelector, compile};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use std::sync::Arc;

/// The stored form of a lake schema (the store keeps it as opaque JSON).
pub fn schema_to_json(schema: &Schema) -> serde_json::Value {
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

pub fn schema_from_json(v: &serde_json::Value) -> Result<SchemaRef, EngineError> {
    serde_json::from_value::<Schema>(v.clone())
        .map(Arc::new)
        .map_err(|e| EngineError::User(format!("stored lake schema is unreadable: {e}")))
}
