//! The event contract as an AsyncAPI 3.0 document, `docs/asyncapi.yaml`.
//!
//! The document is generated from the code: the `events` crate knows every
//! kind of event, its subject, headers, payload schema and producer, and the
//! services' own `consumers()` say who receives what. These tests keep the
//! committed file equal to what the code generates, so it can never describe
//! a contract the code no longer has, and run it through the official AsyncAPI
//! parser, so it is a document every AsyncAPI tool can read.
//!
//! After changing the contract, regenerate the file with
//! `UPDATE_ASYNCAPI=1 cargo test -p e2e --test it asyncapi` and commit it.

use std::path::PathBuf;
use std::process::Command;

use events::asyncapi::{self, InSpecOrder, Receiver};
use platform::consumer::ConsumerSpec;

const DOCUMENT: &str = "docs/asyncapi.yaml";
const UPDATE_COMMAND: &str = "UPDATE_ASYNCAPI=1 cargo test -p e2e --test it asyncapi";

/// Every durable consumer of every service. Their replay consumers
/// (`ConsumerSpec::replays`) are left out on purpose: they read dead letters
/// an operator sends back, which are not part of the event contract.
fn receivers() -> Vec<Receiver> {
    let services: [(&str, Vec<ConsumerSpec>); 4] = [
        ("order", order::consumers()),
        ("payment", payment::consumers()),
        ("shipping", shipping::consumers()),
        ("email", email::consumers()),
    ];
    services
        .into_iter()
        .flat_map(|(service, specs)| {
            specs.into_iter().map(move |spec| Receiver {
                service: service.to_owned(),
                durable: spec.durable,
                stream: spec.stream,
                filter_subjects: spec.filter_subjects,
            })
        })
        .collect()
}

/// The document as the committed file must read, byte for byte.
fn generated_yaml() -> String {
    let document = asyncapi::document_with_receivers(&receivers()).unwrap_or_else(|err| {
        panic!("a service declares a consumer the contract cannot describe: {err}")
    });
    let yaml = serde_norway::to_string(&InSpecOrder(&document)).expect("the document serialises");
    format!(
        "# Generated from the code by `{UPDATE_COMMAND}`: the events crate\n\
         # (events::asyncapi) and each service's consumers(). Do not edit by hand;\n\
         # the end-to-end tests fail when this file differs from the code.\n\
         {yaml}"
    )
}

fn document_path() -> PathBuf {
    e2e::repo_root().join(DOCUMENT)
}

#[test]
fn the_committed_asyncapi_document_matches_the_code() {
    let want = generated_yaml();
    let path = document_path();
    if std::env::var_os("UPDATE_ASYNCAPI").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&path, &want)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let (line, committed, generated) = have
            .lines()
            .chain(std::iter::repeat("<end of file>"))
            .zip(want.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or((0, "", ""), |(i, (a, b))| (i + 1, a, b));
        panic!(
            "{DOCUMENT} is out of date: the event contract in the code changed.\n\
             Regenerate it with `{UPDATE_COMMAND}` and commit it.\n\
             First difference, line {line}:\n  committed: {committed}\n  generated: {generated}"
        );
    }
}

#[test]
fn the_asyncapi_document_passes_the_official_parser() {
    let root = e2e::repo_root();
    assert!(
        root.join(".tools/asyncapi/node_modules/@asyncapi/parser/package.json")
            .is_file(),
        "the AsyncAPI parser is not installed: run `scripts/install-tools.sh asyncapi` (`make test` does)"
    );
    // The generated text, not the committed file, is what gets validated, so
    // that this test judges the code whether or not the file is up to date
    // (the test above judges that) and never reads a file being rewritten.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("asyncapi.yaml");
    std::fs::write(&file, generated_yaml()).expect("the document is written");
    let output = Command::new("node")
        .arg(root.join("tools/asyncapi/validate.mjs"))
        .arg(&file)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run `node` ({err}): install Node.js, then `scripts/install-tools.sh asyncapi`")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Printed so that warnings show up under `--nocapture` even when the
    // document is valid.
    println!("{report}");
    assert!(
        output.status.success(),
        "the AsyncAPI parser rejects the generated {DOCUMENT}:\n{report}"
    );
}
