//! Property tests for the order service's front door,
//! [`order::api::request::NewOrder::parse`]: whatever JSON a client sends,
//! it answers without panicking; what it accepts keeps every documented
//! bound and carries the checked total; what it refuses names real fields;
//! and every body made of valid parts is accepted as sent.
//!
//! No stack is started: these run in milliseconds beside the end-to-end
//! tests of the same binary.

use order::api::request::{
    DEFAULT_PAYMENT_TOKEN, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_LEN, MAX_TOKEN_LEN,
    MAX_UNIT_PRICE_CENTS, NewOrder, check_email,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value, nested a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names a body might have: the real ones, often, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "customer_email", "items", "payment_token", "sku", "quantity", "unit_price_cents",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
    ]
}

/// A number around the bounds: zero, one, the maximum and one past it,
/// negative, fractional, huge, or anything.
fn count(max: u64) -> impl Strategy<Value = Value> {
    prop_oneof![
        24 => (1..=max).prop_map(Value::from),
        1 => prop::sample::select(vec![0, 1, max, max + 1, u64::MAX]).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => (-1e6f64..1e6).prop_map(Value::from),
        1 => any_json(),
    ]
}

fn valid_email() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._+-]{0,10}[a-z0-9]@[a-z0-9]{1,10}(\\.[a-z]{2,6}){1,2}"
        .prop_filter("no `..`", |e| !e.contains(".."))
}

fn email() -> impl Strategy<Value = Value> {
    prop_oneof![
        16 => valid_email().prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => "[a-z.@-]{0,20}".prop_map(Value::String),
        1 => Just(Value::String(format!("{}@example.com", "a".repeat(250)))),
        1 => any_json(),
    ]
}

fn sku() -> impl Strategy<Value = Value> {
    prop_oneof![
        24 => "[A-Za-z0-9 _-]{1,64}".prop_filter("not blank", |s| !s.trim().is_empty()).prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => Just(Value::String("x".repeat(MAX_SKU_LEN + 1))),
        1 => Just(Value::String("bad\u{7}sku".to_owned())),
        1 => any_json(),
    ]
}

fn token() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        12 => "[A-Za-z0-9_]{1,64}".prop_map(|t| Some(Value::String(t))),
        1 => any::<String>().prop_map(|t| Some(Value::String(t))),
        1 => Just(Some(Value::String("t".repeat(MAX_TOKEN_LEN + 1)))),
        1 => any_json().prop_map(Some),
    ]
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        16 => (
            prop::option::weighted(0.95, sku()),
            prop::option::weighted(0.95, count(MAX_QUANTITY)),
            prop::option::weighted(0.95, count(MAX_UNIT_PRICE_CENTS)),
        )
            .prop_map(|(sku, quantity, price)| {
                let mut item = Map::new();
                for (key, value) in [("sku", sku), ("quantity", quantity), ("unit_price_cents", price)] {
                    if let Some(value) = value {
                        item.insert(key.to_owned(), value);
                    }
                }
                Value::Object(item)
            }),
        1 => any_json(),
    ]
}

/// A body shaped like an order, each part valid or not at random.
fn order_body() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.95, email()),
        prop_oneof![
            8 => prop::collection::vec(item(), 1..5).prop_map(|items| Some(Value::Array(items))),
            1 => Just(Some(json!([]))),
            1 => prop::collection::vec(item(), MAX_ITEMS..=MAX_ITEMS + 1)
                .prop_map(|items| Some(Value::Array(items))),
            1 => Just(None),
            1 => any_json().prop_map(Some),
        ],
        token(),
    )
        .prop_map(|(email, items, token)| {
            let mut body = Map::new();
            for (key, value) in [
                ("customer_email", email),
                ("items", items),
                ("payment_token", token),
            ] {
                if let Some(value) = value {
                    body.insert(key.to_owned(), value);
                }
            }
            Value::Object(body)
        })
}

/// Whether `field` is something the request has: `""` (the body),
/// `customer_email`, `items`, `items[i]` or `items[i].<field>` for an item
/// the body holds, or `payment_token`.
fn names_a_real_field(field: &str, body: &Value) -> bool {
    if matches!(field, "" | "customer_email" | "items" | "payment_token") {
        return true;
    }
    let Some(rest) = field.strip_prefix("items[") else {
        return false;
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return false;
    };
    let count = body["items"].as_array().map_or(0, Vec::len);
    index.parse::<usize>().is_ok_and(|i| i < count)
        && matches!(rest, "" | ".sku" | ".quantity" | ".unit_price_cents")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any JSON at all gets an answer, and a refusal always says why.
    #[test]
    fn arbitrary_json_never_panics(body in any_json()) {
        if let Err(errors) = NewOrder::parse(&body) {
            prop_assert!(!errors.is_empty(), "a refusal names at least one problem");
        }
    }

    /// What is accepted keeps every documented bound, is what the client
    /// sent, and totals exactly; what is refused names fields the request has.
    #[test]
    fn accepted_orders_keep_every_bound_and_total_exactly(body in order_body()) {
        match NewOrder::parse(&body) {
            Ok(order) => {
                prop_assert_eq!(check_email(&order.customer_email), Ok(()));
                prop_assert!(order.customer_email.len() <= 254);
                prop_assert_eq!(body["customer_email"].as_str(), Some(order.customer_email.as_str()));

                let sent = body["items"].as_array().cloned().unwrap_or_default();
                prop_assert!(!order.items.is_empty() && order.items.len() <= MAX_ITEMS);
                prop_assert_eq!(order.items.len(), sent.len(), "no item dropped");
                let mut total: u128 = 0;
                for (item, sent) in order.items.iter().zip(&sent) {
                    prop_assert!(!item.sku.trim().is_empty());
                    prop_assert!(item.sku.chars().count() <= MAX_SKU_LEN);
                    prop_assert!(!item.sku.chars().any(char::is_control));
                    prop_assert!((1..=MAX_QUANTITY).contains(&u64::from(item.quantity)));
                    prop_assert!((1..=MAX_UNIT_PRICE_CENTS).contains(&item.unit_price_cents));
                    prop_assert_eq!(sent["sku"].as_str(), Some(item.sku.as_str()));
                    prop_assert_eq!(sent["quantity"].as_u64(), Some(u64::from(item.quantity)));
                    prop_assert_eq!(sent["unit_price_cents"].as_u64(), Some(item.unit_price_cents));
                    total += u128::from(item.quantity) * u128::from(item.unit_price_cents);
                }
                prop_assert_eq!(u128::from(order.total_cents), total, "the checked sum");

                let token = &order.payment_token;
                match &body["payment_token"] {
                    Value::Null => prop_assert_eq!(token.as_str(), DEFAULT_PAYMENT_TOKEN),
                    sent => prop_assert_eq!(sent.as_str(), Some(token.as_str())),
                }
                prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
                prop_assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for error in &errors {
                    prop_assert!(
                        names_a_real_field(&error.field, &body),
                        "`{}` ({}) is not a field of {}", error.field, error.message, body
                    );
                    prop_assert!(!error.message.is_empty());
                }
            }
        }
    }

}

proptest! {
    // Up to a hundred items per case: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A body made only of valid parts is always accepted, as sent.
    #[test]
    fn every_valid_order_is_accepted(
        email in valid_email(),
        items in prop::collection::vec(
            ("[A-Za-z0-9_-]{1,64}", 1..=MAX_QUANTITY, 1..=MAX_UNIT_PRICE_CENTS),
            1..=MAX_ITEMS,
        ),
        token in prop::option::of("[A-Za-z0-9_]{1,64}"),
    ) {
        let mut body = json!({
            "customer_email": email,
            "items": items
                .iter()
                .map(|(sku, q, p)| json!({"sku": sku, "quantity": q, "unit_price_cents": p}))
                .collect::<Vec<_>>(),
        });
        if let Some(token) = &token {
            body["payment_token"] = json!(token);
        }
        let order = NewOrder::parse(&body)
            .map_err(|e| TestCaseError::fail(format!("refused {body}: {e:?}")))?;
        let total: u128 = items.iter().map(|(_, q, p)| u128::from(*q) * u128::from(*p)).sum();
        prop_assert_eq!(u128::from(order.total_cents), total);
        prop_assert_eq!(order.customer_email, email);
        prop_assert_eq!(order.payment_token, token.unwrap_or_else(|| DEFAULT_PAYMENT_TOKEN.to_owned()));
    }
}
