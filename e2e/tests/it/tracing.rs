//! One order is one trace across all four services, read back from Jaeger.

use std::collections::{BTreeMap, BTreeSet};

use e2e::wait_for;

use crate::helpers::{Span, TRACE_DEADLINE, customer, services, spawn_app, spawn_app_with};

/// Every consumer that handles something of a shipped order. The order
/// service's projection sees its own three events.
const SHIPPED_ORDER_CONSUMERS: &[&str] = &[
    "payment-on-order-events",
    "shipping-on-order-events",
    "order-on-payment-outcome",
    "order-on-order-shipped",
    "email-on-order-events",
    "email-on-order-events",
    "order-projection",
    "order-projection",
    "order-projection",
];

/// The order service reading its own event stream to keep its read model:
/// the one consumer whose producer is in the same service.
const PROJECTION: &str = "order-projection";

fn assert_messaging_attributes(span: &Span) {
    assert_eq!(span.attr_str("messaging.system"), Some("nats"), "{span:?}");
    for key in [
        "messaging.destination.name",
        "messaging.operation.type",
        "messaging.message.id",
    ] {
        assert!(
            span.attr_str(key).is_some_and(|v| !v.is_empty()),
            "{key} on {span:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_one_trace_across_all_four_services() {
    let app = spawn_app().await;
    let placed = app.place_order(&customer(), "tok_visa").await;
    let spans = app
        .wait_for_trace(&placed.trace_id, SHIPPED_ORDER_CONSUMERS)
        .await;

    assert_eq!(
        services(&spans),
        BTreeSet::from(["order", "payment", "shipping", "email"].map(String::from))
    );

    // A single root: the HTTP request.
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].service, "order");
    assert_eq!(roots[0].kind, "server");
    assert_eq!(roots[0].name, "POST /orders");

    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let consumers: Vec<&Span> = spans.iter().filter(|s| s.kind == "consumer").collect();
    assert_eq!(
        consumers.len(),
        SHIPPED_ORDER_CONSUMERS.len(),
        "{consumers:#?}"
    );
    for consumer in &consumers {
        assert_messaging_attributes(consumer);
        assert_eq!(
            consumer.attr_str("messaging.operation.type"),
            Some("process")
        );
        assert!(
            consumer
                .attributes
                .contains_key("messaging.nats.delivery_count"),
            "{consumer:?}"
        );
        let parent = consumer
            .parent_span_id
            .as_deref()
            .and_then(|id| by_id.get(id))
            .unwrap_or_else(|| panic!("the parent of {consumer:?} is in the trace"));
        assert_eq!(
            parent.kind, "producer",
            "{} is a child of a producer",
            consumer.name
        );
        assert_eq!(
            parent.attr_str("messaging.message.id"),
            consumer.attr_str("messaging.message.id"),
            "the consumer handled the message that producer sent"
        );
        if consumer.attr_str("messaging.consumer.group.name") == Some(PROJECTION) {
            assert_eq!(parent.service, "order");
        } else {
            assert_ne!(
                parent.service, consumer.service,
                "{} crosses a service boundary",
                consumer.name
            );
        }
    }
    for producer in spans.iter().filter(|s| s.kind == "producer") {
        assert_messaging_attributes(producer);
        assert_eq!(producer.attr_str("messaging.operation.type"), Some("send"));
    }
    // Each SMTP conversation has a span of its own inside the email consumer.
    let smtp: Vec<&Span> = spans.iter().filter(|s| s.name == "smtp send").collect();
    assert_eq!(smtp.len(), 2);
    assert!(
        smtp.iter()
            .all(|s| s.service == "email" && s.kind == "client")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn link_mode_starts_a_trace_per_hop_linked_to_its_producer() {
    let app = spawn_app_with(|config| config.consumer_spans = "link".into()).await;
    let placed = app.place_order(&customer(), "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;

    // The HTTP trace ends at the first publish: nothing downstream joins it.
    let http_trace = wait_for("the HTTP trace", TRACE_DEADLINE, || async {
        let spans = app.trace(&placed.trace_id).await;
        spans.iter().any(|s| s.kind == "producer").then_some(spans)
    })
    .await
    .expect("the HTTP trace reaches Jaeger");
    assert!(
        http_trace.iter().all(|s| s.service == "order"),
        "{http_trace:#?}"
    );
    assert!(http_trace.iter().all(|s| s.kind != "consumer"));
    let producer = http_trace
        .iter()
        .find(|s| s.kind == "producer")
        .expect("the OrderPlaced publish");

    // Payment's consumer span is the root of its own trace and links back.
    let consumer = wait_for("payment's linked consumer span", TRACE_DEADLINE, || async {
        app.traces_of("payment").await.into_iter().find(|s| {
            s.kind == "consumer"
                && s.links
                    .contains(&(placed.trace_id.clone(), producer.span_id.clone()))
        })
    })
    .await
    .expect("a consumer span linked to the producer");
    assert_ne!(consumer.trace_id, placed.trace_id);
    assert_eq!(consumer.parent_span_id, None, "a root, not a child");
    assert_messaging_attributes(&consumer);
}
