//! The order flow through all four services, as a customer sees it.

use crate::helpers::{Placed, TestApp, customer, history_types, spawn_app};

/// Waits for the order's two emails and checks there are exactly those two,
/// to the customer, with these subject endings (in sorted order). "Exactly"
/// is only a fair check once both `EmailSent` publishes are in the trace.
async fn assert_exactly_two_emails(
    app: &TestApp,
    email: &str,
    placed: &Placed,
    endings: [&str; 2],
) {
    app.wait_for_emails(email, 2).await;
    app.wait_for_trace(
        &placed.trace_id,
        &["email-on-order-events", "email-on-order-events"],
    )
    .await;
    let mails = app.emails_to(email).await;
    assert_eq!(mails.len(), 2, "exactly two emails: {mails:?}");
    assert!(mails.iter().all(|m| m.to == [email.to_owned()]));
    let mut subjects: Vec<String> = mails.into_iter().map(|m| m.subject).collect();
    subjects.sort_unstable();
    let want = endings.map(|end| format!("Order {} {end}", placed.order_id));
    assert_eq!(subjects, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_order_ships_and_the_customer_gets_two_emails() {
    let app = spawn_app().await;
    let email = customer();

    let placed = app.place_order(&email, "tok_visa").await;
    let view = app.wait_for_status(&placed.order_id, "shipped").await;

    assert_eq!(view["customer_email"], email.as_str());
    assert_eq!(view["total_cents"], 3250);
    assert!(
        view["tracking_number"]
            .as_str()
            .is_some_and(|t| t.starts_with("TRK"))
    );
    for step in ["placed_at", "paid_at", "shipped_at"] {
        assert!(view[step].is_string(), "{step} is set: {view}");
    }
    assert!(view["cancelled_at"].is_null());

    assert_exactly_two_emails(&app, &email, &placed, ["confirmed", "shipped"]).await;

    // The event store holds the order's whole history, in order.
    let types = history_types(&app, &placed.order_id).await;
    assert_eq!(
        types,
        ["order.placed.v1", "order.paid.v1", "order.fulfilled.v1"]
    );
    let history: serde_json::Value = app
        .get(&format!("/orders/{}/events", placed.order_id))
        .await
        .json()
        .await
        .expect("history JSON");
    assert_eq!(history["events"][0]["trace_id"], placed.trace_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_cancels_the_order_with_two_emails() {
    let app = spawn_app().await;
    let email = customer();

    let placed = app.place_order(&email, "tok_chargeDeclined").await;
    let view = app.wait_for_status(&placed.order_id, "cancelled").await;

    assert!(view["cancelled_at"].is_string());
    assert!(view["paid_at"].is_null());
    assert!(view["tracking_number"].is_null());
    assert!(
        view["cancellation_reason"]
            .as_str()
            .is_some_and(|r| r.contains("declined")),
        "{view}"
    );

    assert_exactly_two_emails(&app, &email, &placed, ["cancelled", "confirmed"]).await;
    // A cancelled order never ships.
    let types = history_types(&app, &placed.order_id).await;
    assert_eq!(types, ["order.placed.v1", "order.cancelled.v1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_returns_the_same_order() {
    let app = spawn_app().await;
    let email = customer();
    let body = crate::helpers::order_body(&email, "tok_visa");
    let key = uuid::Uuid::new_v4().to_string();
    let post = || async {
        app.http
            .post(format!("{}/orders", app.stack.order_url()))
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(body.to_string())
            .send()
            .await
            .expect("answered")
    };

    let first = post().await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.expect("JSON");
    let second = post().await;
    assert_eq!(second.status(), 202);
    let second: serde_json::Value = second.json().await.expect("JSON");
    assert_eq!(first, second, "the same answer, trace id included");

    let order_id = first["order_id"].as_str().expect("order id");
    app.wait_for_status(order_id, "shipped").await;
    app.wait_for_emails(&email, 2).await;
    let history: serde_json::Value = app
        .get(&format!("/orders/{order_id}/events"))
        .await
        .json()
        .await
        .expect("history JSON");
    let placed = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "order.placed.v1")
        .count();
    assert_eq!(placed, 1, "one order, however often it was posted");

    // The same key with a different body is refused.
    let other = app
        .http
        .post(format!("{}/orders", app.stack.order_url()))
        .header("content-type", "application/json")
        .header("idempotency-key", &key)
        .body(crate::helpers::order_body(&customer(), "tok_visa").to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(other.status(), 422);
    assert_eq!(
        other
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}
