//! The lake registry as a researcher sees it: only the lakes open to their token.

use crate::jobs::json;
use crate::wire::LakeView;
use crate::{Api, ApiError, Caller};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

#[utoipa::path(get, path = "/v1/lakes", tag = "lakes", security(("bearer" = [])),
    responses(
        (status = 200, description = "The lakes open to the token, by name", body = Vec<LakeView>),
        crate::wire::Unauthorized,
    ))]
pub(crate) async fn list(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    let lakes: Vec<LakeView> = api
        .store
        .lake_list()
        .await?
        .iter()
        .filter(|l| caller.lakes.allows(&l.tags))
        .map(LakeView::from)
        .collect();
    Ok(json(StatusCode::OK, &lakes))
}
