use super::*;

fn compiled(text: &str) -> CompiledPolicy {
    let p = crate::policy::Policy::from_toml_str(text, "t.toml").expect("valid");
    crate::policy::compile(&p, None).expect("compiles")
}

fn bound(addr: &str, name: &str, s: u64) -> NameBinding {
    NameBinding {
        addr: addr.parse().expect("ip"),
        name: name.into(),
        expires_in_s: s,
    }
}

#[test]
fn explain_a_name_gives_its_rule_and_bound_addresses() {
    let c = compiled(
        "default = \"deny\"\n[allow]\ncidrs = [\"198.51.100.0/24\"]\ndomains = [\"*.r2.cloudflarestorage.com\"]\n\
         [deny]\ndomains = [\"ollama.com\"]\n",
    );
    let name = |s: &str| explain_arg(s).expect("name");
    assert_eq!(
        name("X.R2.cloudflarestorage.com."),
        Explain::Name("x.r2.cloudflarestorage.com".into())
    );
    assert!(explain_arg("a..b").is_err());
    let table = [
        bound("203.0.113.9", "x.r2.cloudflarestorage.com", 40),
        bound("203.0.113.9", "ollama.com", 50),
        bound("203.0.113.10", "x.r2.cloudflarestorage.com", 40),
    ];
    let lines = explain_lines(&c, &name("x.r2.cloudflarestorage.com"), Some(&table));
    assert_eq!(
        lines,
        [
            "x.r2.cloudflarestorage.com: allow by allow.domains:*.r2.cloudflarestorage.com",
            "  bound to 203.0.113.9 for 40s: deny by deny.domains:ollama.com (bound to ollama.com, 50s left)",
            "  bound to 203.0.113.10 for 40s: allow by allow.domains:*.r2.cloudflarestorage.com (bound to x.r2.cloudflarestorage.com, 40s left)",
        ]
    );
    let lines = explain_lines(&c, &name("example.org"), Some(&table));
    assert_eq!(
        lines,
        [
            "example.org: no domain rule: IP rules decide the addresses",
            "  no addresses bound to it now"
        ]
    );
    let lines = explain_lines(&c, &name("ollama.com"), None);
    assert_eq!(lines[0], "ollama.com: deny by deny.domains:ollama.com");
    assert!(lines[1].contains("no daemon"), "{lines:?}");
    // An address: bound names decide first, else the IP rules.
    let ip = |s: &str| explain_arg(s).expect("ip");
    assert_eq!(
        explain_lines(&c, &ip("203.0.113.10"), Some(&table)),
        [
            "203.0.113.10: allow by allow.domains:*.r2.cloudflarestorage.com (bound to x.r2.cloudflarestorage.com, 40s left)",
            "203.0.113.10 as a source (inbound): allow by inbound.default"
        ]
    );
    assert_eq!(
        explain_lines(&c, &ip("198.51.100.1"), Some(&table)),
        [
            "198.51.100.1: allow by allow.cidrs:198.51.100.0/24",
            "198.51.100.1 as a source (inbound): allow by inbound.default"
        ]
    );
    assert_eq!(
        explain_lines(&c, &ip("203.0.113.10"), None),
        [
            "203.0.113.10: deny by default",
            "203.0.113.10 as a source (inbound): allow by inbound.default"
        ]
    );
}

#[test]
fn explain_names_the_ipv4_address_an_ipv6_form_carries() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(
        judged_as(ip("64:ff9b::203.0.113.7")),
        " (NAT64 of 203.0.113.7)"
    );
    assert_eq!(judged_as(ip("2002:cb00:7107::1")), " (6to4 of 203.0.113.7)");
    assert_eq!(judged_as(ip("2001:db8::1")), "");
    assert_eq!(judged_as(ip("203.0.113.7")), "");
}

fn cli_policy(args: &[&str]) -> PolicyCommand {
    use clap::Parser as _;
    let cli =
        crate::cli::Cli::try_parse_from(["ollama-egress", "policy"].iter().chain(args.iter()))
            .expect("valid arguments");
    match cli.command {
        crate::cli::Command::Policy(cmd) => cmd,
        other => panic!("{other:?}"),
    }
}

#[test]
fn replay_prints_json_a_script_can_read_and_exits_by_what_would_be_blocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = crate::logstore::sample(time::macros::datetime!(2026-11-22 10:00:00 UTC));
    r.verdict = crate::model::Verdict::Allowed;
    r.comm = "o\u{1b}[2J".into();
    let line = serde_json::to_string(&r).expect("json");
    std::fs::write(dir.path().join("events.jsonl"), format!("{line}\nbad\n")).expect("log");
    let strict = dir.path().join("p.toml");
    std::fs::write(&strict, "default = \"deny\"\n").expect("policy");
    let log = dir.path().display().to_string();
    let file = strict.display().to_string();
    let cmd = cli_policy(&["replay", &file, "--log-dir", &log, "--json"]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cmd.run(&mut out, &mut err).expect("replay"), 1);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON document");
    assert_eq!(v["would_block"][0]["dst"], "203.0.113.7");
    assert_eq!(v["summary"]["malformed"], 1);
    assert!(String::from_utf8_lossy(&err).contains("1 malformed line skipped"));
    assert_eq!(cmd.error_status(), 2);
    std::fs::write(&strict, "default = \"allow\"\n").expect("policy");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cmd.run(&mut out, &mut err).expect("replay"), 0);
    let cmd = cli_policy(&["suggest", "--log-dir", &log]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cmd.run(&mut out, &mut err).expect("suggest"), 0);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        text.contains("\"203.0.113.7/32\", # 1 connection, o?[2J, port 443"),
        "{text}"
    );
    assert_eq!(cmd.error_status(), 1);
    std::fs::write(&strict, "default = \"maybe\"\n").expect("policy");
    let cmd = cli_policy(&["replay", &file, "--log-dir", &log]);
    assert!(cmd.run(&mut Vec::new(), &mut Vec::new()).is_err());
}
