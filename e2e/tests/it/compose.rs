//! `docker-compose.yml` and the native stack describe the same system. No
//! Docker engine runs in CI, so this test reads the compose file with a real
//! YAML parser and holds it to the native stack's configuration: the same
//! services, environment variables, ports, health checks and versions.

use std::collections::BTreeSet;

use e2e::{Ports, SERVICES, StackConfig, repo_root, service_env};
use serde_norway::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    let mut value: Value = serde_norway::from_str(&text).expect("valid YAML");
    value.apply_merge().expect("YAML merge keys resolve");
    value
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Variables each binary reads: the shared ones and its own.
fn reads(service: &str) -> BTreeSet<&'static str> {
    let own: &[&str] = match service {
        "order" => order::ENV_VARS,
        "payment" => payment::ENV_VARS,
        "shipping" => shipping::ENV_VARS,
        _ => email::ENV_VARS,
    };
    platform::config::ENV_VARS
        .iter()
        .chain(own)
        .copied()
        .collect()
}

fn default_port(service: &str) -> u16 {
    match service {
        "order" => order::DEFAULT_PORT,
        "payment" => payment::DEFAULT_PORT,
        "shipping" => shipping::DEFAULT_PORT,
        _ => email::DEFAULT_PORT,
    }
}

/// The version pinned in `tools/<tool>/go.mod` for the native stack.
fn pinned(tool: &str, module: &str) -> String {
    let go_mod =
        std::fs::read_to_string(repo_root().join(format!("tools/{tool}/go.mod"))).expect("go.mod");
    go_mod
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(&format!("{module} ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{module} is pinned in tools/{tool}/go.mod"))
        .to_owned()
}

#[test]
fn every_service_has_a_compose_twin_with_the_native_configuration() {
    let compose = compose();
    let services = &compose["services"];
    let native = StackConfig {
        ports: Ports::DEFAULT,
        ..StackConfig::for_tests(std::env::temp_dir()).expect("config")
    };
    for name in SERVICES {
        let service = &services[name];
        assert!(service.is_mapping(), "compose has a `{name}` service");
        assert_eq!(service["build"]["args"]["SERVICE"].as_str(), Some(name));

        let env = service["environment"]
            .as_mapping()
            .expect("an environment block");
        let keys: BTreeSet<&str> = env.keys().filter_map(Value::as_str).collect();
        let native_env = service_env(&native, name);
        let native_keys: BTreeSet<&str> = native_env.keys().copied().collect();
        assert_eq!(
            keys, native_keys,
            "{name}: compose and the native stack set the same variables"
        );
        let unread: Vec<&&str> = keys.iter().filter(|k| !reads(name).contains(*k)).collect();
        assert!(unread.is_empty(), "{name} does not read {unread:?}");

        // Same ports, with compose's host names in place of 127.0.0.1.
        let port = default_port(name);
        assert_eq!(Ports::DEFAULT.service(name), port);
        assert_eq!(env_str(env, "HTTP_ADDR"), format!("0.0.0.0:{port}"));
        assert_eq!(
            env_str(env, "NATS_URL"),
            format!("nats://nats:{}", Ports::DEFAULT.nats)
        );
        assert_eq!(
            env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            format!("http://jaeger:{}", Ports::DEFAULT.jaeger_otlp_http)
        );
        assert_eq!(env_str(env, "OTEL_SERVICE_NAME"), name);
        // Each service logs in to NATS as its own user, with its password in
        // a secret file: the same file natively as in compose.
        let secret = format!("nats-{name}-password");
        assert_eq!(env_str(env, "NATS_USER"), name);
        assert_eq!(native_env["NATS_USER"], name);
        assert_eq!(
            env_str(env, "NATS_PASSWORD_FILE"),
            format!("/run/secrets/{secret}")
        );
        assert_eq!(strings(&service["secrets"]), std::slice::from_ref(&secret));
        let file = compose["secrets"][secret.as_str()]["file"]
            .as_str()
            .unwrap_or_else(|| panic!("compose declares the secret {secret}"));
        assert_eq!(
            repo_root().join(file.trim_start_matches("./")),
            e2e::nats_password_file(name),
            "{name}: compose mounts the password file the native stack uses"
        );
        assert_eq!(
            native_env["NATS_PASSWORD_FILE"],
            e2e::nats_password_file(name).display().to_string()
        );
        if name == "email" {
            assert_eq!(
                env_str(env, "SMTP_URL"),
                format!("smtp://mailpit:{}", Ports::DEFAULT.mailpit_smtp)
            );
        }
        assert!(
            strings(&service["ports"]).contains(&format!("127.0.0.1:{port}:{port}")),
            "{name} publishes {port}"
        );

        // The container health check asks the same /readyz the native stack waits on.
        assert_eq!(
            strings(&service["healthcheck"]["test"]),
            [
                "CMD".to_owned(),
                format!("/usr/local/bin/{name}"),
                "healthcheck".to_owned()
            ]
        );
        assert_eq!(
            service["depends_on"]["nats"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert!(
            service["restart"].as_str().is_some_and(|r| r != "no"),
            "{name} restarts"
        );
        assert!(
            service["stop_grace_period"].is_string(),
            "{name} drains on stop"
        );
    }
}

fn env_str<'a>(env: &'a serde_norway::Mapping, key: &str) -> &'a str {
    env.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is set"))
}

#[test]
fn infrastructure_matches_the_native_tools_and_ports() {
    let compose = compose();
    let services = &compose["services"];
    let p = Ports::DEFAULT;
    let published = |name: &str| strings(&services[name]["ports"]);
    for (name, port) in [
        ("nats", p.nats),
        ("nats", p.nats_monitor),
        ("jaeger", p.jaeger_ui),
        ("jaeger", p.jaeger_otlp_grpc),
        ("jaeger", p.jaeger_otlp_http),
        ("mailpit", p.mailpit_ui),
        ("mailpit", p.mailpit_smtp),
    ] {
        assert!(
            published(name)
                .iter()
                .any(|spec| spec.ends_with(&format!(":{port}:{port}"))),
            "{name} publishes {port}: {:?}",
            published(name)
        );
        assert!(
            services[name]["healthcheck"]["test"].is_sequence(),
            "{name} has a health check"
        );
    }

    // Images pinned to the versions the native stack installs.
    let image = |name: &str| {
        services[name]["image"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let nats = pinned("nats-server", "github.com/nats-io/nats-server/v2");
    assert_eq!(
        image("nats"),
        format!("nats:{}-alpine", nats.trim_start_matches('v'))
    );
    let mailpit = pinned("mailpit", "github.com/axllent/mailpit");
    assert_eq!(image("mailpit"), format!("axllent/mailpit:{mailpit}"));
    // Jaeger tags each release twice: v1.x for the Go module, 2.x for v2's image.
    let jaeger = pinned("jaeger", "github.com/jaegertracing/jaeger");
    assert_eq!(
        jaeger, "v1.76.0",
        "bump the image below together with tools/jaeger"
    );
    assert_eq!(image("jaeger"), "jaegertracing/jaeger:2.13.0");

    let infra_env: [(&str, &[(&str, &str)]); 3] = [
        ("nats", &e2e::NATS_ENV),
        ("jaeger", &e2e::JAEGER_ENV),
        ("mailpit", &e2e::MAILPIT_ENV),
    ];
    for (name, native) in infra_env {
        let environment = services[name]["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name} has no environment"));
        for (key, value) in native {
            assert_eq!(
                environment.get(*key).and_then(Value::as_str),
                Some(*value),
                "{name} {key}"
            );
        }
        assert_eq!(
            environment.len(),
            native.len(),
            "{name}: compose sets more than the native stack"
        );
    }

    // Both run the same configuration files.
    let mounts = |name: &str| strings(&services[name]["volumes"]).join(" ");
    assert!(mounts("nats").contains("./deploy/nats.conf"));
    assert!(mounts("jaeger").contains("./deploy/jaeger.yaml"));
}

#[test]
fn credentials_travel_as_secrets_and_every_container_is_hardened() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        // No password in any environment block: only the path of a file.
        for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            let value = value.as_str().unwrap_or_default();
            assert!(
                !key.contains("PASSWORD") || key.ends_with("_FILE"),
                "{name} sets {key} in its environment"
            );
            assert!(
                !value.contains("password") || key.ends_with("_FILE"),
                "{name}: {key}"
            );
        }
        // Read-only root, no capabilities, no privilege escalation.
        assert_eq!(
            service["read_only"].as_bool(),
            Some(true),
            "{name} is read-only"
        );
        assert!(
            strings(&service["cap_drop"]).contains(&"ALL".to_owned()),
            "{name} drops every capability"
        );
        assert!(
            strings(&service["security_opt"]).contains(&"no-new-privileges:true".to_owned()),
            "{name} cannot gain privileges"
        );
    }

    // nats-server gets every user's password, and only as secrets that its
    // entrypoint exports for deploy/nats.conf.
    let nats = &compose["services"]["nats"];
    let secrets: BTreeSet<String> = strings(&nats["secrets"]).into_iter().collect();
    let expected: BTreeSet<String> = e2e::NATS_USERS
        .iter()
        .map(|user| format!("nats-{user}-password"))
        .collect();
    assert_eq!(secrets, expected);
    for user in e2e::NATS_USERS {
        let file = compose["secrets"][format!("nats-{user}-password").as_str()]["file"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            repo_root().join(file.trim_start_matches("./")),
            e2e::nats_password_file(user)
        );
        assert!(
            file.contains("/dev-"),
            "{file} is named as a development-only secret"
        );
    }
    assert!(
        strings(&nats["entrypoint"])
            .join(" ")
            .contains("/etc/nats/entrypoint.sh")
    );
    assert!(
        strings(&nats["volumes"])
            .iter()
            .any(|v| v.starts_with("./deploy/nats-entrypoint.sh:/etc/nats/entrypoint.sh"))
    );
    let script = std::fs::read_to_string(repo_root().join("deploy/nats-entrypoint.sh"))
        .expect("deploy/nats-entrypoint.sh");
    let users = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("for user in "))
        .and_then(|l| l.strip_suffix("; do"))
        .expect("the entrypoint loops over the users");
    assert_eq!(
        users.split_whitespace().collect::<Vec<_>>(),
        e2e::NATS_USERS
    );

    // Images: a numeric non-root user, and nothing from deploy/ (where the
    // development secrets live) in the build context.
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let runtime = dockerfile
        .split("AS runtime")
        .nth(1)
        .expect("a runtime stage");
    assert!(
        runtime.contains("USER 65532:65532"),
        "the runtime runs as non-root"
    );
    for line in dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        assert!(
            !line.to_lowercase().contains("password") && !line.contains("secrets"),
            "no credentials in the Dockerfile: {line}"
        );
    }
    let ignored =
        std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "deploy"),
        ".dockerignore keeps deploy/ out of the build context"
    );
}
