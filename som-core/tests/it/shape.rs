//! Rules about where rules live, checked over the source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use som_core::domain::{OrderStatus, PaymentStatus, RefundStatus};

/// Every `.rs` file below `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The backends' SQL names no order, payment or refund status: the domain's transition tables
/// and guards decide, and storage binds the statuses they name (migrations aside).
#[test]
fn no_status_is_spelled_in_the_backends_sql() {
    let storage = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage");
    let mut files = Vec::new();
    sources(&storage, &mut files);
    assert!(files.len() > 20, "found only {} storage sources", files.len());
    let mut names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    names.extend(PaymentStatus::ALL.iter().map(|s| s.as_str()));
    names.extend(RefundStatus::ALL.iter().map(|s| s.as_str()));
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for name in &names {
                if line.contains(&format!("'{name}'")) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "status literals in storage SQL:\n{}", found.join("\n"));
}
