/// Why the executor could not start or could not take work. An invocation that ran never
/// returns this: whatever the script did ends in an [`picloud_shared::Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("module cache at {path}: {source}")]
    Cache {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("preparing the guest module: {0}")]
    Guest(String),
    #[error("starting the zygote: {0}")]
    Zygote(String),
    #[error("the executor has shut down")]
    ShutDown,
    #[error("diagnostics are disabled for this executor")]
    DiagnosticsDisabled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ExecutorError {
    pub(crate) fn guest(e: impl std::fmt::Display) -> Self {
        Self::Guest(format!("{e:#}"))
    }
}
