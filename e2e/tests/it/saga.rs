//! Event sourcing, CQRS and the cancellation saga, through the public doors.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::wait_for;
use serde_json::Value;

use crate::helpers::{TestApp, customer, history_types, spawn_app, subject_counts};

async fn post_cancel(app: &TestApp, order_id: &str) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/orders/{order_id}/cancel",
            app.stack.order_url()
        ))
        .send()
        .await
        .expect("cancel answered")
}

async fn email_subjects(app: &TestApp, email: &str) -> Vec<String> {
    let mut subjects: Vec<String> = app
        .emails_to(email)
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    subjects.sort_unstable();
    subjects
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_paid_order_refunds_it_once_and_it_never_ships() {
    let app = spawn_app().await;
    let email = customer();
    // Park shipping, so the order stays `paid` long enough to cancel it.
    let mut app = app;
    app.stack.stop("shipping").await.expect("shipping stopped");
    let placed = app.place_order(&email, "tok_visa").await;
    app.wait_for_status(&placed.order_id, "paid").await;

    let response = post_cancel(&app, &placed.order_id).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "cancelled");
    // Cancelling again answers the same and changes nothing.
    assert_eq!(post_cancel(&app, &placed.order_id).await.status(), 202);

    app.stack
        .start_service("shipping")
        .await
        .expect("shipping back");
    app.stack.wait_ready("shipping").await.expect("ready");

    let view = wait_for(
        "the refund to be recorded",
        Duration::from_secs(30),
        || async {
            let view: Value = app
                .get(&format!("/orders/{}", placed.order_id))
                .await
                .json()
                .await
                .ok()?;
            (view["payment_status"] == "refunded").then_some(view)
        },
    )
    .await
    .expect("refunded");
    assert_eq!(view["status"], "cancelled");
    assert!(view["refunded_at"].is_string() && view["paid_at"].is_string());
    assert!(view["tracking_number"].is_null(), "never shipped: {view}");

    app.wait_for_emails(&email, 3).await;
    let id = &placed.order_id;
    assert_eq!(
        email_subjects(&app, &email).await,
        [
            format!("Order {id} cancelled"),
            format!("Order {id} confirmed"),
            format!("Order {id} refunded")
        ]
    );
    assert_eq!(
        history_types(&app, id).await,
        [
            "order.placed.v1",
            "order.paid.v1",
            "order.cancelled.v1",
            "order.refunded.v1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shipped_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let placed = app.place_order(&customer(), "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;
    let response = post_cancel(&app, &placed.order_id).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let unknown = post_cancel(&app, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(unknown.status(), 404);
}

/// Cancel right after placing, many times over, so the cancellation races
/// the payment, the shipment and their recording. Whatever the interleaving,
/// each order ends in one of two consistent outcomes, pinned down here:
/// - the cancellation lost (409, the order had shipped): shipped, charged,
///   emails "confirmed" and "shipped", no refund;
/// - the cancellation won (202): cancelled, never a "shipped" email, and if a
///   charge happened it is refunded exactly once (with a "refunded" email); a
///   shipment scheduled in the meantime is recalled exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_races_payment_and_shipment_with_consistent_outcomes() {
    const ORDERS: usize = 40;
    let app = spawn_app().await;
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let email = customer();
        let placed = app.place_order(&email, "tok_visa").await;
        // Vary the head start the payment gets, from none to a few ms.
        if i % 4 != 0 {
            tokio::time::sleep(Duration::from_millis((i % 4) as u64 * 2)).await;
        }
        let status = post_cancel(&app, &placed.order_id).await.status().as_u16();
        orders.push((placed.order_id, email, status));
    }

    let client = app.stack.connect_admin().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut outcomes = BTreeMap::new();
    for (order_id, email, status) in &orders {
        let id = order_id.as_str();
        match status {
            409 => {
                app.wait_for_status(id, "shipped").await;
                app.wait_for_emails(email, 2).await;
                assert_eq!(
                    email_subjects(&app, email).await,
                    [
                        format!("Order {id} confirmed"),
                        format!("Order {id} shipped")
                    ]
                );
            }
            202 => {
                // Settled once the customer got every email the outcome calls for.
                let view = app.wait_for_status(id, "cancelled").await;
                // Payment records one decision per order: charged (then
                // refunded), or voided because the cancellation came first.
                let decision =
                    wait_for("the payment decision", Duration::from_secs(30), || async {
                        let charges = js.get_key_value("payment_charges").await.ok()?;
                        let record = charges.get(id).await.ok()??;
                        let record: Value = serde_json::from_slice(&record).ok()?;
                        record["outcome"].as_str().map(str::to_owned)
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}: {view}"));
                let charged = decision == "approved";
                assert!(charged || decision == "voided", "{decision}");
                if charged {
                    wait_for(
                        "the refund to be recorded",
                        Duration::from_secs(30),
                        || async {
                            let view: Value =
                                app.get(&format!("/orders/{id}")).await.json().await.ok()?;
                            (view["payment_status"] == "refunded").then_some(())
                        },
                    )
                    .await
                    .expect("refunded");
                }
                let want = if charged { 3 } else { 2 };
                app.wait_for_emails(email, want).await;
                let mut expected = vec![
                    format!("Order {id} cancelled"),
                    format!("Order {id} confirmed"),
                ];
                if charged {
                    expected.push(format!("Order {id} refunded"));
                }
                assert_eq!(email_subjects(&app, email).await, expected);
                let payments = subject_counts(&js, "PAYMENTS", &format!("payments.{id}.>")).await;
                assert_eq!(
                    payments
                        .get(&format!("payments.{id}.refunded"))
                        .copied()
                        .unwrap_or(0),
                    usize::from(charged)
                );
                let shipping = subject_counts(&js, "SHIPPING", &format!("shipping.{id}.>")).await;
                let shipped = shipping
                    .get(&format!("shipping.{id}.shipped"))
                    .copied()
                    .unwrap_or(0);
                let recalled = shipping
                    .get(&format!("shipping.{id}.cancelled"))
                    .copied()
                    .unwrap_or(0);
                assert!(
                    shipped <= 1 && recalled == shipped,
                    "a scheduled shipment is recalled once: {shipping:?}"
                );
                let types = history_types(&app, id).await;
                assert!(
                    !types.contains(&"order.fulfilled.v1".to_owned()),
                    "{types:?}"
                );
                *outcomes
                    .entry(if charged {
                        "cancelled+refunded"
                    } else {
                        "cancelled"
                    })
                    .or_insert(0) += 1;
                continue;
            }
            other => panic!("cancel answered {other}"),
        }
        *outcomes.entry("shipped").or_insert(0) += 1;
    }
    // Every order is accounted for; print the mix so a reader sees the race.
    println!("cancel race outcomes: {outcomes:?}");
    assert_eq!(outcomes.values().sum::<usize>(), ORDERS);
}

/// Every order's view, by id.
async fn snapshot(app: &TestApp, ids: &[String]) -> BTreeMap<String, Value> {
    let mut views = BTreeMap::new();
    for id in ids {
        let view: Value = app
            .get(&format!("/orders/{id}"))
            .await
            .json()
            .await
            .expect("view");
        views.insert(id.clone(), view);
    }
    views
}

#[tokio::test(flavor = "multi_thread")]
async fn views_are_listed_paged_and_read_at_a_position() {
    let app = spawn_app().await;
    let email = customer();
    let mut ids = Vec::new();
    for token in ["tok_visa", "tok_visa", "tok_chargeDeclined"] {
        let response = app
            .post_order(&crate::helpers::order_body(&email, token))
            .await;
        let body: Value = response.json().await.expect("JSON");
        let position = body["position"].as_u64().expect("a position");
        let id = body["order_id"].as_str().expect("id").to_owned();
        // Read your own write: the view at least as new as the write.
        let read = app
            .get(&format!("/orders/{id}?min_position={position}"))
            .await;
        assert_eq!(read.status(), 200);
        let header = read
            .headers()
            .get("order-position")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let view: Value = read.json().await.expect("view");
        assert!(view["position"].as_u64().is_some_and(|p| p >= position));
        assert_eq!(header, Some(view["position"].to_string()));
        ids.push(id);
    }
    app.wait_for_status(&ids[2], "cancelled").await;
    app.wait_for_status(&ids[0], "shipped").await;
    app.wait_for_status(&ids[1], "shipped").await;

    let page: Value = app
        .get(&format!(
            "/orders?customer_email={email}&status=shipped&limit=1"
        ))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(page["orders"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["next_offset"], 1);
    let rest: Value = app
        .get(&format!(
            "/orders?customer_email={email}&status=shipped&limit=1&offset=1"
        ))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(rest["next_offset"], Value::Null);
    let mut shipped = vec![
        page["orders"][0]["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        rest["orders"][0]["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    shipped.sort_unstable();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort_unstable();
    assert_eq!(shipped, want);

    let bad = app.get("/orders?status=lost&limit=1000").await;
    assert_eq!(bad.status(), 422);
    // A position the order never reaches: a bounded wait, then 409.
    let future = app
        .get(&format!("/orders/{}?min_position=999999999", ids[0]))
        .await;
    assert_eq!(future.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rebuilt_read_model_equals_the_live_one_and_survives_a_restart() {
    const ORDERS: usize = 500;
    let mut app = spawn_app().await;
    // Shipping waits until the cancellations are in, for a mix of outcomes:
    // shipped, declined, and cancelled after payment (refunded).
    app.stack.stop("shipping").await.expect("shipping parked");
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let token = if i % 5 == 4 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        let response = app
            .post_order(&crate::helpers::order_body(&customer(), token))
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("JSON");
        ids.push(body["order_id"].as_str().expect("id").to_owned());
    }
    wait_for(
        "every payment decided",
        Duration::from_secs(120),
        || async {
            let views = snapshot(&app, &ids).await;
            views
                .values()
                .all(|v| v["status"] == "paid" || v["status"] == "cancelled")
                .then_some(())
        },
    )
    .await
    .expect("payments decided");
    for id in ids.iter().step_by(7) {
        assert_eq!(post_cancel(&app, id).await.status(), 202);
    }
    app.stack
        .start_service("shipping")
        .await
        .expect("shipping back");
    // Settled: every order final and every refund recorded.
    let settled = wait_for(
        "every order to settle",
        Duration::from_secs(120),
        || async {
            let views = snapshot(&app, &ids).await;
            views
                .values()
                .all(|v| {
                    (v["status"] == "shipped" || v["status"] == "cancelled")
                        && !(v["status"] == "cancelled" && v["payment_status"] == "paid")
                })
                .then_some(views)
        },
    )
    .await
    .expect("settled");
    let states: BTreeMap<String, usize> = settled.values().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(format!("{}/{}", v["status"], v["payment_status"]))
            .or_insert(0) += 1;
        m
    });
    assert!(states.len() >= 3, "a mix of states: {states:?}");

    let client = app.stack.connect_admin().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let rebuilt = ops::views::rebuild(&js, Duration::from_secs(120))
        .await
        .expect("rebuilt");
    assert_eq!(rebuilt.dropped, ORDERS);
    let after = snapshot(&app, &ids).await;
    assert_eq!(after, settled, "the rebuilt read model equals the live one");

    app.stack.kill("order").await.expect("order killed");
    app.stack
        .start_service("order")
        .await
        .expect("order restarted");
    app.stack.wait_ready("order").await.expect("ready");
    let restarted = snapshot(&app, &ids).await;
    assert_eq!(
        restarted, settled,
        "a restarted order service serves the same state"
    );
    for id in ids.iter().take(20) {
        let events: Value = app
            .get(&format!("/orders/{id}/events"))
            .await
            .json()
            .await
            .expect("history");
        assert!(events["events"].as_array().is_some_and(|e| !e.is_empty()));
    }
}
