//! The REST contract: the OpenAPI document the service generates from its
//! own code, held to the service's behaviour by schemathesis, which sends
//! hundreds of generated requests (valid and invalid) and checks every
//! answer against the document: no server errors, every status and body as
//! documented, invalid input refused, valid input accepted.

use std::process::Command;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn the_running_service_honours_its_openapi_document() {
    let app = spawn_app().await;
    let spec: serde_json::Value = app
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("an OpenAPI document");
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1"
    );
    for path in [
        "/orders",
        "/orders/{id}",
        "/orders/{id}/cancel",
        "/orders/{id}/events",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap_or_default().contains("<html"),
        "a browsable page"
    );

    let schemathesis = e2e::repo_root().join(".tools/venv/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "schemathesis is not installed: run `scripts/install-tools.sh schemathesis` (`make test` does)"
    );
    let url = format!("{}/openapi.json", app.stack.order_url());
    let config = e2e::repo_root().join("e2e/schemathesis.toml");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .arg("--config-file")
            .arg(config)
            .args([
                "run",
                &url,
                "--checks",
                "all",
                "--max-examples",
                "50",
                "--seed",
                "1",
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
    })
    .await
    .expect("joined")
    .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("No issues found"), "{report}");
}
