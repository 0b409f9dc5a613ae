//! Bad requests get a clear `application/problem+json` answer naming what is
//! wrong, never a 5xx and never an order.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_orders_are_refused_field_by_field() {
    let app = spawn_app().await;

    let empty = problem(app.post_order_raw(Some("application/json"), "").await, 400).await;
    assert_eq!(fields(&empty), ["customer_email", "items"]);

    let malformed = problem(
        app.post_order_raw(Some("application/json"), "{\"customer_email\": ")
            .await,
        400,
    )
    .await;
    assert!(
        malformed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not valid JSON"))
    );

    let wrong_type = problem(app.post_order_raw(Some("text/plain"), "hello").await, 415).await;
    assert!(
        wrong_type["detail"]
            .as_str()
            .is_some_and(|d| d.contains("text/plain"))
    );
    problem(app.post_order_raw(None, "{}").await, 415).await;

    let item = |quantity: Value, price: Value| json!({"sku": "book", "quantity": quantity, "unit_price_cents": price});
    let cases = [
        (
            json!({"customer_email": "a@example.com", "items": []}),
            vec!["items"],
        ),
        (json!({"customer_email": "a@example.com"}), vec!["items"]),
        (
            json!({"customer_email": "not-an-email", "items": [item(json!(1), json!(100))]}),
            vec!["customer_email"],
        ),
        (
            json!({"items": [item(json!(1), json!(100))]}),
            vec!["customer_email"],
        ),
        (
            json!({"customer_email": "a@example.com", "items": [item(json!(0), json!(100))]}),
            vec!["items[0].quantity"],
        ),
        (
            json!({"customer_email": "a@example.com", "items": [item(json!(-3), json!(100))]}),
            vec!["items[0].quantity"],
        ),
        (
            json!({"customer_email": "a@example.com", "items": [item(json!(1), json!(0))]}),
            vec!["items[0].unit_price_cents"],
        ),
        (
            json!({"customer_email": "a@example.com", "items": [item(json!(1), json!(-1))]}),
            vec!["items[0].unit_price_cents"],
        ),
        (
            json!({"customer_email": "nope", "items": [item(json!(0), json!(-1))], "payment_token": 7}),
            vec![
                "customer_email",
                "items[0].quantity",
                "items[0].unit_price_cents",
                "payment_token",
            ],
        ),
    ];
    for (body, expected) in cases {
        let answer = problem(app.post_order(&body).await, 422).await;
        assert_eq!(fields(&answer), expected, "for {body}");
    }

    let too_big = "x".repeat(order::api::MAX_BODY_BYTES + 1);
    problem(
        app.post_order_raw(Some("application/json"), too_big).await,
        413,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_orders_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        format!("/orders/{}", uuid::Uuid::new_v4()),
        format!("/orders/{}/events", uuid::Uuid::new_v4()),
        "/orders/not-a-uuid".to_owned(),
        "/nothing-here".to_owned(),
    ] {
        let body = problem(app.get(&path).await, 404).await;
        assert!(body["detail"].is_string(), "{path}");
    }
}
