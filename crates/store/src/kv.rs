//! The tenant's key-value store as scripts see it (`kv_get`, `kv_set`, `kv_delete`,
//! `kv_list`): the host side of those calls, with the size caps and quotas an operator needs
//! so that one tenant cannot fill the database.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use picloud_shared::host::{HostCall, HostCalls, HostFuture, HostReply};

use crate::store::{AnyStore, KvQuota, StoreError};

/// Sizes the key-value store accepts. Every field has a conservative default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key in bytes (default 256).
    pub max_key_bytes: usize,
    /// Largest value, as JSON text, in bytes (default 64 KiB).
    pub max_value_bytes: usize,
    /// Most keys one tenant may hold (default 10,000).
    pub max_keys: u64,
    /// Most bytes of keys and values one tenant may hold (default 16 MiB).
    pub max_bytes: u64,
    /// Most keys one `kv_list` call returns (default 1,000).
    pub max_list: u32,
    /// Key-value calls per second one tenant's invocations may make together, all functions
    /// and invocations counted (GCRA, bursts of up to a second's worth); 0 = no limit
    /// (default 2,000). Past it a call fails with a clear error the script may catch.
    pub ops_per_second: u32,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 64 << 10,
            max_keys: 10_000,
            max_bytes: 16 << 20,
            max_list: 1_000,
            ops_per_second: 2_000,
        }
    }
}

impl KvLimits {
    fn quota(&self) -> KvQuota {
        KvQuota {
            max_keys: self.max_keys,
            max_bytes: self.max_bytes,
        }
    }

    /// Refuses a call whose key, prefix or value is past these sizes, before any store sees it.
    fn check(&self, call: &HostCall) -> Result<(), String> {
        match call {
            HostCall::KvGet { key } | HostCall::KvDelete { key } => self.check_key(key),
            HostCall::KvSet { key, value } => {
                self.check_key(key)?;
                if value.len() > self.max_value_bytes {
                    return Err(format!(
                        "the value is {} bytes as JSON; the limit is {}",
                        value.len(),
                        self.max_value_bytes
                    ));
                }
                Ok(())
            }
            HostCall::KvList { prefix, after, .. } => {
                self.check_prefix(prefix)?;
                after.as_deref().map_or(Ok(()), |a| self.check_prefix(a))
            }
        }
    }

    fn check_key(&self, key: &str) -> Result<(), String> {
        if key.is_empty() {
            return Err("the key must not be empty".into());
        }
        self.check_prefix(key)
    }

    fn check_prefix(&self, key: &str) -> Result<(), String> {
        if key.len() > self.max_key_bytes {
            return Err(format!(
                "the key is {} bytes; the limit is {}",
                key.len(),
                self.max_key_bytes
            ));
        }
        if key.contains('\0') {
            return Err("the key must not contain NUL characters".into());
        }
        Ok(())
    }
}

/// Every tenant's key-value call rate ([`KvLimits::ops_per_second`]), shared by all the
/// invocations of a server: one tenant's calls never use up another's.
#[derive(Debug)]
pub struct KvRate {
    limiter: Option<DefaultKeyedRateLimiter<i64>>,
    per_second: u32,
}

impl KvRate {
    pub fn new(per_second: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            per_second,
        }
    }

    fn check(&self, tenant_id: i64) -> Result<(), String> {
        match &self.limiter {
            Some(limiter) if limiter.check_key(&tenant_id).is_err() => Err(format!(
                "over this tenant's key-value rate of {} calls per second; try again later",
                self.per_second
            )),
            _ => Ok(()),
        }
    }
}

/// Answers the host calls of one invocation against its tenant's data: the tenant is fixed
/// when the invocation starts, and no call can name another.
#[derive(Debug, Clone)]
pub struct TenantKv {
    store: AnyStore,
    tenant_id: i64,
    limits: KvLimits,
    rate: Option<Arc<KvRate>>,
}

impl TenantKv {
    pub fn new(store: AnyStore, tenant_id: i64, limits: KvLimits) -> Self {
        Self {
            store,
            tenant_id,
            limits,
            rate: None,
        }
    }

    /// Counts this invocation's calls against its tenant's rate in `rate`. Without one (the
    /// default) no rate applies.
    #[must_use]
    pub fn with_rate(mut self, rate: Arc<KvRate>) -> Self {
        self.rate = Some(rate);
        self
    }

    async fn answer(&self, call: HostCall) -> Result<HostReply, String> {
        let t = self.tenant_id;
        if let Some(rate) = &self.rate {
            rate.check(t)?;
        }
        self.limits.check(&call)?;
        match call {
            HostCall::KvGet { key } => {
                let value = self.store.kv_get(t, &key).await.map_err(failed)?;
                Ok(HostReply::Value { value })
            }
            HostCall::KvSet { key, value } => {
                self.store
                    .kv_set(t, &key, &value, &self.limits.quota())
                    .await
                    .map_err(failed)?;
                Ok(HostReply::Done)
            }
            HostCall::KvDelete { key } => {
                let existed = self.store.kv_delete(t, &key).await.map_err(failed)?;
                Ok(HostReply::Deleted { existed })
            }
            HostCall::KvList {
                prefix,
                after,
                limit,
            } => {
                let limit = limit.clamp(1, self.limits.max_list);
                let keys = self
                    .store
                    .kv_list(t, &prefix, after.as_deref(), limit)
                    .await
                    .map_err(failed)?;
                Ok(HostReply::Keys { keys })
            }
        }
    }
}

/// What the script is told when the store fails: a quota's own message, otherwise only that the
/// store is unavailable (the cause is logged, not shown to a tenant).
fn failed(e: StoreError) -> String {
    match e {
        StoreError::Quota(message) => message,
        other => {
            tracing::warn!(error = %other, "key-value call failed");
            "the key-value store is unavailable; try again".into()
        }
    }
}

impl HostCalls for TenantKv {
    fn call(&self, call: HostCall) -> HostFuture<'_> {
        Box::pin(async move { self.answer(call).await.unwrap_or_else(HostReply::error) })
    }
}

/// A key-value store in memory, for `picloud invoke` on a laptop: the calls, sizes, quotas and
/// errors of a tenant's store on a server, without a database. What it holds can be read out
/// ([`MemoryKv::entries`]) to keep it in a file between runs.
#[derive(Debug, Default)]
pub struct MemoryKv {
    entries: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    limits: KvLimits,
}

impl MemoryKv {
    /// A store holding `entries` (key → value as JSON text) under `limits`.
    pub fn new(entries: std::collections::BTreeMap<String, String>, limits: KvLimits) -> Self {
        Self {
            entries: std::sync::Mutex::new(entries),
            limits,
        }
    }

    /// What it holds now: key → value as JSON text.
    pub fn entries(&self) -> std::collections::BTreeMap<String, String> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn answer(&self, call: HostCall) -> Result<HostReply, String> {
        self.limits.check(&call)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match call {
            HostCall::KvGet { key } => Ok(HostReply::Value {
                value: entries.get(&key).cloned(),
            }),
            HostCall::KvSet { key, value } => {
                let old = entries.get(&key).map_or(0, |v| key.len() + v.len());
                let used: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                let keys = entries.len() as u64 + u64::from(old == 0);
                let bytes = (used - old + key.len() + value.len()) as u64;
                // The store's own words (`kv_set` in store.rs).
                if keys > self.limits.max_keys {
                    return Err(format!(
                        "the tenant's key-value store is full: it may hold {} keys",
                        self.limits.max_keys
                    ));
                }
                if bytes > self.limits.max_bytes {
                    return Err(format!(
                        "the tenant's key-value store is full: it may hold {} bytes of keys and \
                         values ({bytes} would be used)",
                        self.limits.max_bytes
                    ));
                }
                entries.insert(key, value);
                Ok(HostReply::Done)
            }
            HostCall::KvDelete { key } => Ok(HostReply::Deleted {
                existed: entries.remove(&key).is_some(),
            }),
            HostCall::KvList {
                prefix,
                after,
                limit,
            } => {
                let limit = limit.clamp(1, self.limits.max_list) as usize;
                let keys = entries
                    .range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .filter(|k| after.as_ref().is_none_or(|a| k.as_str() > a.as_str()))
                    .take(limit)
                    .cloned()
                    .collect();
                Ok(HostReply::Keys { keys })
            }
        }
    }
}

impl HostCalls for MemoryKv {
    fn call(&self, call: HostCall) -> HostFuture<'_> {
        let reply = self.answer(call).unwrap_or_else(HostReply::error);
        Box::pin(async move { reply })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kv: &MemoryKv, call: HostCall) -> HostReply {
        kv.answer(call).unwrap_or_else(HostReply::error)
    }

    /// The laptop's store answers as a server's does: pages in byte order after a key, sizes
    /// and quotas refused in the store's words.
    #[test]
    fn the_memory_store_answers_as_a_servers_does() {
        let limits = KvLimits {
            max_keys: 3,
            max_key_bytes: 8,
            ..KvLimits::default()
        };
        let kv = MemoryKv::new(Default::default(), limits);
        for key in ["b/2", "a", "b/1"] {
            let set = HostCall::KvSet {
                key: key.into(),
                value: "1".into(),
            };
            assert!(matches!(call(&kv, set), HostReply::Done));
        }
        let list = |prefix: &str, after: Option<&str>| match call(
            &kv,
            HostCall::KvList {
                prefix: prefix.into(),
                after: after.map(Into::into),
                limit: 10,
            },
        ) {
            HostReply::Keys { keys } => keys,
            other => panic!("{other:?}"),
        };
        assert_eq!(list("b/", None), ["b/1", "b/2"]);
        assert_eq!(list("b/", Some("b/1")), ["b/2"]);
        assert_eq!(list("", None), ["a", "b/1", "b/2"]);
        let full = HostCall::KvSet {
            key: "c".into(),
            value: "1".into(),
        };
        match call(&kv, full) {
            HostReply::Error { message } => assert!(message.contains("may hold 3 keys")),
            other => panic!("{other:?}"),
        }
        let long = HostCall::KvGet {
            key: "123456789".into(),
        };
        match call(&kv, long) {
            HostReply::Error { message } => assert!(message.contains("the limit is 8")),
            other => panic!("{other:?}"),
        }
        // Overwriting a key is no new key.
        let again = HostCall::KvSet {
            key: "a".into(),
            value: "[2]".into(),
        };
        assert!(matches!(call(&kv, again), HostReply::Done));
        assert!(matches!(
            call(&kv, HostCall::KvDelete { key: "a".into() }),
            HostReply::Deleted { existed: true }
        ));
        assert_eq!(kv.entries().len(), 2);
    }
}
