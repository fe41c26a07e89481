//! The control plane's command-line flags (every flag is also an environment variable), which
//! `picloud serve` and `picloud-manager` take.

use clap::Args;

use crate::api::ApiConfig;
use crate::store::VersionQuota;

/// Sizes the API and the endpoints accept.
#[derive(Debug, Clone, Args)]
pub struct SizeArgs {
    /// Largest script a version may hold, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_SCRIPT_BYTES", default_value_t = ApiConfig::default().max_script_bytes)]
    pub max_script_bytes: usize,
    /// Largest request body the API and the function endpoints accept, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_BODY_BYTES", default_value_t = ApiConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Bytes of source all of one tenant's versions may hold; past it a save prunes the
    /// function's oldest versions (never the live one nor its newest ten), or is refused with
    /// `409 quota_exceeded`.
    #[arg(long, env = "PICLOUD_TENANT_VERSION_BYTES", default_value_t = VersionQuota::default().max_tenant_bytes)]
    pub tenant_version_bytes: u64,
    /// Versions one function keeps; past it a save prunes its oldest ones.
    #[arg(long, env = "PICLOUD_VERSIONS_PER_FUNCTION", default_value_t = VersionQuota::default().max_per_function,
          value_parser = clap::value_parser!(u32).range(11..))]
    pub versions_per_function: u32,
}

impl SizeArgs {
    pub fn config(&self) -> ApiConfig {
        ApiConfig {
            max_script_bytes: self.max_script_bytes,
            max_body_bytes: self.max_body_bytes,
            versions: VersionQuota {
                max_per_function: self.versions_per_function,
                max_tenant_bytes: self.tenant_version_bytes,
                ..VersionQuota::default()
            },
        }
    }
}
