//! Parsing, spans and the semantic checks.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, "test.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn demo_config_is_valid() {
    if let Err(e) = Config::demo() {
        panic!("demo config invalid:\n{e}");
    }
}

#[test]
fn broken_toml_names_file_and_line() {
    let p = problems("[site]\nid = \"x\"\ntown = \n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("test.toml:3:"), "{p:?}");
}

#[test]
fn a_sync_source_that_is_neither_kernel_nor_an_absolute_path_is_refused() {
    let with = |when: &str| {
        DEMO_CONFIG.replacen(
            "[clock]\nrequire_synchronised = false\n",
            &format!("[clock]\nrequire_synchronised = true\nsynchronised_when = \"{when}\"\n"),
            1,
        )
    };
    let p = problems(&with("run/flag"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("must be \"kernel\" or an absolute path"),
        "{p:?}"
    );
    assert_eq!(problems(&with("kernel")), Vec::<String>::new());
    let config = Config::parse(&with("/run/x/synchronized"), "test.toml");
    assert_eq!(
        config.ok().and_then(|c| c.clock.sync_source()),
        Some(crate::clock::SyncSource::FlagFile(
            "/run/x/synchronized".into()
        ))
    );
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let text = DEMO_CONFIG.replacen("[site]\n", "[site]\ncolour = \"blue\"\n", 1);
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("unknown field `colour`"), "{p:?}");
    let line = DEMO_CONFIG
        .lines()
        .position(|l| l == "[site]")
        .map(|i| i + 2)
        .unwrap_or(0);
    assert!(p[0].starts_with(&format!("test.toml:{line}:")), "{p:?}");
}

#[test]
fn dangling_references_and_duplicates_are_all_reported_at_once() {
    let text = r#"
[site]
id = "x"
town = "T"
name = "N"
data_dir = "/tmp/x"

[[department]]
id = "d"
name = { de = "D", en = "D" }
waiting_area = { de = "W", en = "W" }

[[service]]
id = "a"
department = "d"
prefix = "A"
name = { de = "A", en = "A" }
expected_minutes = 5

[[service]]
id = "b"
department = "nowhere"
prefix = "A"
name = { de = "B", en = "B" }
expected_minutes = 0

[[desk]]
id = "1"
label = { de = "1", en = "1" }
department = "d"
services = ["a", "ghost"]
"#;
    let p = problems(text);
    let joined = p.join("\n");
    assert!(
        joined.contains("test.toml:22:14: service 'b' names department 'nowhere'"),
        "{joined}"
    );
    assert!(
        joined.contains("test.toml:23:10: duplicate prefix 'A'"),
        "{joined}"
    );
    assert!(
        joined.contains("expected_minutes = 0 is out of range"),
        "{joined}"
    );
    assert!(
        joined.contains("test.toml:31:18: desk '1' serves service 'ghost', which does not exist"),
        "{joined}"
    );
    assert!(joined.contains("no desk serves service 'b'"), "{joined}");
    assert_eq!(p.len(), 5, "{joined}");
}
