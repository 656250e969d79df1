//! Bearer tokens: `slc_` and 64 hex digits of randomness, shown once; the store keeps the
//! SHA-256 hash. A request's [`Caller`] comes from its `Authorization: Bearer` header, or,
//! for a request made inside the process (the CLI on the database), from the request itself.

use crate::{Api, ApiError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sluice_store::{LakeAccess, Role, StoreError};

const PREFIX: &str = "slc_";

/// A new random token (to show once; store only its [`hash_token`]).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// The hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling: the owner their jobs belong to, what they may do, and which lakes they may
/// hunt, list and read results of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub owner: String,
    pub role: Role,
    pub lakes: LakeAccess,
    /// The hash of the token the caller came with; `None` in this process (the CLI on the
    /// database).
    pub token: Option<String>,
}

impl Caller {
    /// Whether the caller may see and act on jobs of `owner`: their own, or any as an
    /// operator or admin.
    pub fn may_see(&self, owner: &str) -> bool {
        self.role >= Role::Operator || self.owner == owner
    }
}

/// A token as typed or sent: `slc_` and 64 characters, surrounding blanks ignored; 401 if not.
pub(crate) fn parse_token(raw: &str) -> Result<&str, ApiError> {
    Some(raw.trim())
        .filter(|t| t.starts_with(PREFIX) && t.len() == PREFIX.len() + 64)
        .ok_or_else(|| ApiError::Unauthorized("malformed bearer token".into()))
}

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Caller, ApiError> {
        // The `sluice` CLI on the database calls this router in its own process, as the user
        // running it (who could change the database directly anyway). Extensions are set by
        // code in the process, never by a request from the network, so an HTTP request cannot
        // claim a caller this way.
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // A browser signed in to the console: its session cookie (changes need its CSRF
            // token too).
            if crate::console::cookie(&parts.headers) != crate::console::SessionCookie::None {
                return crate::console::cookie_caller(api, &parts.method, &parts.headers).await;
            }
            return Err(ApiError::Unauthorized(
                "an Authorization: Bearer token is required".into(),
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("malformed bearer token".into()))
            .and_then(parse_token)?;
        let hash = hash_token(token);
        match api.store.token_find(&hash).await {
            Ok(t) => Ok(Caller {
                owner: t.owner,
                role: t.role,
                lakes: t.lakes,
                token: Some(hash),
            }),
            Err(StoreError::NotFound(_)) => {
                Err(ApiError::Unauthorized("unknown or revoked token".into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_to_64_hex_digits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == 68);
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash_token(&a));
        assert_ne!(h, hash_token(&b));
    }

    #[test]
    fn operators_see_every_job_researchers_their_own() {
        let r = Caller {
            owner: "alice".into(),
            role: Role::Researcher,
            lakes: LakeAccess::all(),
            token: None,
        };
        assert!(r.may_see("alice") && !r.may_see("bob"));
        for role in [Role::Operator, Role::Admin] {
            assert!(Caller { role, ..r.clone() }.may_see("bob"));
        }
    }
}
