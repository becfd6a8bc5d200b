//! The HTTP side: the accept loop (which can reset a connection), the front middleware (faults, `Date`,
//! request log) and the cloud's endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::config::MfaShape;
use crate::control::Shared;
use crate::fault::FaultKind;
use crate::state::{Bearer, LoginOutcome};

/// Lets a request's handler reset the connection it arrived on.
#[derive(Clone)]
struct ConnReset(Arc<Notify>);

/// Builds the whole application: the cloud's endpoints and the control API, behind the front middleware.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/me/grounds", get(me_grounds))
        .route("/device/{id}", get(device))
        .route("/ground/{id}/devices", get(ground_devices))
        .merge(crate::http_control::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

/// Accepts connections until shutdown; each is served by hyper on its own task.
pub(crate) async fn accept_loop(listener: TcpListener, app: Router, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, app.clone(), shared.clone()));
                }
                Err(error) => {
                    tracing::warn!("accepting a connection failed: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shared.shutting_down() => break,
        }
    }
}

/// Serves one connection; a `Reset` fault closes it with RST, shutdown closes it.
async fn serve_connection(stream: TcpStream, app: Router, shared: Arc<Shared>) {
    // A second descriptor of the same socket lets us set SO_LINGER 0 after hyper owns the first.
    let split = stream.into_std().and_then(|std| {
        let dup = std.try_clone()?;
        Ok((TcpStream::from_std(std)?, TcpStream::from_std(dup)?))
    });
    let (stream, killer) = match split {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!("cannot prepare a connection: {error}; dropping it");
            return;
        }
    };
    let reset = Arc::new(Notify::new());
    let handle = ConnReset(reset.clone());
    let inner = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        hyper::service::Service::call(&inner, request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .auto_date_header(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = reset.notified() => {
            if let Err(error) = killer.set_zero_linger() {
                tracing::warn!("cannot arm the connection reset: {error}; closing normally");
            }
        }
        () = shared.shutting_down() => {}
    }
}

fn json_error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// Counts, faults, dates and logs every request.
async fn front(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = if path.starts_with("/_control/") || path == "/_control" {
        next.run(request).await
    } else {
        cloud_front(&shared, &path, request, next).await
    };
    let now = shared.lock().server_now();
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        response.headers_mut().insert(header::DATE, date);
    }
    tracing::info!("{method} {path} -> {}", response.status().as_u16());
    response
}

/// Marks a refresh grant in flight for as long as it lives (a hung or reset one included).
struct RefreshInFlight(Arc<Shared>);

impl RefreshInFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        shared.lock().refresh_started();
        Self(shared.clone())
    }
}

impl Drop for RefreshInFlight {
    fn drop(&mut self) {
        self.0.lock().refresh_finished();
    }
}

async fn read_form(headers: &HeaderMap, body: Body) -> HashMap<String, String> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    }
    Form::<HashMap<String, String>>::from_request(request, &()).await.map(|Form(form)| form).unwrap_or_default()
}

async fn cloud_front(shared: &Arc<Shared>, path: &str, request: Request, next: Next) -> Response {
    shared.lock().counters.requests_total += 1;
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return json_error(StatusCode::BAD_REQUEST, json!({"message": "The request body could not be read."}));
    };
    let is_refresh = parts.method == Method::POST
        && path == "/login"
        && read_form(&parts.headers, Body::from(bytes.clone())).await.get("grant_type").map(String::as_str)
            == Some("refresh_token");
    let _in_flight = is_refresh.then(|| RefreshInFlight::enter(shared));
    let request = Request::from_parts(parts, Body::from(bytes));

    let fault = shared.lock().take_fault(path);
    match fault {
        None => {}
        Some(FaultKind::ServerError) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "Internal Server Error",
            )
                .into_response();
        }
        Some(FaultKind::ServiceUnavailable) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>503 Service Unavailable</h1></body></html>",
            )
                .into_response();
        }
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(json!({"message": "Too many requests."})),
            )
                .into_response();
        }
        Some(FaultKind::NotJson) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>The service is down for maintenance.</body></html>",
            )
                .into_response();
        }
        Some(FaultKind::Hang) => {
            tracing::info!("fault: hanging a request to {path}");
            // The connection task drops this future at shutdown, closing the connection unanswered.
            return std::future::pending().await;
        }
        Some(FaultKind::Reset) => {
            tracing::info!("fault: resetting the connection of a request to {path}");
            if let Some(ConnReset(reset)) = request.extensions().get::<ConnReset>() {
                reset.notify_one();
            }
            // The connection task drops this future when it resets the connection.
            return std::future::pending().await;
        }
        Some(FaultKind::InvalidClient) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_clientId", "error_description": "The client id is not valid for this token."}),
            );
        }
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Some(FaultKind::LostReply) => {
            let reply = next.run(request).await;
            tracing::info!("fault: carried out a request to {path} ({}); its reply never leaves", reply.status());
            // The connection task drops this future when the client gives up or the fake shuts down.
            return std::future::pending().await;
        }
    }
    next.run(request).await
}

async fn login(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form = read_form(&parts.headers, body).await;
    let (outcome, shape) = {
        let mut state = shared.lock();
        (state.token_request(&form), state.settings.mfa_shape)
    };
    match outcome {
        LoginOutcome::Tokens(reply) => (StatusCode::OK, Json(reply)).into_response(),
        LoginOutcome::Mfa { mfa_uid, user_id } => {
            let challenge = json!({"MfaUid": mfa_uid, "UserId": user_id});
            match shape {
                MfaShape::TopLevel => (StatusCode::OK, Json(challenge)).into_response(),
                MfaShape::TopLevelBadRequest => json_error(StatusCode::BAD_REQUEST, challenge),
                MfaShape::ErrorDescription => json_error(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "mfa_required", "error_description": challenge.to_string()}),
                ),
            }
        }
        LoginOutcome::Error { code, description } => {
            let body = match description {
                Some(text) => json!({"error": code, "error_description": text}),
                None => json!({"error": code}),
            };
            json_error(StatusCode::BAD_REQUEST, body)
        }
    }
}

/// The bearer of a request, or `None` when it has no valid bearer token.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Option<Bearer> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())?;
    shared.lock().bearer(token)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"message": "Authorization has been denied for this request."})),
    )
        .into_response()
}

fn forbidden() -> Response {
    json_error(StatusCode::FORBIDDEN, json!({"message": "This token may not access this resource."}))
}

async fn me_grounds(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match authenticate(&shared, &headers) {
        None => unauthorized(),
        Some(Bearer::User) => {
            let items: Vec<_> = shared
                .lock()
                .grounds()
                .into_iter()
                .map(|(id, _)| json!({"id": id, "name": format!("Ground {id}")}))
                .collect();
            Json(json!({"items": items})).into_response()
        }
        Some(_) => forbidden(),
    }
}

async fn device(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let allowed = match authenticate(&shared, &headers) {
        None => return unauthorized(),
        Some(Bearer::User) => true,
        Some(Bearer::Device(device_id)) => device_id == id,
        Some(Bearer::Ground { device_ids, .. }) => device_ids.contains(&id),
    };
    if !allowed {
        return forbidden();
    }
    Json(json!({"id": id, "name": format!("Device {id}"), "assets": []})).into_response()
}

async fn ground_devices(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let devices = match authenticate(&shared, &headers) {
        None => return unauthorized(),
        Some(Bearer::User) => shared.lock().grounds().into_iter().find(|(g, _)| *g == id).map(|(_, d)| d),
        Some(Bearer::Device(_)) => return forbidden(),
        Some(Bearer::Ground { ground_id, device_ids }) if ground_id == id => Some(device_ids),
        Some(Bearer::Ground { .. }) => return forbidden(),
    };
    match devices {
        Some(devices) => {
            let items: Vec<_> = devices.into_iter().map(|d| json!({"id": d})).collect();
            Json(json!({"items": items})).into_response()
        }
        None => json_error(StatusCode::NOT_FOUND, json!({"message": format!("Ground {id} does not exist.")})),
    }
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, json!({"message": "No such resource."}))
}

/// Where a freshly bound server listens.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// A fresh shutdown switch.
pub(crate) fn shutdown_switch() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}
