//! The API reference in `docs/` is generated from the code and kept true by this test: the
//! OpenAPI document of the handlers (`api::http::openapi::document`, with the default config's
//! currencies) as `docs/openapi.json`, and a page for readers rendered from it as
//! `docs/api-reference.md`. When a route, body or error changes, this test fails until the
//! files are written again with `LEDGERD_UPDATE_DOCS=1 cargo test --release -p api --test docs`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

const UPDATE_VARIABLE: &str = "LEDGERD_UPDATE_DOCS";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn document() -> Value {
    let mut codes: Vec<String> =
        config::default_config().currencies.iter().map(|currency| currency.code.clone()).collect();
    codes.sort();
    api::http::openapi::document(&codes)
}

/// The name of a `$ref` (`#/components/schemas/TransferBody` → `TransferBody`).
fn reference_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn anchor(name: &str) -> String {
    name.to_lowercase()
}

/// A schema as a reader writes its type: `string`, `integer or null`, `array of [X](#x)`.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference_name(reference);
        return format!("[{name}](#{})", anchor(name));
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(choices) = schema.get(combinator).and_then(Value::as_array) {
            let names: Vec<String> = choices.iter().map(type_of).collect();
            return names.join(if combinator == "allOf" { " and " } else { " or " });
        }
    }
    let base = match schema.get("type") {
        Some(Value::String(name)) => name.clone(),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => "any".to_owned(),
    };
    let base = if base.starts_with("array") {
        let items = schema.get("items").map_or_else(|| "any".to_owned(), type_of);
        base.replacen("array", &format!("array of {items}"), 1)
    } else {
        base
    };
    match schema.get("enum").and_then(Value::as_array) {
        Some(values) => {
            let values: Vec<String> = values.iter().map(|value| format!("`{}`", value_text(value))).collect();
            format!("{base}: {}", values.join(", "))
        }
        None => base,
    }
}

fn value_text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// Text for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

fn render(document: &Value) -> String {
    let mut page = String::new();
    let title = document["info"]["title"].as_str().unwrap_or("ledgerd");
    let version = document["info"]["version"].as_str().unwrap_or("");
    writeln!(page, "# {title} HTTP API reference ({version})\n").unwrap();
    writeln!(
        page,
        "Generated from the code (the handlers' OpenAPI attributes in `api/src/http`) by \
         `api/tests/docs.rs`, which fails when this page or `docs/openapi.json` (the same document \
         as JSON, also served at `GET /openapi.json`) is out of date; write both again with \
         `LEDGERD_UPDATE_DOCS=1 cargo test --release -p api --test docs`. README.md tells how \
         to run the server and what the configuration keys mean; RUNBOOK.md how to operate it.\n"
    )
    .unwrap();
    if let Some(description) = document["info"]["description"].as_str() {
        writeln!(page, "{description}\n").unwrap();
    }
    writeln!(
        page,
        "Probes and documents without a token: `GET /health`, `GET /ready`, `GET /metrics` \
         (Prometheus text), `GET /openapi.json`.\n"
    )
    .unwrap();

    let paths = document["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.push((path.as_str(), method, operation));
            }
        }
    }
    writeln!(page, "## Routes\n\n| method | path | what it does |\n|---|---|---|").unwrap();
    for (path, method, operation) in &operations {
        let summary = operation["summary"].as_str().unwrap_or("");
        let target = anchor(&format!("{method}-{path}").replace(['/', '{', '}'], "-"));
        writeln!(page, "| {} | [`{path}`](#{target}) | {} |", method.to_uppercase(), cell(summary)).unwrap();
    }
    writeln!(page).unwrap();
    for (path, method, operation) in &operations {
        let target = anchor(&format!("{method}-{path}").replace(['/', '{', '}'], "-"));
        writeln!(page, "<a id=\"{target}\"></a>\n### {} `{path}`\n", method.to_uppercase()).unwrap();
        if let Some(summary) = operation["summary"].as_str() {
            writeln!(page, "{summary}\n").unwrap();
        }
        if let Some(description) = operation["description"].as_str() {
            writeln!(page, "{description}\n").unwrap();
        }
        let secured = operation["security"]
            .as_array()
            .is_some_and(|requirements| requirements.iter().any(|requirement| requirement.get("bearer").is_some()));
        writeln!(
            page,
            "Authentication: {}\n",
            if secured { "a bearer token when auth is on" } else { "none (a signature of its own, or public)" }
        )
        .unwrap();
        if let Some(parameters) = operation["parameters"].as_array().filter(|parameters| !parameters.is_empty()) {
            writeln!(page, "| parameter | in | required | type | description |\n|---|---|---|---|---|").unwrap();
            for parameter in parameters {
                writeln!(
                    page,
                    "| `{}` | {} | {} | {} | {} |",
                    parameter["name"].as_str().unwrap_or(""),
                    parameter["in"].as_str().unwrap_or(""),
                    if parameter["required"].as_bool().unwrap_or(false) { "yes" } else { "no" },
                    type_of(&parameter["schema"]),
                    cell(parameter["description"].as_str().unwrap_or(""))
                )
                .unwrap();
            }
            writeln!(page).unwrap();
        }
        if let Some(content) = operation.pointer("/requestBody/content").and_then(Value::as_object) {
            for (media_type, body) in content {
                writeln!(page, "Request body (`{media_type}`): {}\n", type_of(&body["schema"])).unwrap();
            }
        }
        writeln!(page, "| status | answer | body |\n|---|---|---|").unwrap();
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let body = response["content"]
                .as_object()
                .and_then(|content| content.values().next())
                .map_or_else(String::new, |media| type_of(&media["schema"]));
            writeln!(page, "| {status} | {} | {body} |", cell(response["description"].as_str().unwrap_or(""))).unwrap();
        }
        writeln!(page).unwrap();
    }

    writeln!(page, "## Schemas\n").unwrap();
    let schemas = document.pointer("/components/schemas").and_then(Value::as_object).expect("schemas");
    for (name, schema) in schemas {
        writeln!(page, "<a id=\"{}\"></a>\n### {name}\n", anchor(name)).unwrap();
        if let Some(description) = schema["description"].as_str() {
            writeln!(page, "{description}\n").unwrap();
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match schema["properties"].as_object() {
            Some(properties) => {
                writeln!(page, "| field | type | required | description |\n|---|---|---|---|").unwrap();
                for (field, property) in properties {
                    writeln!(
                        page,
                        "| `{field}` | {} | {} | {} |",
                        type_of(property),
                        if required.contains(&field.as_str()) { "yes" } else { "no" },
                        cell(property["description"].as_str().unwrap_or(""))
                    )
                    .unwrap();
                }
                writeln!(page).unwrap();
            }
            None => writeln!(page, "Type: {}\n", type_of(schema)).unwrap(),
        }
    }
    page
}

#[test]
fn the_api_reference_in_docs_is_the_one_the_code_describes() {
    let document = document();
    let json = format!("{}\n", serde_json::to_string_pretty(&document).unwrap());
    let page = render(&document);
    let files = [(docs_dir().join("openapi.json"), json), (docs_dir().join("api-reference.md"), page)];
    if std::env::var_os(UPDATE_VARIABLE).is_some() {
        std::fs::create_dir_all(docs_dir()).unwrap();
        for (path, text) in &files {
            std::fs::write(path, text).unwrap();
        }
        return;
    }
    for (path, expected) in &files {
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == *expected,
            "{} is out of date with the code: write it again with \
             `{UPDATE_VARIABLE}=1 cargo test --release -p api --test docs` and commit it",
            path.display()
        );
    }
}

/// The page names every route of the document and every error code of the contract's schema,
/// so a route or code missing from the rendering would show here, not only in the diff.
#[test]
fn the_reference_lists_every_route_and_error_code() {
    let document = document();
    let page = render(&document);
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS.into_iter().filter(|method| item.get(*method).is_some()) {
            assert!(page.contains(&format!("### {} `{path}`", method.to_uppercase())), "{method} {path} missing");
        }
    }
    let codes = document
        .pointer("/components/schemas/ErrorCode/enum")
        .and_then(Value::as_array)
        .expect("the error codes are an enum in the document");
    assert!(codes.len() > 20, "{codes:?}");
    for code in codes {
        assert!(page.contains(&format!("`{}`", code.as_str().unwrap())), "error code {code} missing");
    }
}
