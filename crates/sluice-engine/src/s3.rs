//! S3-compatible lakes. Options come from the lake row (`endpoint`, `region`, `allow_http`);
//! credentials from the environment (`AWS_ACCESS_KEY_ID`, …) or instance metadata — never
//! from the registry. object_store's own retries are turned off: a retry is another provider
//! call, and provider calls go through the budget (the provider-guard issue meters them).

use crate::EngineError;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, RetryConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

pub fn store(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, EngineError> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| EngineError::User(format!("s3 url {url} has no bucket")))?;
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        });
    for (k, v) in options {
        b = match k.as_str() {
            "endpoint" => b.with_endpoint(v),
            "region" => b.with_region(v),
            "allow_http" => b.with_allow_http(v == "true"),
            "virtual_hosted_style_request" => b.with_virtual_hosted_style_request(v == "true"),
            "metadata_endpoint" => b.with_metadata_endpoint(v),
            other => {
                return Err(EngineError::User(format!(
                    "unknown s3 lake option {other:?}: use endpoint, region, allow_http, virtual_hosted_style_request or metadata_endpoint"
                )));
            }
        };
    }
    Ok(Arc::new(b.build()?))
}
