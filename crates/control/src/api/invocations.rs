//! Invocation records of a function: a query, and a live tail as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use super::functions::FunctionPath;
use super::{ApiError, ApiState, ErrorBody, Json, Path, Principal, reachable_function};
use crate::store::records::{FunctionStats, InvocationRecord, RecordFilter, stats};
use picloud_edge::tokens::Tokens;
use picloud_shared::Outcome;

/// Most records one query returns.
pub const MAX_LIMIT: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// Only this outcome (`ok`, `script_error`, `timeout`, …), or `error`: every outcome but
    /// `ok`.
    pub outcome: Option<String>,
    /// From this time on, Unix milliseconds.
    pub since: Option<i64>,
    /// Before this time, Unix milliseconds.
    pub until: Option<i64>,
    /// Only records older than this id (the last id of the previous page).
    pub before: Option<i64>,
    /// How many, newest first. Default 100, at most 1,000.
    pub limit: Option<u32>,
}

/// The function's invocation records, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/invocations", tag = "invocations",
    params(FunctionPath, RecordQuery),
    responses((status = 200, body = Vec<InvocationRecord>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_invocations(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<InvocationRecord>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    if let Some(outcome) = &q.outcome
        && outcome != "error"
        && !Outcome::KINDS.contains(&outcome.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "`outcome` is {outcome:?}; it must be one of {}, or error (any but ok)",
            Outcome::KINDS.join(", ")
        )));
    }
    let filter = RecordFilter {
        outcome: q.outcome,
        since: q.since,
        until: q.until,
        before_id: q.before,
        limit: super::within("limit", q.limit, 100, 1..=MAX_LIMIT)?,
    };
    Ok(Json(state.store.records(function.id, &filter).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// The window, ending now, in minutes. Default 60, at most 10,080 (the default retention).
    pub minutes: Option<u32>,
    /// How many equal buckets to cut it in. Default 60, at most 240.
    pub buckets: Option<u32>,
}

/// The function's traffic over the last `minutes` (endpoint and schedules, not test-invokes),
/// from its invocation records: counts, errors, outcomes, p50/p99 latency, per bucket too.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/stats", tag = "invocations",
    params(FunctionPath, StatsQuery),
    responses((status = 200, body = FunctionStats), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn function_stats(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FunctionStats>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let minutes = super::within("minutes", q.minutes, 60, 1..=10_080)?;
    let buckets = super::within("buckets", q.buckets, 60, 1..=240)?;
    let until = crate::store::now_ms() + 1;
    let since = until - i64::from(minutes) * 60_000;
    let samples = state.store.record_samples(function.id, since).await?;
    Ok(Json(stats(&samples, since, until, buckets)))
}

/// The function's invocations as they happen: server-sent events, one `invocation` event per
/// record (its JSON, `id` 0: not written yet), and a `dropped` event (the count) when this
/// stream fell more than 256 records behind and skipped some of them. Each tail has its own
/// queue: another function's or tenant's traffic never takes its place. The stream ends, with
/// an `ended` event, when the token that opened it is revoked. A tenant may have 16 open.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/invocations/tail", tag = "invocations",
    params(FunctionPath),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn tail_invocations(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let Some(recorder) = &state.recorder else {
        return Err(ApiError::NotFound("invocation log on this server"));
    };
    let tail =
        recorder
            .subscribe(tenant.id, function.id)
            .map_err(|e| ApiError::TooManyRequests {
                message: e.to_string(),
                retry_after: 5,
            })?;
    let live = TokenWatch {
        tokens: Arc::clone(&state.tokens),
        revocations: state.tokens.revocations(),
        token_id: principal.token_id,
    };
    let stream = futures_util::stream::unfold(Some((tail, live)), |open| async move {
        let (mut tail, mut live) = open?;
        loop {
            if !live.is_live() {
                let event = Event::default()
                    .event("ended")
                    .data("the token that opened this tail was revoked");
                return Some((Ok(event), None));
            }
            let dropped = tail.take_dropped();
            if dropped > 0 {
                let event = Event::default().event("dropped").data(dropped.to_string());
                return Some((Ok(event), Some((tail, live))));
            }
            tokio::select! {
                record = tail.records.recv() => {
                    let record = record?;
                    let event = Event::default()
                        .event("invocation")
                        .json_data(&*record)
                        .unwrap_or_else(|_| Event::default().comment("unencodable record"));
                    return Some((Ok(event), Some((tail, live))));
                }
                // A token left the cache: the loop checks whether it was this one.
                changed = live.revocations.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Whether the token that opened a tail is still unrevoked.
struct TokenWatch {
    tokens: Arc<Tokens>,
    revocations: tokio::sync::watch::Receiver<u64>,
    token_id: i64,
}

impl TokenWatch {
    fn is_live(&self) -> bool {
        self.tokens.is_live(self.token_id)
    }
}
