//! `POST /orders` bodies: parse, don't validate.
//!
//! The body is read as untyped JSON and turned into a [`NewOrder`] only if
//! every field is right; otherwise the client gets every problem at once, each
//! naming its field. Reading from `serde_json::Value` rather than deriving
//! `Deserialize` is deliberate: serde stops at the first error and words it
//! for Rust programmers, while a client wants all of them, in its own terms.

use events::LineItem;
use serde_json::{Map, Value};

use super::problem::FieldError;

/// At most this many lines per order.
pub const MAX_ITEMS: usize = 100;
/// At most this many of one item.
pub const MAX_QUANTITY: u64 = 10_000;
/// At most this price for one item, in cents ($1,000,000).
pub const MAX_UNIT_PRICE_CENTS: u64 = 100_000_000;
/// The longest SKU.
pub const MAX_SKU_LEN: usize = 64;
/// The longest payment token.
pub const MAX_TOKEN_LEN: usize = 64;
/// The token used when the request names none.
pub const DEFAULT_PAYMENT_TOKEN: &str = "tok_visa";

/// A valid order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total_cents: u64,
    pub payment_token: String,
}

/// The fields every order must have, for a body that has none.
pub fn required_fields() -> Vec<FieldError> {
    vec![
        FieldError::new("customer_email", "is required"),
        FieldError::new("items", "is required"),
    ]
}

impl NewOrder {
    /// Parses a JSON body into a valid order, or lists every invalid field.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("", "the body must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let customer_email = parse_email(object, &mut errors);
        let items = parse_items(object, &mut errors);
        let payment_token = parse_token(object, &mut errors);

        let total_cents = items.iter().try_fold(0u64, |total, item| {
            u64::from(item.quantity)
                .checked_mul(item.unit_price_cents)
                .and_then(|line| total.checked_add(line))
        });
        if total_cents.is_none() {
            errors.push(FieldError::new("items", "the order total is too large"));
        }
        match (errors.is_empty(), customer_email, total_cents) {
            (true, Some(customer_email), Some(total_cents)) => Ok(Self {
                customer_email,
                items,
                total_cents,
                payment_token,
            }),
            _ => Err(errors),
        }
    }
}

fn parse_email(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match object.get("customer_email") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("customer_email", "is required"));
            None
        }
        Some(Value::String(email)) => match check_email(email) {
            Ok(()) => Some(email.clone()),
            Err(message) => {
                errors.push(FieldError::new("customer_email", message));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("customer_email", "must be a string"));
            None
        }
    }
}

/// A pragmatic address check: one `@`, a sensible local part, and a domain
/// of at least two dot-separated labels of letters, digits and hyphens. It
/// accepts every address a mail server will take in practice and rejects what
/// would bounce the confirmation email.
pub fn check_email(email: &str) -> Result<(), &'static str> {
    if email.len() > 254 {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address like name@example.com");
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err("must be an email address like name@example.com")
    }
}

fn parse_items(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<LineItem> {
    let items = match object.get("items") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("items", "is required"));
            return Vec::new();
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new("items", "must be an array"));
            return Vec::new();
        }
    };
    if items.is_empty() {
        errors.push(FieldError::new("items", "must contain at least one item"));
    }
    if items.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "items",
            format!("must contain at most {MAX_ITEMS} items"),
        ));
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_item(i, item, errors))
        .collect()
}

fn parse_item(index: usize, item: &Value, errors: &mut Vec<FieldError>) -> Option<LineItem> {
    let path = |field: &str| format!("items[{index}].{field}");
    let Some(object) = item.as_object() else {
        errors.push(FieldError::new(
            format!("items[{index}]"),
            "must be an object",
        ));
        return None;
    };
    let before = errors.len();
    let sku = match object.get("sku") {
        Some(Value::String(sku)) if sku.trim().is_empty() => {
            errors.push(FieldError::new(path("sku"), "must not be empty"));
            None
        }
        Some(Value::String(sku)) if sku.chars().count() > MAX_SKU_LEN => {
            errors.push(FieldError::new(
                path("sku"),
                format!("must be at most {MAX_SKU_LEN} characters"),
            ));
            None
        }
        Some(Value::String(sku)) if sku.chars().any(char::is_control) => {
            errors.push(FieldError::new(
                path("sku"),
                "must not contain control characters",
            ));
            None
        }
        Some(Value::String(sku)) => Some(sku.clone()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(path("sku"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(path("sku"), "must be a string"));
            None
        }
    };
    let quantity = positive_integer(
        object.get("quantity"),
        MAX_QUANTITY,
        &path("quantity"),
        errors,
    );
    let unit_price_cents = positive_integer(
        object.get("unit_price_cents"),
        MAX_UNIT_PRICE_CENTS,
        &path("unit_price_cents"),
        errors,
    );
    if errors.len() > before {
        return None;
    }
    Some(LineItem {
        sku: sku?,
        quantity: u32::try_from(quantity?).ok()?,
        unit_price_cents: unit_price_cents?,
    })
}

fn positive_integer(
    value: Option<&Value>,
    max: u64,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    let message = match value {
        None | Some(Value::Null) => "is required".to_owned(),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => "must be greater than zero".to_owned(),
            Some(n) if n <= max => return Some(n),
            Some(_) => format!("must be at most {max}"),
            None if n.as_i64().is_some_and(|n| n < 0) => "must be greater than zero".to_owned(),
            None if n.as_f64().is_some_and(|n| n < 0.0) => "must be greater than zero".to_owned(),
            None => "must be a whole number".to_owned(),
        },
        Some(_) => "must be a number".to_owned(),
    };
    errors.push(FieldError::new(field, message));
    None
}

fn parse_token(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> String {
    match object.get("payment_token") {
        None | Some(Value::Null) => DEFAULT_PAYMENT_TOKEN.to_owned(),
        Some(Value::String(token))
            if !token.is_empty()
                && token.len() <= MAX_TOKEN_LEN
                && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            token.clone()
        }
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "payment_token",
                format!("must be 1 to {MAX_TOKEN_LEN} letters, digits or underscores"),
            ));
            String::new()
        }
        Some(_) => {
            errors.push(FieldError::new("payment_token", "must be a string"));
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(result: Result<NewOrder, Vec<FieldError>>) -> Vec<String> {
        result
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_order_parses_with_its_total() {
        let order = NewOrder::parse(&json!({
            "customer_email": "ada@example.com",
            "items": [{"sku": "book", "quantity": 2, "unit_price_cents": 1500},
                      {"sku": "pen", "quantity": 1, "unit_price_cents": 99}]
        }))
        .expect("valid");
        assert_eq!(order.total_cents, 3099);
        assert_eq!(order.payment_token, "tok_visa");
    }

    #[test]
    fn every_bad_field_is_named() {
        let result = NewOrder::parse(&json!({
            "customer_email": "not-an-email",
            "items": [{"sku": "", "quantity": 0, "unit_price_cents": -5},
                      {"sku": "ok", "quantity": 1.5, "unit_price_cents": "12"}],
            "payment_token": "tok with spaces"
        }));
        assert_eq!(
            fields(result),
            [
                "customer_email",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price_cents",
                "items[1].quantity",
                "items[1].unit_price_cents",
                "payment_token"
            ]
        );
    }

    #[test]
    fn missing_and_empty_are_reported() {
        assert_eq!(
            fields(NewOrder::parse(&json!({}))),
            ["customer_email", "items"]
        );
        assert_eq!(
            fields(NewOrder::parse(
                &json!({"customer_email": "a@b.co", "items": []})
            )),
            ["items"]
        );
        assert_eq!(fields(NewOrder::parse(&json!([1, 2]))), [""]);
    }

    #[test]
    fn totals_never_overflow() {
        let items: Vec<Value> = (0..MAX_ITEMS)
            .map(|_| json!({"sku": "gold", "quantity": MAX_QUANTITY, "unit_price_cents": MAX_UNIT_PRICE_CENTS}))
            .collect();
        let order = NewOrder::parse(&json!({"customer_email": "a@b.co", "items": items}));
        // 100 × 10,000 × 100,000,000 fits in u64, so this is accepted...
        assert!(order.is_ok());
        // ...and the limits keep every total far from overflow.
        assert!(
            (MAX_ITEMS as u64)
                .checked_mul(MAX_QUANTITY)
                .and_then(|n| n.checked_mul(MAX_UNIT_PRICE_CENTS))
                .is_some()
        );
    }

    #[test]
    fn email_check() {
        for good in ["ada@example.com", "a.b+c@sub.example.org", "x@y.io"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@exa mple.com",
            "a..b@example.com",
            "ada@-x.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }
}
