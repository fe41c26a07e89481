//! The admin token created at first start (tokens themselves: `picloud_edge::tokens`).

use picloud_edge::tokens::{generate_token, hash_token};

use crate::store::{Store, StoreError};

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no randomness for a token: {0}")]
    Random(#[from] getrandom::Error),
    #[error("PICLOUD_ADMIN_TOKEN is too short: use at least 24 characters")]
    TooShort,
    #[error(
        "PICLOUD_ADMIN_TOKEN is a token this installation has already had (revoked, or another \
         token's secret), and no admin token is left: choose a new one, or unset it to have one \
         generated and printed (docs/operations.md, \"A lost admin token\")"
    )]
    Taken,
}

/// At first start (no admin token exists yet) creates one and returns it, to be printed once:
/// `chosen` (from `PICLOUD_ADMIN_TOKEN`, for automation) or a fresh random one. Returns `None`
/// when an admin token already exists; `chosen` is then ignored.
///
/// # Errors
///
/// When the store fails, or `chosen` is shorter than 24 characters.
pub async fn bootstrap_admin(
    store: &dyn Store,
    chosen: Option<&str>,
) -> Result<Option<String>, BootstrapError> {
    let existing = store.list_tokens(None).await?;
    if existing.iter().any(|t| t.admin && t.revoked_at.is_none()) {
        if let Some(chosen) = chosen {
            let hash = hash_token(chosen);
            let live = store.active_tokens().await?;
            if !live.iter().any(|t| t.admin && t.hash == hash) {
                tracing::warn!(
                    "PICLOUD_ADMIN_TOKEN is not one of this installation's admin tokens and is \
                     ignored: it only chooses the first one. Use an existing admin token, or \
                     make another with `POST /api/v1/admin/tokens`."
                );
            }
        }
        return Ok(None);
    }
    let token = match chosen {
        Some(t) if t.len() < 24 => return Err(BootstrapError::TooShort),
        Some(t) => t.to_string(),
        None => generate_token()?,
    };
    match store
        .create_token(None, "admin", &hash_token(&token), true)
        .await
    {
        Ok(_) => Ok(Some(token)),
        // The hash is unique: the chosen secret was a token once.
        Err(StoreError::Conflict(_)) if chosen.is_some() => Err(BootstrapError::Taken),
        Err(e) => Err(e.into()),
    }
}

/// Creates the admin token at first start and prints it, once: the operator's only chance to
/// see it (only its hash is stored).
///
/// # Errors
///
/// When the store fails or the chosen token is too short.
pub async fn announce_admin(store: &dyn Store, chosen: Option<&str>) -> Result<(), BootstrapError> {
    match bootstrap_admin(store, chosen).await? {
        // Its owner has it already: printing it would only put it in a log.
        Some(_) if chosen.is_some() => println!(
            "Created the admin token you chose in PICLOUD_ADMIN_TOKEN (only its hash is stored)."
        ),
        Some(token) => println!(
            "Created the admin token (shown once, only its hash is stored):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` or `export PICLOUD_TOKEN=<token>` for the CLI.\n\
             Lost it? `picloud admin create-token` (with this server's --data-dir or \
             --database-url) makes another."
        ),
        None => {}
    }
    Ok(())
}
