//! A function's schedules: cron triggers of its `on_schedule(event)` (see
//! [`crate::schedules`] for when and how they run).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, Json, Path, Principal, reachable_function};
use crate::script::defines_on_schedule;
use crate::store::{Function, Schedule, ScheduleRun, now_ms};
use picloud_store::schedule_spec::CronSpec;

/// Most schedules one function may have.
pub const MAX_SCHEDULES: usize = 20;
/// Largest payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 << 10;
/// Most runs one query returns.
pub const MAX_RUNS: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SchedulePath {
    pub tenant: String,
    /// The function's name.
    pub function: String,
    /// The schedule's id.
    pub id: i64,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    /// As given: five fields (minute hour day month weekday), six (seconds first) or seven (a
    /// year last), or `@daily` and the like.
    pub cron: String,
    /// IANA name; the cron expression is read in it.
    pub time_zone: String,
    pub enabled: bool,
    /// Handed to `on_schedule` as `event.payload`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The next tick (Unix ms); `null` while paused or when it never fires again.
    pub next_run_at: Option<i64>,
    /// Missed ticks given up (older than the backfill window).
    pub skipped_ticks: i64,
    /// A run is in progress.
    pub running: bool,
    pub created_at: i64,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            id: s.id,
            payload: s
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(serde_json::Value::Null),
            next_run_at: (s.enabled && s.next_run_at != i64::MAX).then_some(s.next_run_at),
            running: s.running_until.is_some_and(|lease| lease >= now_ms()),
            cron: s.cron,
            time_zone: s.time_zone,
            enabled: s.enabled,
            skipped_ticks: s.skipped_ticks,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub cron: String,
    /// Default `UTC`.
    pub time_zone: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    /// Pause (false) or resume (true). A resumed schedule runs from its next tick on; the
    /// ticks of the pause are not made up.
    pub enabled: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// How many, newest first. Default 100, at most 1,000.
    pub limit: Option<u32>,
}

/// The function's schedules, oldest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules", tag = "schedules",
    params(super::functions::FunctionPath),
    responses((status = 200, body = Vec<ScheduleView>), (status = 404, body = ErrorBody)))]
pub async fn list_schedules(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<super::functions::FunctionPath>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let all = state.store.schedules(function.id).await?;
    Ok(Json(all.into_iter().map(ScheduleView::from).collect()))
}

/// Adds a schedule. The function's active version must define `fn on_schedule(event)`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules", tag = "schedules",
    params(super::functions::FunctionPath), request_body = CreateSchedule,
    responses((status = 201, body = ScheduleView), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_schedule(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<super::functions::FunctionPath>,
    Json(body): Json<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let time_zone = body.time_zone.as_deref().unwrap_or("UTC");
    let spec =
        CronSpec::parse(&body.cron, time_zone).map_err(|e| ApiError::Invalid(e.to_string()))?;
    // Every second is sixty times the runs of every minute, on a shared server: the admin's
    // choice per tenant.
    if spec.is_sub_minute() && !tenant.sub_minute_schedules {
        return Err(ApiError::Forbidden(
            format!(
                "this schedule fires more than once a minute, which an admin must first allow \
                 for tenant {name} (`picloud tenant ceilings {name} --sub-minute-schedules yes`, \
                 or PATCH /api/v1/tenants/{name} {{\"sub_minute_schedules\": true}}); a seconds \
                 field of one value (`0 * * * * *`) needs no permission",
                name = tenant.name
            )
            .into(),
        ));
    }
    let next_run_at = spec.next_after(now_ms()).ok_or_else(|| {
        ApiError::Invalid(format!(
            "the cron expression {:?} never fires again",
            body.cron
        ))
    })?;
    let payload = match &body.payload {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            let text =
                serde_json::to_string(value).map_err(|e| ApiError::Invalid(e.to_string()))?;
            if text.len() > MAX_PAYLOAD_BYTES {
                return Err(ApiError::Invalid(format!(
                    "the payload is {} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES}",
                    text.len()
                )));
            }
            Some(text)
        }
    };
    require_on_schedule(&state, &function).await?;
    if state.store.schedules(function.id).await?.len() >= MAX_SCHEDULES {
        return Err(ApiError::Conflict(format!(
            "a function may have at most {MAX_SCHEDULES} schedules"
        )));
    }
    let schedule = state
        .store
        .create_schedule(
            function.id,
            body.cron.trim(),
            spec.time_zone(),
            body.enabled.unwrap_or(true),
            payload.as_deref(),
            next_run_at,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(schedule.into())))
}

/// A function with schedules keeps an active version they can run: making `what` (a version,
/// with its `source` when it is not saved yet) active when it lacks `fn on_schedule(event)` is
/// refused, naming the schedules — what adding a schedule checks, kept true when the version
/// changes (before: the schedules then failed at every tick).
pub(crate) async fn keeps_schedules_running(
    state: &ApiState,
    function: &Function,
    what: &str,
    version: Option<i32>,
    source: Option<&str>,
) -> Result<(), ApiError> {
    let schedules = state.store.schedules(function.id).await?;
    if schedules.is_empty() {
        return Ok(());
    }
    let source = match (source, version) {
        (Some(source), _) => source.to_owned(),
        (None, Some(version)) => state
            .store
            .version_source(function.id, version)
            .await?
            .ok_or(ApiError::NotFound("version"))?,
        (None, None) => return Ok(()),
    };
    if defines_on_schedule(&source).map_err(ApiError::Compile)? {
        return Ok(());
    }
    let ids: Vec<String> = schedules.iter().map(|s| s.id.to_string()).collect();
    Err(ApiError::Conflict(format!(
        "{what} does not define `fn on_schedule(event)`, which this function's schedules ({}) \
         run: add it, or delete those schedules first",
        ids.join(", ")
    )))
}

/// Schedules run the active version: it must have the entry point.
async fn require_on_schedule(state: &ApiState, function: &Function) -> Result<(), ApiError> {
    let Some(version) = function.active_version else {
        return Err(ApiError::Conflict(
            "nothing is deployed: deploy a version that defines `fn on_schedule(event)` first"
                .into(),
        ));
    };
    let source = state
        .store
        .version_source(function.id, version)
        .await?
        .ok_or(ApiError::NotFound("version"))?;
    if defines_on_schedule(&source).map_err(ApiError::Compile)? {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "the active version ({version}) does not define `fn on_schedule(event)`, which \
             schedule runs call"
        )))
    }
}

async fn reachable_schedule(
    state: &ApiState,
    principal: &Principal,
    path: &SchedulePath,
) -> Result<(Function, Schedule), ApiError> {
    let (_, function) = reachable_function(state, principal, &path.tenant, &path.function).await?;
    let schedule = state
        .store
        .schedule(path.id)
        .await?
        .filter(|s| s.function_id == function.id)
        .ok_or(ApiError::NotFound("schedule"))?;
    Ok((function, schedule))
}

/// One schedule.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules/{id}", tag = "schedules",
    params(SchedulePath), responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub async fn get_schedule(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<SchedulePath>,
) -> Result<Json<ScheduleView>, ApiError> {
    let (_, schedule) = reachable_schedule(&state, &principal, &path).await?;
    Ok(Json(schedule.into()))
}

/// Pauses or resumes a schedule.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules/{id}", tag = "schedules",
    params(SchedulePath), request_body = UpdateSchedule,
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_schedule(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<SchedulePath>,
    Json(body): Json<UpdateSchedule>,
) -> Result<Json<ScheduleView>, ApiError> {
    let (function, schedule) = reachable_schedule(&state, &principal, &path).await?;
    // Resuming starts from the next tick after now.
    let next_run_at = if body.enabled && !schedule.enabled {
        require_on_schedule(&state, &function).await?;
        CronSpec::parse(&schedule.cron, &schedule.time_zone)
            .map_err(|e| ApiError::Invalid(e.to_string()))?
            .next_after(now_ms())
            .unwrap_or(i64::MAX)
    } else {
        schedule.next_run_at
    };
    let updated = state
        .store
        .set_schedule_enabled(function.id, schedule.id, body.enabled, next_run_at)
        .await?;
    Ok(Json(updated.into()))
}

/// Deletes a schedule; a run in progress finishes.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules/{id}", tag = "schedules",
    params(SchedulePath), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_schedule(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<SchedulePath>,
) -> Result<StatusCode, ApiError> {
    let (function, schedule) = reachable_schedule(&state, &principal, &path).await?;
    state
        .store
        .delete_schedule(function.id, schedule.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The schedule's claimed ticks, newest first: each ran once (`outcome`), is running
/// (`null`), or was `abandoned` by a scheduler that stopped mid-run.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/schedules/{id}/runs", tag = "schedules",
    params(SchedulePath, RunQuery),
    responses((status = 200, body = Vec<ScheduleRun>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<SchedulePath>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ScheduleRun>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (_, schedule) = reachable_schedule(&state, &principal, &path).await?;
    let limit = super::within("limit", q.limit, 100, 1..=MAX_RUNS)?;
    Ok(Json(state.store.schedule_runs(schedule.id, limit).await?))
}
