//! The lake registry as a researcher sees it: only the lakes open to their token.

use crate::jobs::views;
use crate::wire::LakeView;
use crate::{Api, ApiError, Caller};
use axum::extract::State;
use axum::response::Response;

#[utoipa::path(get, path = "/v1/lakes", tag = "lakes", security(("bearer" = [])),
    responses(
        (status = 200, description = "The lakes open to the token, by name", body = Vec<LakeView>),
        crate::wire::Unauthorized,
    ))]
pub(crate) async fn list(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    let lakes = api.store.lake_list().await?;
    let open = lakes.iter().filter(|l| caller.lakes.allows(&l.tags));
    Ok(views(open.map(LakeView::from)))
}
