//! The REST contract as OpenAPI 3.1, generated from the handlers' own
//! annotations (utoipa), served at `/openapi.json` and browsable at `/docs`.
//! `make test` runs schemathesis against the running service with this very
//! document, so the contract and the behaviour cannot drift apart.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_scalar::{Scalar, Servable as _};

use super::problem::{FieldError, Problem};
use super::request;

/// The body of `POST /orders`, as documentation: the handler parses it by
/// hand (see [`request`]) to report every bad field at once, and this
/// schema states the same bounds.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct OrderRequest {
    /// Where the emails go.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    customer_email: String,
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<LineItem>,
    /// A test token of the simulated gateway: `tok_visa` (default) is
    /// charged, `tok_chargeDeclined` is declined.
    #[schema(pattern = "^[A-Za-z0-9_]{1,64}$", example = "tok_visa")]
    payment_token: Option<String>,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LineItem {
    #[schema(min_length = 1, max_length = 64, example = "book")]
    sku: String,
    #[schema(minimum = 1, maximum = 10000, example = 1)]
    quantity: u32,
    #[schema(minimum = 1, maximum = 100000000, example = 1500)]
    unit_price_cents: u64,
}

/// Where an order is in its life.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Order API",
        description = "The front door of the event-driven order pipeline: place, read, list and cancel orders, and read an order's event history.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::place_order,
        super::list_orders,
        super::get_order,
        super::cancel_order,
        super::get_events
    ),
    components(schemas(OrderRequest, LineItem, OrderStatus, Problem, FieldError)),
    tags((name = "orders", description = "Orders"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn spec() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: a browsable page of the contract.
pub fn docs() -> axum::Router<std::sync::Arc<crate::Order>> {
    axum::Router::new().merge(Scalar::with_url("/docs", ApiDoc::openapi()))
}

// The documented bounds are the parser's bounds.
const _: () = {
    assert!(request::MAX_ITEMS == 100);
    assert!(request::MAX_QUANTITY == 10_000);
    assert!(request::MAX_UNIT_PRICE_CENTS == 100_000_000);
    assert!(request::MAX_SKU_LEN == 64);
    assert!(request::MAX_TOKEN_LEN == 64);
};
