//! The binary's handling of configuration.

use std::process::Command;

use crate::helpers::config_dir;

fn troupe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
    cmd.args(args)
        .arg("--config-dir")
        .arg(config_dir())
        .env("TROUPE_ENV", "test");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("troupe runs")
}

#[test]
fn a_bad_config_value_exits_2_naming_the_key() {
    let out = troupe(&["check-config"], &[("TROUPE__HTTP__PORT", "not-a-port")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.port"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");

    let out = troupe(
        &["serve"],
        &[("TROUPE__DOMAINS__ENABLED", "inventory,nonsense")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("domains.enabled"));

    // A misspelt domain section is refused too, not ignored.
    let out = troupe(&["check-config"], &[("TROUPE__DOMAINS__INVENTROY__X", "1")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[domains.inventroy]"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_settings_without_secrets() {
    let out = troupe(
        &["check-config"],
        &[("TROUPE__DATABASE__URL", "postgres://u:s3cret@h:5432/db")],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK"));
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[test]
fn help_documents_the_subcommands() {
    let out = troupe(&["--help"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "migrate", "check-config"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
}
