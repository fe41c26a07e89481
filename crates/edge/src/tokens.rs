//! Every unrevoked token, in memory: a token check (the API's, a private endpoint's) is a hash
//! and a lookup, never a query. A flood of forged tokens therefore costs the database nothing,
//! and checks go on while the database is away.
//!
//! The cache follows the store's announcements like the routing table: each token created or
//! revoked is announced ([`RouteEvent::Token`], with `NOTIFY` on PostgreSQL so every process
//! hears of it), and a lost connection reloads everything. The API applies its own changes
//! before it answers, so on the server that revoked a token it is refused from the next
//! request; other servers follow within a notification's delay.
//!
//! A live tail watches its token through [`Tokens::revocations`]: it ends when the token is
//! revoked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use picloud_store::{AnyStore, RouteEvent, StoreError, StoredToken, Tenant};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "pc_";

/// A new random token: the prefix and 32 random bytes in hex.
///
/// # Errors
///
/// When the operating system has no randomness to give.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling: the token presented, resolved.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub token_name: String,
    /// `None` for an admin token.
    pub tenant_id: Option<i64>,
    pub admin: bool,
}

impl Principal {
    /// Whether this caller may act on `tenant`'s objects.
    pub fn can_reach(&self, tenant: &Tenant) -> bool {
        self.admin || self.tenant_id == Some(tenant.id)
    }

    /// 403 unless this is an admin token.
    ///
    /// # Errors
    ///
    /// [`ApiError::Forbidden`] for a tenant's token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs an admin token".into()))
        }
    }
}

/// Resolves the `Authorization: Bearer …` header to an unrevoked token, from the token cache
/// (no query: see [`crate::tokens`]).
///
/// # Errors
///
/// 401 when the header is missing or malformed, or names no unrevoked token.
pub fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing token: send `Authorization: Bearer <token>`",
        ));
    };
    // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are `Bearer`.
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header: use `Bearer <token>`",
        ))?;
    tokens
        .resolve(token)
        .ok_or(ApiError::Unauthorized("unknown or revoked token"))
}

#[derive(Debug, Default)]
struct Table {
    by_hash: HashMap<String, Principal>,
    hash_by_id: HashMap<i64, String>,
}

impl Table {
    fn insert(&mut self, token: StoredToken) {
        self.remove(token.id);
        if token.revoked_at.is_some() {
            return;
        }
        self.hash_by_id.insert(token.id, token.hash.clone());
        self.by_hash.insert(
            token.hash,
            Principal {
                token_id: token.id,
                token_name: token.name,
                tenant_id: token.tenant_id,
                admin: token.admin,
            },
        );
    }

    fn remove(&mut self, id: i64) -> bool {
        match self.hash_by_id.remove(&id) {
            Some(hash) => self.by_hash.remove(&hash).is_some(),
            None => false,
        }
    }
}

/// The token cache; see the module documentation.
#[derive(Debug)]
pub struct Tokens {
    table: RwLock<Table>,
    /// Held by each update from its read of the store to its write of the table (as in the
    /// routing table): a stale read never overwrites a newer change.
    updating: tokio::sync::Mutex<()>,
    /// Bumped whenever a token leaves the cache.
    removed: tokio::sync::watch::Sender<u64>,
}

impl Tokens {
    fn empty() -> Self {
        Self {
            table: RwLock::default(),
            updating: tokio::sync::Mutex::default(),
            removed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Who presents `secret`, if it is an unrevoked token.
    pub fn resolve(&self, secret: &str) -> Option<Principal> {
        let hash = hash_token(secret);
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.by_hash.get(&hash).cloned()
    }

    /// Whether the token `id` is still unrevoked.
    pub fn is_live(&self, id: i64) -> bool {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.hash_by_id.contains_key(&id)
    }

    /// Changes each time tokens leave the cache: wait on it, then ask [`Tokens::is_live`].
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.removed.subscribe()
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn removed_some(&self) {
        self.removed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Replaces everything with the store's unrevoked tokens.
    ///
    /// # Errors
    ///
    /// When the store fails; the cache is then unchanged.
    pub async fn reload(&self, store: &AnyStore) -> Result<(), StoreError> {
        let _updating = self.updating.lock().await;
        let tokens = store.active_tokens().await?;
        let mut fresh = Table::default();
        for token in tokens {
            fresh.insert(token);
        }
        let lost = {
            let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
            let lost = table
                .hash_by_id
                .keys()
                .any(|id| !fresh.hash_by_id.contains_key(id));
            *table = fresh;
            lost
        };
        if lost {
            self.removed_some();
        }
        Ok(())
    }

    /// Brings the cache up to date with one change: a token's, or everything's.
    ///
    /// # Errors
    ///
    /// When the store fails; the cache is then unchanged.
    pub async fn apply(&self, store: &AnyStore, event: RouteEvent) -> Result<(), StoreError> {
        match event {
            RouteEvent::Token(id) => {
                let _updating = self.updating.lock().await;
                let token = store.stored_token(id).await?;
                let removed = {
                    let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
                    match token {
                        Some(token) if token.revoked_at.is_none() => {
                            table.insert(token);
                            false
                        }
                        _ => table.remove(id),
                    }
                };
                if removed {
                    self.removed_some();
                }
                Ok(())
            }
            // A tenant's change may have taken its tokens with it (a deletion cascades to them
            // without announcing each): reload all, which tenants' rare changes can afford.
            RouteEvent::Resync | RouteEvent::Tenant(_) => self.reload(store).await,
            RouteEvent::Function(_) | RouteEvent::Schedule(_) => Ok(()),
        }
    }
}

/// Loads the token cache and keeps it current for as long as the runtime runs: subscribes to
/// changes first, loads every unrevoked token, then applies each change; a change that cannot
/// be applied (the database is away) is retried as a full reload every second.
///
/// # Errors
///
/// When the first load fails.
pub async fn start_tokens(store: AnyStore) -> Result<Arc<Tokens>, StoreError> {
    let mut watch = store.watch_routes().await?;
    let tokens = Arc::new(Tokens::empty());
    tokens.reload(&store).await?;
    let kept = Arc::downgrade(&tokens);
    tokio::spawn(async move {
        loop {
            let mut event = watch.next().await;
            let Some(tokens) = kept.upgrade() else { return };
            while let Err(e) = tokens.apply(&store, event).await {
                tracing::warn!(error = %e, "cannot update the token cache; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                event = RouteEvent::Resync;
            }
        }
    });
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: i64, secret: &str, revoked: bool) -> StoredToken {
        StoredToken {
            id,
            tenant_id: Some(7),
            name: format!("t{id}"),
            admin: false,
            hash: hash_token(secret),
            revoked_at: revoked.then_some(1),
        }
    }

    #[test]
    fn a_token_resolves_until_it_is_removed() {
        let tokens = Tokens::empty();
        let revocations = tokens.revocations();
        {
            let mut table = tokens.table.write().expect("lock");
            table.insert(stored(1, "pc_one", false));
            table.insert(stored(2, "pc_two", true));
        }
        let one = tokens.resolve("pc_one").expect("live");
        assert_eq!((one.token_id, one.tenant_id), (1, Some(7)));
        assert!(tokens.resolve("pc_two").is_none(), "revoked");
        assert!(tokens.resolve("pc_nobody").is_none());
        assert!(tokens.is_live(1) && !tokens.is_live(2));
        assert!(!revocations.has_changed().expect("open"));
        let removed = tokens.table.write().expect("lock").remove(1);
        assert!(removed);
        tokens.removed_some();
        assert!(revocations.has_changed().expect("open"));
        assert!(tokens.resolve("pc_one").is_none() && !tokens.is_live(1));
        assert_eq!(tokens.len(), 0);
    }
}
