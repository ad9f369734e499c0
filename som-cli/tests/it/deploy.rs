//! What can be proven about deployment without Docker: the compose file, the Dockerfile and the
//! operator documentation agree with the `som` binary; backups restore; the health check works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn som(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_som"))
        .args(args)
        .env_remove("SOM_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn som_stdout(args: &[&str]) -> String {
    let out = som(args);
    assert!(out.status.success(), "som {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn known_variables() -> BTreeSet<String> {
    som_core::config::VARIABLES.iter().map(|v| v.name.to_owned()).collect()
}

/// A mapping with YAML merge keys (`<<: *anchor`) applied.
fn merged(v: &Value) -> serde_yaml::Mapping {
    let mut out = serde_yaml::Mapping::new();
    if let Some(map) = v.as_mapping() {
        if let Some(base) = map.get("<<") {
            out.extend(merged(base));
        }
        for (k, val) in map {
            if k.as_str() != Some("<<") {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    out
}

#[test]
fn compose_sets_only_variables_som_reads_and_runs_only_som_subcommands() {
    let text = read("compose.yaml");
    assert!(
        text.contains("${SOM_JWT_SECRET:?"),
        "compose.yaml must refuse to start without SOM_JWT_SECRET rather than fall back to a published one"
    );
    assert!(!text.contains("change-me"), "no placeholder secret in compose.yaml");
    let compose: Value = serde_yaml::from_str(&text).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for needed in ["db", "migrate", "web", "worker", "mail"] {
        assert!(names.contains(needed), "compose.yaml has a {needed} service");
    }
    let known = known_variables();
    let mut som_services = 0;
    for (name, service) in services {
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("som") {
            continue;
        }
        som_services += 1;
        for key in merged(&service["environment"]).keys() {
            let key = key.as_str().unwrap();
            assert!(known.contains(key), "{name:?} sets {key}, which som does not read");
        }
        let command: Vec<&str> = service["command"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
        let mut help = command.clone();
        help.push("--help");
        assert!(
            som(&help).status.success(),
            "{name:?} runs `som {}`, which is not a som subcommand",
            command.join(" ")
        );
    }
    assert_eq!(som_services, 3, "migrate, web and worker run the som image");
    assert!(services["db"]["image"].as_str().unwrap().starts_with("postgres:16"));
    assert!(!services["db"]["healthcheck"].is_null(), "the database has a health check");
    assert!(
        compose["volumes"].as_mapping().is_some_and(|v| v.contains_key("db-data")),
        "the database keeps its data in a volume"
    );
    let db_volumes: Vec<&str> =
        services["db"]["volumes"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(db_volumes.iter().any(|v| v.starts_with("db-data:")));
}

#[test]
fn the_dockerfile_builds_what_ci_builds_and_runs_som() {
    let dockerfile = read("Dockerfile");
    let ci = read(".ci/run");
    let build = "cargo build --release --locked -p som-cli";
    assert!(dockerfile.contains(build), "the Dockerfile builds with `{build}`");
    assert!(ci.contains(build), "CI builds with `{build}`");
    for line in [
        "ENTRYPOINT [\"som\"]",
        "CMD [\"serve\"]",
        "EXPOSE 8000",
        "ENV SOM_LISTEN=0.0.0.0:8000",
        "USER som",
        "CMD [\"som\", \"healthcheck\"",
    ] {
        assert!(dockerfile.contains(line), "the Dockerfile has {line}");
    }
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    let ignore = read(".dockerignore");
    assert!(ignore.contains("target/") && ignore.contains("*.db"));
    for cmd in ["serve", "healthcheck"] {
        assert!(som(&[cmd, "--help"]).status.success());
    }
}

#[test]
fn the_documented_configuration_is_the_generated_one() {
    let docs = read("docs/operations.md");
    let start = docs.find("<!-- config-reference:start -->").unwrap() + "<!-- config-reference:start -->".len();
    let end = docs.find("<!-- config-reference:end -->").unwrap();
    assert_eq!(
        docs[start..end].trim(),
        som_stdout(&["config", "reference"]).trim(),
        "regenerate with `som config reference`"
    );
    assert_eq!(read(".env.example"), som_stdout(&["config", "env"]), "regenerate with `som config env > .env.example`");
    for var in known_variables() {
        assert!(read(".env.example").contains(&format!("#{var}=")), "{var} is in .env.example");
    }
}

#[test]
fn a_backup_restores_every_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("som.db").display());
    let run = |url: &str, args: &[&str], input: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_som"))
            .args(args)
            .env("SOM_DATABASE_URL", url)
            .env("SOM_LOG", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(i) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "som {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(
        &url,
        &["users", "create", "alice", "--email", "a@example.com", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    for i in 1..=25 {
        run(&url, &["orders", "create", "--user", "alice", "--item", &format!("Item {i}:{i}:1.25")], None);
    }
    run(&url, &["pay", "initiate", "3"], None);
    run(&url, &["pay", "confirm", "1"], None);
    let backup = dir.path().join("backup.db");
    let report: serde_json::Value =
        serde_json::from_str(&run(&url, &["backup", backup.to_str().unwrap(), "--json"], None)).unwrap();
    assert!(report["bytes"].as_u64().unwrap() > 0);
    let original = run(&url, &["orders", "list", "--limit", "200", "--json"], None);
    let restored_url = format!("sqlite://{}", backup.display());
    let restored = run(&restored_url, &["orders", "list", "--limit", "200", "--json"], None);
    assert_eq!(original, restored, "every order, exactly as it was");
    let orders: serde_json::Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(orders["items"].as_array().map(Vec::len), Some(25));
    let paid: serde_json::Value =
        serde_json::from_str(&run(&restored_url, &["orders", "show", "3", "--json"], None)).unwrap();
    assert_eq!(paid["status"], "PAID");
    let again = Command::new(env!("CARGO_BIN_EXE_som"))
        .args(["backup", backup.to_str().unwrap()])
        .env("SOM_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "an existing file is never overwritten");
}

#[test]
fn man_pages_and_completions_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    som_stdout(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    let pages: BTreeSet<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for page in ["som.1", "som-serve.1", "som-orders.1", "som-backup.1"] {
        assert!(pages.contains(page), "{page} in {pages:?}");
    }
    let main = std::fs::read_to_string(dir.path().join("som.1")).unwrap();
    for needed in
        [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", "SOM_DATABASE_URL", "SOM_SESSION_MAX_AGE", "newer than this build"]
    {
        assert!(main.contains(needed), "som.1 has {needed}");
    }
    let readme = read("README.md");
    for code in 0..=5 {
        assert!(readme.contains(&format!("| {code} | ")), "README lists exit code {code}");
    }
    for shell in ["bash", "zsh", "fish"] {
        assert!(som_stdout(&["completions", shell]).contains("backup"));
    }
}

#[test]
fn the_healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = som(&["healthcheck", "--url", &format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!out.status.success());
}

/// The shell blocks (```sh) of README.md and docs/*.md, with where each starts.
fn shell_blocks() -> Vec<(String, usize, String)> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = read(&file);
        let mut current: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            match &mut current {
                None if matches!(line.trim(), "```sh" | "```bash" | "```shell") => {
                    current = Some((n + 2, String::new()))
                }
                Some(_) if line.trim() == "```" => {
                    let (start, body) = current.take().unwrap();
                    blocks.push((file.clone(), start, body));
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
        assert!(current.is_none(), "{file}: a shell block is not closed");
    }
    blocks
}

/// Every shell block in the documentation is valid shell, and no command continued with a
/// trailing backslash ends early on a line with a comment (the rest would run as another
/// command: `A=1 \` / `B=2   # note` / `som serve` runs `som serve` without `A` and `B`).
#[test]
fn the_documented_shell_commands_parse_and_continue_where_they_seem_to() {
    let blocks = shell_blocks();
    assert!(blocks.len() >= 10, "found only {} shell blocks", blocks.len());
    for (file, start, body) in &blocks {
        let mut check = Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), body.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(out.status.success(), "{file}:{start}: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = body.lines().collect();
        for (i, pair) in lines.windows(2).enumerate() {
            let (before, line) = (pair[0].trim_end(), pair[1]);
            let comment = line.split_once(" #").is_some_and(|(code, _)| !code.trim().is_empty());
            let followed = lines.get(i + 2).is_some_and(|next| !next.trim().is_empty() && !next.starts_with('#'));
            assert!(
                !(before.ends_with('\\') && comment && !line.trim_end().ends_with('\\') && followed),
                "{file}:{}: a continued command ends at a comment, so the next line runs on its own: {line:?}",
                start + i + 1
            );
        }
    }
}

/// README's operator session runs as written, every command succeeding in turn, on a fresh
/// SQLite file (the `som` built for this test stands in for the one its first lines build).
#[test]
fn the_readme_operator_session_runs_as_written() {
    let readme = read("README.md");
    let heading = readme.lines().position(|l| l == "## An operator session").expect("README has an operator session");
    let (_, start, body) = shell_blocks()
        .into_iter()
        .find(|(file, start, _)| file == "README.md" && *start > heading)
        .expect("a shell block follows the operator session's heading");
    let script: String =
        body.lines().filter(|line| !line.starts_with("cargo build")).map(|l| format!("{l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_som")).parent().unwrap().to_owned();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["-e", "-x", "-o", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("SOM_LOG", "warn")
        .env_remove("SOM_NOTIFIER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README.md:{start}: the operator session stopped at its last traced command:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
