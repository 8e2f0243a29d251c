// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

use super::*;

#[test]
fn rules() {
    let rule: ImportRule = "b:frames=a".parse().unwrap();
    assert_eq!(
        rule,
        ImportRule {
            importer: "b".into(),
            application: Some("frames".into()),
            exporter: "a".into(),
            access: Access::ReadWrite,
        }
    );
    assert_eq!(rule.to_string(), "b:frames=a:rw");
    let any: ImportRule = "b:*=a:ro".parse().unwrap();
    assert_eq!(any.application, None);
    assert_eq!(any.access, Access::ReadOnly);
    assert_eq!(
        "vm.1:x=vm-2:rw".parse::<ImportRule>().unwrap().exporter,
        "vm-2"
    );
    for bad in [
        "",
        "b",
        "b:frames",
        "b=a",
        ":frames=a",
        "b:=a",
        "b:frames=",
        "b:frames=a:",
        "b:frames=a:w",
        "b:fr ames=a",
        "b c:frames=a",
        "b:frames=a b",
        "b:frames=a:rw:ro",
    ] {
        assert!(bad.parse::<ImportRule>().is_err(), "{bad:?}");
    }
}

#[test]
fn closed_by_default() {
    let config = ImportConfig::default();
    assert!(!config.enabled());
    assert_eq!(config.grace, Duration::from_secs(5));
    assert_eq!(config.access("b", "a", "frames"), None);
    let config = ImportConfig {
        shm_size: 1 << 20,
        rules: vec![
            "b:frames=a:ro".parse().unwrap(),
            "b:*=a".parse().unwrap(),
            "c:frames=a:ro".parse().unwrap(),
        ],
        ..ImportConfig::default()
    };
    assert!(config.enabled());
    assert_eq!(config.access("b", "a", "frames"), Some(Access::ReadWrite));
    assert_eq!(config.access("b", "a", "other"), Some(Access::ReadWrite));
    assert_eq!(config.access("c", "a", "frames"), Some(Access::ReadOnly));
    assert_eq!(config.access("c", "a", "other"), None);
    assert_eq!(config.access("a", "b", "frames"), None, "not the other way");
    assert_eq!(config.access("b", "c", "frames"), None);
}

#[test]
fn checked_against_the_guests() {
    let config = |size, rule: &str| ImportConfig {
        shm_size: size,
        rules: vec![rule.parse().unwrap()],
        ..ImportConfig::default()
    };
    assert_eq!(config(1 << 20, "b:x=a").check(&["a", "b"]), Ok(()));
    assert!(config(1000, "b:x=a").check(&["a", "b"]).is_err());
    assert!(config(4096, "b:x=c").check(&["a", "b"]).is_err());
    assert!(config(4096, "c:x=a").check(&["a", "b"]).is_err());
    assert!(config(4096, "a:x=a").check(&["a", "b"]).is_err());
    let long = "x".repeat(32);
    let rule = format!("b:x={long}");
    assert!(config(4096, &rule).check(&["b", &long]).is_err());
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("8K"), Ok(8192));
    assert_eq!(parse_size("0"), Ok(0));
    for bad in ["", "M", "-1", "1T", "1.5M", "99999999999999999999G"] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    for bad in ["", "s", "1m", "-1", "1.5s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}
