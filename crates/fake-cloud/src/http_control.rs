//! The control API over HTTP (JSON under `/_control/`), for tests that run the `att-fake-cloud` binary.
//!
//! Each route mirrors a [`crate::Control`] method; see the crate documentation for the list.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::{DeviceToken, FakeUser, GroundToken, MfaFields, MfaShape, Rotation};
use crate::control::{Control, Shared};
use crate::fault::Fault;

type Ctl = State<Arc<Shared>>;

fn control(shared: Arc<Shared>) -> Control {
    Control { shared }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_control/faults", post(inject_fault).delete(clear_faults))
        .route("/_control/revoke", post(revoke))
        .route("/_control/revoke-user", post(revoke_user))
        .route("/_control/expire", post(expire))
        .route("/_control/expire-all", post(expire_all))
        .route("/_control/clock", get(clock).post(set_clock))
        .route("/_control/rotation", post(set_rotation))
        .route("/_control/mfa-shape", post(set_mfa_shape))
        .route("/_control/mfa-fields", post(set_mfa_fields))
        .route("/_control/lifetimes", post(set_lifetimes))
        .route("/_control/counters", get(counters))
        .route("/_control/counters/reset", post(reset_counters))
        .route("/_control/access-token-valid", post(access_token_valid))
        .route("/_control/refresh-token-valid", post(refresh_token_valid))
        .route("/_control/users", post(add_user))
        .route("/_control/device-tokens", post(add_device_token))
        .route("/_control/ground-tokens", post(add_ground_token))
        .route("/_control/totp", post(totp))
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct UserBody {
    username: String,
}

#[derive(Deserialize)]
struct ExpireAllBody {
    #[serde(default)]
    access: bool,
    #[serde(default)]
    refresh: bool,
}

#[derive(Deserialize)]
struct ClockBody {
    offset_secs: Option<i64>,
    advance_secs: Option<i64>,
}

#[derive(Deserialize)]
struct RotationBody {
    rotation: Rotation,
}

#[derive(Deserialize)]
struct ShapeBody {
    shape: MfaShape,
}

#[derive(Deserialize)]
struct LifetimesBody {
    access_secs: Option<u64>,
    refresh_secs: Option<u64>,
    challenge_secs: Option<u64>,
}

async fn inject_fault(State(shared): Ctl, Json(fault): Json<Fault>) -> StatusCode {
    control(shared).inject_fault(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): Ctl) -> StatusCode {
    control(shared).clear_faults();
    StatusCode::NO_CONTENT
}

async fn revoke(State(shared): Ctl, Json(body): Json<TokenBody>) -> Response {
    Json(json!({"revoked": control(shared).revoke(&body.token)})).into_response()
}

async fn revoke_user(State(shared): Ctl, Json(body): Json<UserBody>) -> Response {
    Json(json!({"revoked": control(shared).revoke_user_sessions(&body.username)})).into_response()
}

async fn expire(State(shared): Ctl, Json(body): Json<TokenBody>) -> Response {
    Json(json!({"expired": control(shared).expire_token(&body.token)})).into_response()
}

async fn expire_all(State(shared): Ctl, Json(body): Json<ExpireAllBody>) -> Response {
    let control = control(shared);
    let access = if body.access { control.expire_all_access_tokens() } else { 0 };
    let refresh = if body.refresh { control.expire_all_refresh_tokens() } else { 0 };
    Json(json!({"access": access, "refresh": refresh})).into_response()
}

fn clock_reply(control: &Control) -> Response {
    Json(json!({
        "offset_secs": control.clock_offset_secs(),
        "now": httpdate::fmt_http_date(control.server_now()),
    }))
    .into_response()
}

async fn clock(State(shared): Ctl) -> Response {
    clock_reply(&control(shared))
}

async fn set_clock(State(shared): Ctl, Json(body): Json<ClockBody>) -> Response {
    let control = control(shared);
    if let Some(offset) = body.offset_secs {
        control.set_clock_offset_secs(offset);
    }
    if let Some(advance) = body.advance_secs {
        control.set_clock_offset_secs(control.clock_offset_secs().saturating_add(advance));
    }
    clock_reply(&control)
}

async fn set_rotation(State(shared): Ctl, Json(body): Json<RotationBody>) -> StatusCode {
    control(shared).set_rotation(body.rotation);
    StatusCode::NO_CONTENT
}

async fn set_mfa_shape(State(shared): Ctl, Json(body): Json<ShapeBody>) -> StatusCode {
    control(shared).set_mfa_shape(body.shape);
    StatusCode::NO_CONTENT
}

async fn set_mfa_fields(State(shared): Ctl, Json(fields): Json<MfaFields>) -> StatusCode {
    control(shared).set_mfa_fields(fields);
    StatusCode::NO_CONTENT
}

async fn set_lifetimes(State(shared): Ctl, Json(body): Json<LifetimesBody>) -> StatusCode {
    let control = control(shared);
    if let Some(secs) = body.access_secs {
        control.set_access_lifetime(Duration::from_secs(secs));
    }
    if let Some(secs) = body.refresh_secs {
        control.set_refresh_lifetime(Duration::from_secs(secs));
    }
    if let Some(secs) = body.challenge_secs {
        control.set_challenge_lifetime(Duration::from_secs(secs));
    }
    StatusCode::NO_CONTENT
}

async fn counters(State(shared): Ctl) -> Response {
    Json(control(shared).counters()).into_response()
}

async fn reset_counters(State(shared): Ctl) -> StatusCode {
    control(shared).reset_counters();
    StatusCode::NO_CONTENT
}

async fn access_token_valid(State(shared): Ctl, Json(body): Json<TokenBody>) -> Response {
    Json(json!({"valid": control(shared).is_access_token_valid(&body.token)})).into_response()
}

async fn refresh_token_valid(State(shared): Ctl, Json(body): Json<TokenBody>) -> Response {
    Json(json!({"valid": control(shared).is_refresh_token_valid(&body.token)})).into_response()
}

async fn add_user(State(shared): Ctl, Json(user): Json<FakeUser>) -> Response {
    match control(shared).add_user(user) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({"message": error.to_string()}))).into_response(),
    }
}

async fn add_device_token(State(shared): Ctl, Json(body): Json<DeviceToken>) -> StatusCode {
    control(shared).add_device_token(body.token, body.device_id);
    StatusCode::NO_CONTENT
}

async fn add_ground_token(State(shared): Ctl, Json(body): Json<GroundToken>) -> StatusCode {
    control(shared).add_ground_token(body.token, body.ground_id, body.device_ids);
    StatusCode::NO_CONTENT
}

async fn totp(State(shared): Ctl, Json(body): Json<UserBody>) -> Response {
    match control(shared).current_totp(&body.username) {
        Some(code) => Json(json!({"code": code})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "No such user, or the user has no TOTP seed: add one with /_control/users."})),
        )
            .into_response(),
    }
}
