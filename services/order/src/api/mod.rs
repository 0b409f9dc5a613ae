//! The REST API: the only way into the system from outside.
//!
//! | route | answer |
//! |---|---|
//! | `POST /orders` | 202 `{order_id, status, trace_id}` + `Location` once `OrderPlaced` is durably stored |
//! | `GET /orders` | the read model, filtered by `customer_email` and `status`, paged |
//! | `GET /orders/{id}` | the read model, from the `orders_view` bucket; `?min_position=` reads your own write |
//! | `POST /orders/{id}/cancel` | 202 until the order has shipped, 409 after |
//! | `GET /orders/{id}/events` | the order's history, from the event store |
//!
//! Every error is `application/problem+json` (see [`problem`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, State};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use events::{OrderId, OrderPlaced};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};

use crate::Order;
use crate::domain::{Command, Rejection};
use crate::store::{EventStore, StoreError};
use crate::view;

pub mod openapi;
pub mod problem;
pub mod request;

use problem::{FieldError, Problem};
use request::NewOrder;

/// How long a request may take before it is answered 408. Every wait inside
/// is bounded already (broker requests by `platform::bus::REQUEST_TIMEOUT`,
/// `min_position` by [`MIN_POSITION_WAIT`]); this is the backstop.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Adds the request timeout, and turns every error response that has no
/// body of its own (the timeout's 408, axum's own rejections) into
/// problem+json, so a client sees one error format whatever answered.
fn with_limits<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    timeout: std::time::Duration,
) -> Router<S> {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
}

async fn problem_for_bare_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return Problem::from_status(status).into_response();
    }
    response
}

/// The largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The API's routes, with an HTTP SERVER span around every request: the root
/// of each order's trace.
pub fn router(order: Arc<Order>) -> Router {
    let router = Router::new()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/openapi.json", get(openapi::spec))
        .merge(openapi::docs())
        .route("/orders/{id}/events", get(get_events))
        .fallback(|| async { Problem::not_found("no such resource") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    with_limits(router, REQUEST_TIMEOUT)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", |p| p.as_str());
                    tracing::info_span!(
                        "http request",
                        otel.name = format!("{} {route}", request.method()),
                        otel.kind = "server",
                        otel.status_code = tracing::field::Empty,
                        http.request.method = %request.method(),
                        http.route = route,
                        url.path = %request.uri().path(),
                        http.response.status_code = tracing::field::Empty,
                    )
                })
                .on_response(|response: &Response<_>, _latency, span: &tracing::Span| {
                    span.record("http.response.status_code", response.status().as_u16());
                    if response.status().is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }),
        )
        .with_state(order)
}

/// The answer to a placed order.
#[derive(Debug, Serialize, ToSchema)]
struct Placed {
    #[schema(value_type = String, format = Uuid)]
    order_id: OrderId,
    status: &'static str,
    trace_id: String,
    /// The event-store position of the order after this write: pass it as
    /// `min_position` to read your own write.
    position: u64,
}

fn placed_response(order_id: OrderId, trace_id: String, position: u64) -> axum::response::Response {
    let location = format!("/orders/{order_id}");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(Placed {
            order_id,
            status: "placed",
            trace_id,
            position,
        }),
    )
        .into_response()
}

fn ready(order: &Order) -> Result<&(EventStore, async_nats::jetstream::kv::Store), Problem> {
    order
        .ready
        .get()
        .ok_or_else(|| Problem::unavailable("the service is still connecting to the broker"))
}

/// `POST /orders`.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    summary = "Place an order",
    description = "Validates the order and stores `OrderPlaced` durably before answering 202. \
        With an `Idempotency-Key`, a repeat of the same order gets the first answer, and a \
        different order under the same key is refused.",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes retries safe: the same key and body place one order")),
    request_body(content = openapi::OrderRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored; the rest happens asynchronously", body = Placed,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Unreadable body or header", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or an Idempotency-Key reused for another order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker cannot durably take the order; retry later", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn place_order(
    State(order): State<Arc<Order>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Problem> {
    let new_order = parse_body(&headers, body)?;
    let key = idempotency_key(&headers)?;
    let (store, _) = ready(&order)?;
    if !order.bus.is_connected() {
        return Err(Problem::unavailable(
            "the broker is unreachable; the order was not taken",
        ));
    }

    let order_id = key.map_or_else(OrderId::new, OrderId::from_idempotency_key);
    let placed = OrderPlaced {
        order_id,
        customer_email: new_order.customer_email,
        items: new_order.items,
        total_cents: new_order.total_cents,
        payment_token: new_order.payment_token,
        placed_at: OffsetDateTime::now_utc(),
    };
    let result = if key.is_some() {
        // A repeat is possible: decide on the order's current state.
        let command = Command::Place(placed.clone());
        store
            .execute(order_id, command, &order_id.to_string())
            .await
    } else {
        store.create(placed.clone()).await
    };
    match result {
        Ok(outcome) => Ok(placed_response(
            order_id,
            platform::telemetry::current_trace_id(),
            outcome.position,
        )),
        Err(StoreError::Rejected(Rejection::AlreadyExists)) => repeat(store, &placed).await,
        Err(error @ (StoreError::Unavailable(_) | StoreError::Contended)) => Err(
            Problem::unavailable(format!("the order was not taken: {error}")),
        ),
        Err(error) => Err(Problem::unavailable(format!(
            "the order was not taken: {error}"
        ))),
    }
}

/// A repeated `Idempotency-Key`: the same order again gets the first
/// answer; a different order under the same key is refused.
async fn repeat(
    store: &EventStore,
    placed: &OrderPlaced,
) -> Result<axum::response::Response, Problem> {
    let loaded = store
        .load(placed.order_id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let first = loaded.history.first();
    match first.map(|r| &r.event) {
        Some(events::Event::OrderPlaced(original))
            if original.customer_email == placed.customer_email
                && original.items == placed.items
                && original.payment_token == placed.payment_token =>
        {
            let trace_id = first.and_then(|r| r.trace_id.clone()).unwrap_or_default();
            let position = first.map_or(0, |r| r.sequence);
            Ok(placed_response(placed.order_id, trace_id, position))
        }
        _ => Err(Problem::conflict(
            "this Idempotency-Key was already used for an order with a different body",
        )),
    }
}

/// Checks the content type and turns the body into a valid order.
fn parse_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<NewOrder, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json"
        && !(essence.starts_with("application/") && essence.ends_with("+json"))
    {
        let shown = if content_type.is_empty() {
            "(none)"
        } else {
            content_type
        };
        return Err(Problem::unsupported_media_type(shown));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(MAX_BODY_BYTES)
        } else {
            Problem::bad_request(rejection.body_text(), vec![])
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "the body is empty",
            request::required_fields(),
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            format!("the body is not valid JSON: {e}"),
            vec![FieldError::new(
                "",
                format!("malformed JSON at line {}, column {}", e.line(), e.column()),
            )],
        )
    })?;
    NewOrder::parse(&value).map_err(Problem::invalid)
}

/// Reads the optional `Idempotency-Key` header.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        _ => Err(Problem::bad_request(
            "invalid Idempotency-Key",
            vec![FieldError::new(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )],
        )),
    }
}

fn parse_id(id: &str) -> Result<OrderId, Problem> {
    id.parse()
        .map_err(|_| Problem::not_found(format!("there is no order `{id}`")))
}

/// How long `GET /orders/{id}?min_position=` waits for the view to catch up.
pub const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The query of `GET /orders/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ViewQuery {
    /// Answer only with a view that reflects at least this event-store
    /// position (read-your-writes): the `position` a write returned.
    min_position: Option<u64>,
}

/// `GET /orders/{id}`: the read model, never the event store. The view's
/// `position` (also in the `Order-Position` header) says which event it
/// reflects; `min_position` waits, for a bounded time, until it reflects at
/// least that one.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    summary = "Read an order (the read model)",
    params(("id" = String, Path, description = "The order id"), ViewQuery),
    responses(
        (status = 200, description = "The order as of `position`", body = view::OrderView,
            headers(("Order-Position" = u64, description = "The event-store position the view reflects"))),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The view has not reached `min_position` in time: retry", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "The store is unreachable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn get_order(
    State(order): State<Arc<Order>>,
    Path(id): Path<String>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<axum::response::Response, Problem> {
    let order_id = parse_id(&id)?;
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "invalid query",
            vec![FieldError::new("min_position", e.body_text())],
        )
    })?;
    let (_, views) = ready(&order)?;
    let wanted = query.min_position.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
    loop {
        let view = view::get(views, order_id)
            .await
            .map_err(|e| Problem::unavailable(format!("cannot read orders: {e:#}")))?;
        match view {
            Some(view) if view.position >= wanted => {
                let position = view.position.to_string();
                return Ok(([("order-position", position)], Json(view)).into_response());
            }
            None if wanted == 0 => {
                return Err(Problem::not_found(format!(
                    "there is no order `{order_id}`"
                )));
            }
            seen if tokio::time::Instant::now() >= deadline => {
                let at = seen.map_or(0, |v| v.position);
                return Err(Problem::behind(format!(
                    "the read model reflects position {at} of order `{order_id}`, not yet {wanted}; retry shortly"
                )));
            }
            // The projection is a few milliseconds behind the write: poll
            // the bucket until it catches up or the deadline passes.
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// The answer to an accepted cancellation.
#[derive(Debug, Serialize, ToSchema)]
struct Cancelled {
    #[schema(value_type = String, format = Uuid)]
    order_id: OrderId,
    status: &'static str,
    position: u64,
}

/// `POST /orders/{id}/cancel`: allowed until the order has shipped. Cancelling
/// twice is fine and answers the same.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    summary = "Cancel an order",
    description = "Allowed until the order has shipped. A charged order is refunded and a scheduled shipment recalled, asynchronously.",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 202, description = "Cancelled (or already cancelled)", body = Cancelled),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late: the order has shipped", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker is unreachable; nothing changed", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn cancel_order(
    State(order): State<Arc<Order>>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, Problem> {
    let order_id = parse_id(&id)?;
    let (store, _) = ready(&order)?;
    if !order.bus.is_connected() {
        return Err(Problem::unavailable(
            "the broker is unreachable; nothing was changed",
        ));
    }
    let command = Command::Cancel {
        reason: "cancelled by the customer".into(),
        at: OffsetDateTime::now_utc(),
    };
    match store
        .execute(order_id, command, &format!("cancel/{order_id}"))
        .await
    {
        Ok(outcome) => {
            let status = outcome.order.map_or("cancelled", |o| o.status.as_str());
            let body = Cancelled {
                order_id,
                status,
                position: outcome.position,
            };
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Err(StoreError::Rejected(Rejection::NotFound)) => Err(Problem::not_found(format!(
            "there is no order `{order_id}`"
        ))),
        Err(StoreError::Rejected(rejection @ Rejection::TooLate(_))) => Err(Problem::too_late(
            format!("the order cannot be cancelled: {rejection}"),
        )),
        Err(error) => Err(Problem::unavailable(format!(
            "nothing was changed: {error}"
        ))),
    }
}

/// The largest `offset` of `GET /orders`.
pub const MAX_OFFSET: usize = 1_000_000;

/// The query of `GET /orders`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this customer's orders.
    customer_email: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<openapi::OrderStatus>)]
    status: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// How many matching orders to skip.
    #[param(minimum = 0, maximum = 1000000)]
    offset: Option<usize>,
}

/// One page of orders.
#[derive(Debug, Serialize, ToSchema)]
struct Page {
    orders: Vec<view::OrderView>,
    /// The `offset` of the next page, if there is one.
    next_offset: Option<usize>,
}

/// `GET /orders?customer_email=&status=&limit=&offset=`: newest first.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    summary = "List orders (the read model)",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page),
        (status = 400, description = "Unreadable query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query values", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn list_orders(
    State(order): State<Arc<Order>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "invalid query",
            vec![FieldError::new("query", e.body_text())],
        )
    })?;
    let limit = query.limit.unwrap_or(20);
    let mut errors = Vec::new();
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 100"));
    }
    if query.offset.is_some_and(|o| o > MAX_OFFSET) {
        errors.push(FieldError::new(
            "offset",
            format!("must be at most {MAX_OFFSET}"),
        ));
    }
    if let Some(status) = &query.status
        && !["placed", "paid", "shipped", "cancelled"].contains(&status.as_str())
    {
        errors.push(FieldError::new(
            "status",
            "must be placed, paid, shipped or cancelled",
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid_query(errors));
    }
    let (_, views) = ready(&order)?;
    let all = view::all(views)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot read orders: {e:#}")))?;
    let mut matching: Vec<view::OrderView> = all
        .into_iter()
        .filter(|v| {
            query
                .customer_email
                .as_ref()
                .is_none_or(|e| &v.customer_email == e)
        })
        .filter(|v| query.status.as_ref().is_none_or(|s| v.status.as_str() == s))
        .collect();
    matching.sort_by(|a, b| {
        b.placed_at
            .cmp(&a.placed_at)
            .then(a.order_id.cmp(&b.order_id))
    });
    let offset = query.offset.unwrap_or(0);
    let next_offset = (matching.len() > offset.saturating_add(limit)).then(|| offset + limit);
    let orders = matching.into_iter().skip(offset).take(limit).collect();
    Ok(Json(Page {
        orders,
        next_offset,
    }))
}

/// One entry of an order's history.
#[derive(Debug, Serialize, ToSchema)]
struct HistoryEntry {
    sequence: u64,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    trace_id: Option<String>,
    #[schema(value_type = Object)]
    data: Value,
}

#[derive(Debug, Serialize, ToSchema)]
struct History {
    #[schema(value_type = String, format = Uuid)]
    order_id: OrderId,
    events: Vec<HistoryEntry>,
}

/// `GET /orders/{id}/events`: the audit log, straight from the event store.
#[utoipa::path(
    get,
    path = "/orders/{id}/events",
    tag = "orders",
    summary = "An order's history (the event store)",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "Every event of the order, oldest first", body = History),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unreachable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn get_events(
    State(order): State<Arc<Order>>,
    Path(id): Path<String>,
) -> Result<Json<History>, Problem> {
    let order_id = parse_id(&id)?;
    let (store, _) = ready(&order)?;
    let loaded = store
        .load(order_id)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot read the event store: {e}")))?;
    if loaded.history.is_empty() {
        return Err(Problem::not_found(format!(
            "there is no order `{order_id}`"
        )));
    }
    let events = loaded
        .history
        .into_iter()
        .map(|r| HistoryEntry {
            sequence: r.sequence,
            id: r.envelope.id.to_string(),
            kind: r.envelope.kind.ce_type(),
            subject: r.subject,
            time: r.envelope.time,
            trace_id: r.trace_id,
            data: serde_json::from_slice(&r.event.to_json()).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(History { order_id, events }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_slow_request_is_answered_408_problem_json() {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                "done"
            }),
        );
        let app = with_limits(slow, std::time::Duration::from_millis(20));
        let request = Request::builder()
            .uri("/slow")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(problem::CONTENT_TYPE)
        );
    }
}
