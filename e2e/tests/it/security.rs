//! NATS authorization: every client logs in, and each service may publish
//! only its own facts and read only its own state.
//!
//! `deploy/nats.conf` gives each service a user whose rights follow from
//! its code: its own subject prefix, its own dead letters, its own durable
//! consumers and KV buckets. The flow, fault and tracing tests show that the
//! services still do their whole job under those users; the tests here show
//! what the users can *not* do, through the same doors an intruder would
//! try: a connection with a stolen service password, an anonymous one, a
//! guessed password. A first pair of tests holds `nats.conf` to the code, so
//! a new consumer or bucket cannot ship without its grant (or keep a stale
//! one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use e2e::{NATS_USERS, SERVICES, repo_root, wait_for};
use events::streams;
use platform::consumer::ConsumerSpec;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::helpers::{TestApp, customer, spawn_app};

/// How long a refused request waits for the answer that never comes.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(2);

// ------------------------------------------------------------ nats.conf

/// One user's allow lists in `deploy/nats.conf`.
#[derive(Debug, Default)]
struct Grants {
    /// Whether the user has a `permissions` block at all (none: full rights).
    restricted: bool,
    publish: BTreeSet<String>,
    subscribe: BTreeSet<String>,
    password: String,
}

/// Reads the users out of `deploy/nats.conf`. The file is hand-written in a
/// regular shape (one `user:` per block, quoted subjects in `allow: [...]`),
/// which is all this reader understands.
fn nats_conf() -> (String, BTreeMap<String, Grants>) {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/nats.conf")).expect("deploy/nats.conf");
    let code: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut users = BTreeMap::new();
    let mut blocks = code.split("user:").skip(1);
    for block in blocks.by_ref() {
        let name = block
            .split_whitespace()
            .next()
            .expect("a user name")
            .to_owned();
        let allow = |section: &str| -> BTreeSet<String> {
            let Some(start) = block.find(section) else {
                return BTreeSet::new();
            };
            let rest = &block[start..];
            let list = &rest[rest.find('[').expect("an allow list") + 1..];
            let list = &list[..list.find(']').expect("a closed allow list")];
            list.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let password = block
            .split("password:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        users.insert(
            name,
            Grants {
                restricted: block.contains("permissions"),
                publish: allow("publish:"),
                subscribe: allow("subscribe:"),
                password,
            },
        );
    }
    (code, users)
}

/// What a service's code needs: its consumers, the stream it owns and the
/// buckets it keeps, turned into the subjects async-nats uses for them.
fn needed_by(service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (consumers, buckets, extra): (Vec<ConsumerSpec>, Vec<&str>, Vec<String>) = match service {
        "order" => (
            order::consumers(),
            vec![order::view::VIEWS_BUCKET],
            vec![
                // The event store replays an order by direct gets.
                format!("$JS.API.DIRECT.GET.{}", streams::ORDERS.name),
                // `GET /orders` lists the views' keys with an ephemeral
                // ordered consumer, and answers its flow control.
                format!("$JS.API.CONSUMER.CREATE.KV_{}", order::view::VIEWS_BUCKET),
                format!("$JS.FC.KV_{}.>", order::view::VIEWS_BUCKET),
            ],
        ),
        "payment" => (
            payment::consumers(),
            vec![payment::CHARGES_BUCKET, payment::REFUNDS_BUCKET],
            vec![],
        ),
        "shipping" => (
            shipping::consumers(),
            vec![shipping::SHIPMENTS_BUCKET],
            vec![],
        ),
        _ => (email::consumers(), vec![email::SENT_BUCKET], vec![]),
    };
    let owned = streams::ALL
        .iter()
        .find(|s| s.producer == service)
        .expect("every service owns a stream");
    let mut publish: BTreeSet<String> = extra.into_iter().collect();
    publish.insert(owned.subjects());
    publish.insert(format!("{}.{service}.>", streams::DEAD_LETTERS.prefix));
    for stream in [owned, &streams::DEAD_LETTERS, &streams::REPLAYS] {
        publish.insert(format!("$JS.API.STREAM.INFO.{}", stream.name));
        publish.insert(format!("$JS.API.STREAM.CREATE.{}", stream.name));
    }
    for spec in consumers.iter().flat_map(|c| [c.clone(), c.replays()]) {
        let (stream, durable) = (spec.stream.name, &spec.durable);
        publish.insert(format!("$JS.API.STREAM.INFO.{stream}"));
        publish.insert(format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"));
        publish.insert(format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"));
        publish.insert(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"));
        publish.insert(format!("$JS.ACK.{stream}.{durable}.>"));
    }
    if !buckets.is_empty() {
        // async-nats asks for the account's limits before creating a bucket.
        publish.insert("$JS.API.INFO".to_owned());
    }
    for bucket in buckets {
        publish.insert(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
        publish.insert(format!("$JS.API.STREAM.CREATE.KV_{bucket}"));
        publish.insert(format!("$JS.API.DIRECT.GET.KV_{bucket}"));
        publish.insert(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"));
        publish.insert(format!("$KV.{bucket}.>"));
    }
    let subscribe = BTreeSet::from([format!("_INBOX_{service}.>")]);
    (publish, subscribe)
}

#[test]
fn nats_conf_grants_each_service_exactly_what_its_code_uses() {
    let (_, users) = nats_conf();
    for service in SERVICES {
        let grants = users
            .get(service)
            .unwrap_or_else(|| panic!("nats.conf has a user `{service}`"));
        assert!(grants.restricted, "{service} has a permissions block");
        let (publish, subscribe) = needed_by(service);
        let missing: Vec<&String> = publish.difference(&grants.publish).collect();
        assert!(
            missing.is_empty(),
            "{service} needs these in nats.conf, or its start-up or consumers hang: {missing:#?}"
        );
        let unused: Vec<&String> = grants.publish.difference(&publish).collect();
        assert!(
            unused.is_empty(),
            "{service} is granted what its code does not use; tighten nats.conf: {unused:#?}"
        );
        assert_eq!(
            grants.subscribe, subscribe,
            "{service} subscribes to its inbox only"
        );
    }
}

#[test]
fn nats_conf_has_no_anonymous_access_and_no_literal_password() {
    let (code, users) = nats_conf();
    assert!(!code.contains("no_auth_user"), "no anonymous fallback user");
    assert!(!code.contains("token"), "no shared token");
    let names: BTreeSet<&str> = users.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(NATS_USERS));
    for (user, grants) in &users {
        assert_eq!(
            grants.password,
            format!("$NATS_{}_PASSWORD", user.to_uppercase()),
            "{user}'s password comes from the environment"
        );
    }
    assert!(
        !users["admin"].restricted,
        "admin has full rights (tests, load generator)"
    );
    let ops = &users["ops"];
    assert!(ops.restricted);
    assert!(ops.publish.contains("replay.>"), "ops replays dead letters");
    assert!(
        ops.publish.iter().all(|s| !s.starts_with("orders.")
            && !s.starts_with("payments.")
            && !s.starts_with("shipping.")
            && !s.starts_with("emails.")),
        "ops publishes no events: {:?}",
        ops.publish
    );
}

// ------------------------------------------------------- live broker

/// A connection as `user` whose server errors (permission violations)
/// arrive on the returned channel, with short request timeouts.
async fn connect_observed(
    app: &TestApp,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let client = e2e::nats_options(user)
        .expect("credentials")
        .request_timeout(Some(REFUSED_TIMEOUT))
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = sender.send(error.to_string());
                }
            }
        })
        .connect(app.stack.nats_url())
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    (client, receiver)
}

fn jetstream_of(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(REFUSED_TIMEOUT)
        .build(client)
}

/// Waits for the server to report a permissions violation naming `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, kind: &str, subject: &str) {
    let expected = format!("Permissions Violation for {kind} to \"{subject}\"");
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(error) = errors.recv().await {
            if error.contains(&expected) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the server reports: {expected}");
}

/// CloudEvents headers for a hand-made event.
fn forged_headers(ce_type: &str, order_id: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    let id = uuid::Uuid::new_v4().to_string();
    for (name, value) in [
        ("ce-id", id.as_str()),
        ("Nats-Msg-Id", id.as_str()),
        ("ce-type", ce_type),
        ("ce-source", "payment"),
        ("ce-specversion", "1.0"),
        ("ce-time", "2026-01-01T00:00:00Z"),
        ("ce-subject", order_id),
        ("content-type", "application/json"),
    ] {
        headers.insert(name, value);
    }
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_cannot_publish_another_services_events() {
    let app = spawn_app().await;
    // A declined order: if a forged `PaymentProcessed` got through, shipping
    // would ship an order that was never paid.
    let placed = app.place_order(&customer(), "tok_chargeDeclined").await;
    app.wait_for_status(&placed.order_id, "cancelled").await;
    let id = &placed.order_id;

    // The email service's credentials, stolen.
    let (client, mut errors) = connect_observed(&app, "email").await;
    let js = jetstream_of(client);
    let subject = format!("payments.{id}.processed");
    let payload = serde_json::json!({
        "order_id": id,
        "payment_id": format!("pay_{}", id.replace('-', "")),
        "customer_email": "mallory@example.com",
        "amount_cents": 3250,
        "processed_at": "2026-01-01T00:00:00Z",
    });
    let stored = async {
        js.publish_with_headers(
            subject.clone(),
            forged_headers("payment.processed.v1", id),
            payload.to_string().into(),
        )
        .await?
        .await
    }
    .await;
    assert!(stored.is_err(), "the broker never acks it: {stored:?}");
    violation(&mut errors, "Publish", &subject).await;

    // PAYMENTS holds the real outcome and nothing else for this order.
    let admin = jetstream::new(app.stack.connect_admin().await.expect("admin"));
    let payments = admin
        .get_stream(streams::PAYMENTS.name)
        .await
        .expect("PAYMENTS");
    let forged = payments.direct_get_last_for_subject(&subject).await;
    assert_eq!(
        forged.map(|m| m.sequence).map_err(|e| e.kind()),
        Err(DirectGetErrorKind::NotFound),
        "PAYMENTS did not store the forged event"
    );
    payments
        .direct_get_last_for_subject(format!("payments.{id}.failed"))
        .await
        .expect("the real outcome is there");
    let view = app.wait_for_status(id, "cancelled").await;
    assert!(view["shipped_at"].is_null(), "nothing shipped: {view}");

    // Its own prefix is still open to it: the same client may publish an
    // email's fact (this one is not an event any consumer reads).
    let own = format!("emails.{id}.probe");
    js.publish(own.clone(), "{}".into())
        .await
        .expect("sent")
        .await
        .expect("email may publish under emails.>");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_and_wrong_password_connections_are_refused() {
    let app = spawn_app().await;
    let url = app.stack.nats_url();
    let refused = |result: Result<async_nats::Client, async_nats::ConnectError>| match result {
        Ok(_) => panic!("the broker let it in"),
        Err(error) => error.kind(),
    };
    let attempt = |options: async_nats::ConnectOptions| {
        let url = url.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                options
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url),
            )
            .await
            .expect("the broker answers")
        }
    };

    let anonymous = attempt(async_nats::ConnectOptions::new()).await;
    assert_eq!(
        refused(anonymous),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "no anonymous access"
    );
    let wrong = attempt(async_nats::ConnectOptions::with_user_and_password(
        "email".into(),
        "not-the-password".into(),
    ))
    .await;
    assert_eq!(
        refused(wrong),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "a wrong password is refused"
    );
    let payment_password = e2e::nats_credentials("payment").expect("dev password");
    let swapped = attempt(async_nats::ConnectOptions::with_user_and_password(
        "email".into(),
        payment_password.password,
    ))
    .await;
    assert_eq!(
        refused(swapped),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "another user's password is refused"
    );
    let unknown = attempt(async_nats::ConnectOptions::with_user_and_password(
        "mallory".into(),
        "dev-admin-password".into(),
    ))
    .await;
    assert_eq!(
        refused(unknown),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "an unknown user is refused"
    );

    // The right password gets in.
    let right = attempt(e2e::nats_options("email").expect("credentials")).await;
    assert!(right.is_ok(), "email logs in with its own password");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_cannot_read_another_services_bucket_or_replies() {
    let app = spawn_app().await;
    let email = customer();
    let placed = app.place_order(&email, "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;
    app.wait_for_emails(&email, 2).await;
    let id = &placed.order_id;

    // The charge is recorded (admin sees it) ...
    let admin = jetstream::new(app.stack.connect_admin().await.expect("admin"));
    let charges = admin
        .get_key_value(payment::CHARGES_BUCKET)
        .await
        .expect("the charges bucket");
    let charge = charges.get(id).await.expect("read").expect("a charge");
    assert!(!charge.is_empty());

    // ... but the email service's user can neither open the bucket ...
    let (client, mut errors) = connect_observed(&app, "email").await;
    let js = jetstream_of(client.clone());
    let opened = js.get_key_value(payment::CHARGES_BUCKET).await;
    assert!(opened.is_err(), "email cannot open payment_charges");
    violation(
        &mut errors,
        "Publish",
        &format!("$JS.API.STREAM.INFO.KV_{}", payment::CHARGES_BUCKET),
    )
    .await;

    // ... nor read a key directly ...
    let direct = format!(
        "$JS.API.DIRECT.GET.KV_{0}.$KV.{0}.{id}",
        payment::CHARGES_BUCKET
    );
    let read = client.request(direct.clone(), "".into()).await;
    assert!(read.is_err(), "no answer to a refused direct get: {read:?}");
    violation(&mut errors, "Publish", &direct).await;

    // ... nor listen to the bucket's writes, payment's events, or the
    // replies payment gets (which carry its KV reads).
    for subject in [
        format!("$KV.{}.>", payment::CHARGES_BUCKET),
        "payments.>".to_owned(),
        "_INBOX_payment.>".to_owned(),
        ">".to_owned(),
    ] {
        let _subscription = client.subscribe(subject.clone()).await.expect("sent");
        violation(&mut errors, "Subscription", &subject).await;
    }

    // Its own bucket it reads as always.
    let sent = js
        .get_key_value(email::SENT_BUCKET)
        .await
        .expect("email opens email_sent");
    let record = sent
        .get(format!("{id}.order_confirmation"))
        .await
        .expect("read");
    assert!(record.is_some(), "email reads its own records");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_works_as_its_own_user_without_a_single_violation() {
    let app = spawn_app().await;
    let paid = customer();
    let declined = customer();
    let shipped = app.place_order(&paid, "tok_visa").await;
    let cancelled = app.place_order(&declined, "tok_chargeDeclined").await;
    app.wait_for_status(&shipped.order_id, "shipped").await;
    app.wait_for_status(&cancelled.order_id, "cancelled").await;
    app.wait_for_emails(&paid, 2).await;
    app.wait_for_emails(&declined, 2).await;

    // Every service is connected under its own user.
    let connz = format!(
        "{}/connz?auth=true&limit=1024",
        app.stack.nats_monitor_url()
    );
    let users = wait_for(
        "four logged-in services",
        Duration::from_secs(10),
        || async {
            let body: Value = app.http.get(&connz).send().await.ok()?.json().await.ok()?;
            let users: BTreeMap<String, String> = body["connections"]
                .as_array()?
                .iter()
                .filter_map(|c| {
                    Some((
                        c["name"].as_str()?.to_owned(),
                        c["authorized_user"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            SERVICES
                .iter()
                .all(|s| users.contains_key(*s))
                .then_some(users)
        },
    )
    .await
    .expect("connections listed");
    for service in SERVICES {
        assert_eq!(users[service], service, "{service} logs in as itself");
    }

    // And none of them was refused anything on the way: a missing grant
    // shows up in the broker's log even where the service retries quietly.
    let log = std::fs::read_to_string(app.stack.config.state_dir.join("logs/nats.log"))
        .expect("nats log");
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ops_user_does_its_jobs_but_publishes_no_events() {
    let app = spawn_app().await;
    let email = customer();
    let placed = app.place_order(&email, "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;
    // A poison event, forged with full rights, that payment dead-letters.
    let admin = jetstream::new(app.stack.connect_admin().await.expect("admin"));
    let id = uuid::Uuid::new_v4().to_string();
    admin
        .publish_with_headers(
            format!("orders.{id}.placed"),
            forged_headers("order.exploded.v9", &id),
            "{}".into(),
        )
        .await
        .expect("sent")
        .await
        .expect("stored");

    let (client, mut errors) = connect_observed(&app, "ops").await;
    let js = jetstream_of(client);
    let letter = wait_for("payment's dead letter", Duration::from_secs(30), || async {
        let letters = ops::list(&js).await.ok()?;
        letters
            .into_iter()
            .find(|l| l.service == "payment" && l.subject.contains(&id))
    })
    .await
    .expect("ops lists dead letters");
    let replayed = ops::replay(&js, &letter).await.expect("ops replays");
    assert!(replayed.starts_with("replay."), "{replayed}");

    let forged = format!("orders.{id}.placed");
    let stored = async {
        js.publish_with_headers(
            forged.clone(),
            forged_headers("order.placed.v1", &id),
            "{}".into(),
        )
        .await?
        .await
    }
    .await;
    assert!(stored.is_err(), "ops cannot place orders: {stored:?}");
    violation(&mut errors, "Publish", &forged).await;

    // It rebuilds the read model, and the order comes back as it was.
    let rebuilt = ops::views::rebuild(&js, Duration::from_secs(60))
        .await
        .expect("ops rebuilds the views");
    assert!(rebuilt.dropped >= 1, "{rebuilt:?}");
    app.wait_for_status(&placed.order_id, "shipped").await;

    // The forged order is the only thing the broker refused it.
    let log = std::fs::read_to_string(app.stack.config.state_dir.join("logs/nats.log"))
        .expect("nats log");
    let violations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Violation") && !l.contains(&forged))
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
}
