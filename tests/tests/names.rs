//! Names against the real kernel and a real DNS server (dnsmasq in the test's namespace):
//! learning from answers before the process reads them, domain rules and their precedence,
//! TTLs, DNS over TCP, large answers, forged and malformed answers, and `host` in events.

use std::time::Duration;

use ollama_egress_tests::dns::{
    DnsScenario, Dnsmasq, DnsmasqSpec, FAKE_SERVER, Zone, names_policy, wait_for,
};
use ollama_egress_tests::{TestCgroup, logs_json, metric_value, require_root};

/// A policy that denies by default and allows `*.allow.test` (and the resolvers).
fn allow_suffix() -> String {
    names_policy("deny", &["*.allow.test"], &[], &[])
}

fn start(name: &str, policy: &str, zone: &Zone) -> DnsScenario {
    DnsScenario::start(name, "--enforce", policy, &[], zone, &[])
}

#[test]
fn an_allowed_name_connects_on_the_first_try_right_after_resolution() {
    const N: u8 = 100;
    let mut zone = Zone::new().host("v6.allow.test", &["2001:db8::66"], 300);
    for i in 0..N {
        let addr = format!("203.0.113.{}", 100 + i);
        zone = zone.host(&format!("race-{i}.allow.test"), &[&addr], 300);
    }
    let s = start("oe-nrace", &allow_suffix(), &zone);
    // Each name is fresh: its address has never been bound, so the connect right after
    // getaddrinfo returns succeeds only if the answer was learned before the process read it.
    let failed: Vec<String> = (0..N)
        .map(|i| s.resolve(&format!("race-{i}.allow.test")))
        .filter(|p| !p.ok())
        .map(|p| p.json.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {N} first connects after resolution failed: {failed:#?}",
        failed.len()
    );
    s.connect("::ffff:203.0.113.100")
        .assert_ok("a learned IPv4 address in IPv6 form");
    s.connect("::ffff:203.0.113.250")
        .assert_eperm("an IPv4 address in IPv6 form never learned");
    let v6 = s.inside(&["resolve", "v6.allow.test", "--family", "6"]);
    v6.assert_ok("an AAAA answer binds its address");
    assert_eq!(v6.json["addr"], "2001:db8::66", "{}", v6.json);
    let ev = s.event("allowed", "203.0.113.100");
    assert_eq!(ev["rule"], "allow.domains:*.allow.test", "{ev}");
    assert_eq!(ev["host"], "race-0.allow.test", "{ev}");
    assert_eq!(s.event("allowed", "2001:db8::66")["host"], "v6.allow.test");
}

#[test]
fn a_name_not_allowed_is_refused_and_an_unresolved_address_follows_the_ip_rules() {
    let zone = Zone::new().host("other.test", &["203.0.113.50"], 300).host(
        "ok.allow.test",
        &["203.0.113.51"],
        300,
    );
    let policy = names_policy("deny", &["*.allow.test"], &[], &["203.0.113.200/32"]);
    let s = start("oe-nnot", &policy, &zone);

    s.resolve("other.test")
        .assert_eperm("a resolved name no rule allows, under default deny");
    let ev = s.event("blocked", "203.0.113.50");
    assert_eq!(ev["rule"], "default", "{ev}");
    assert_eq!(
        ev["host"], "other.test",
        "the name is known even without a rule: {ev}"
    );

    s.resolve("ok.allow.test").assert_ok("an allowed name");
    s.connect("203.0.113.200")
        .assert_ok("an address never resolved, allowed by a CIDR");
    s.connect("203.0.113.201")
        .assert_eperm("an address never resolved, under default deny");
    let ev = s.event("allowed", "203.0.113.200");
    assert_eq!(ev["rule"], "allow.cidrs:203.0.113.200/32", "{ev}");
    assert!(ev["host"].is_null(), "no name was bound to it: {ev}");
    assert_eq!(s.event("blocked", "203.0.113.201")["rule"], "default");
}

#[test]
fn a_suffix_pattern_matches_subdomains_not_the_apex() {
    let zone = Zone::new()
        .host("a.wild.test", &["203.0.113.21"], 300)
        .host("b.c.wild.test", &["203.0.113.22"], 300)
        .host("wild.test", &["203.0.113.23"], 300)
        .host("mixed.wild.test", &["203.0.113.24"], 300)
        .host("notwild.test", &["203.0.113.25"], 300);
    let s = start(
        "oe-nwild",
        &names_policy("deny", &["*.wild.test"], &[], &[]),
        &zone,
    );
    s.resolve("a.wild.test").assert_ok("a subdomain");
    s.resolve("b.c.wild.test").assert_ok("a deeper subdomain");
    s.resolve("MiXeD.Wild.Test.")
        .assert_ok("names compare case-insensitively, a trailing dot ignored");
    s.resolve("wild.test")
        .assert_eperm("the apex of *.wild.test");
    s.resolve("notwild.test")
        .assert_eperm("a name that only ends in the same characters");
    assert_eq!(
        s.event("allowed", "203.0.113.22")["rule"],
        "allow.domains:*.wild.test"
    );
    assert_eq!(
        s.event("allowed", "203.0.113.24")["host"],
        "mixed.wild.test"
    );
}

#[test]
fn a_cname_chain_binds_to_the_question_name() {
    let zone = Zone::new()
        .host("end.cdn.test", &["203.0.113.31"], 300)
        .host("direct.cdn.test", &["203.0.113.32"], 300)
        .cname("mid.elsewhere.test", "end.cdn.test", 300)
        .cname("alias.cn.test", "mid.elsewhere.test", 300);
    let s = start(
        "oe-ncname",
        &names_policy("deny", &["alias.cn.test"], &[], &[]),
        &zone,
    );
    let p = s.resolve("alias.cn.test");
    p.assert_ok("the address at the end of the chain, bound to the name asked for");
    assert_eq!(p.json["addr"], "203.0.113.31", "{}", p.json);
    let ev = s.event("allowed", "203.0.113.31");
    assert_eq!(ev["rule"], "allow.domains:alias.cn.test", "{ev}");
    assert_eq!(ev["host"], "alias.cn.test", "{ev}");
    s.resolve("direct.cdn.test")
        .assert_eperm("the CDN's other names are not allowed by the alias");
}

#[test]
fn a_denied_name_beats_an_allowed_cidr() {
    let zone = Zone::new().host("bad.test", &["203.0.113.9"], 300).host(
        "good.test",
        &["203.0.113.10"],
        300,
    );
    let policy = names_policy("deny", &[], &["bad.test"], &["203.0.113.0/24"]);
    let s = start("oe-ndeny", &policy, &zone);
    s.connect("203.0.113.9")
        .assert_ok("before any answer, the CIDR allows the address");
    s.resolve("bad.test")
        .assert_eperm("once bound to a denied name, the address is refused");
    let ev = s.event("blocked", "203.0.113.9");
    assert_eq!(ev["rule"], "deny.domains:bad.test", "{ev}");
    assert_eq!(ev["host"], "bad.test", "{ev}");
    s.connect("203.0.113.9")
        .assert_eperm("the binding holds for connects that resolve nothing");
    s.resolve("good.test")
        .assert_ok("another name in the CIDR is still allowed");
}

#[test]
fn the_most_specific_domain_rule_wins_and_deny_wins_a_tie_or_a_shared_address() {
    let zone = Zone::new()
        .host("x.ads.allow.test", &["203.0.113.41"], 300)
        .host("ok.ads.allow.test", &["203.0.113.42"], 300)
        .host("y.allow.test", &["203.0.113.43"], 300)
        .host("both.test", &["203.0.113.44"], 300)
        .host("cdn.allow.test", &["203.0.113.45"], 300)
        .host("tracker.test", &["203.0.113.45"], 300);
    let policy = names_policy(
        "deny",
        &["*.allow.test", "ok.ads.allow.test", "both.test"],
        &["*.ads.allow.test", "both.test", "tracker.test"],
        &[],
    );
    let s = start("oe-nspec", &policy, &zone);
    s.resolve("x.ads.allow.test")
        .assert_eperm("a longer denied suffix beats a shorter allowed one");
    assert_eq!(
        s.event("blocked", "203.0.113.41")["rule"],
        "deny.domains:*.ads.allow.test"
    );
    s.resolve("ok.ads.allow.test")
        .assert_ok("an allowed exact name beats a denied suffix");
    assert_eq!(
        s.event("allowed", "203.0.113.42")["rule"],
        "allow.domains:ok.ads.allow.test"
    );
    s.resolve("y.allow.test")
        .assert_ok("the shorter suffix elsewhere");
    s.resolve("both.test")
        .assert_eperm("a name in both lists is denied");
    s.resolve("cdn.allow.test")
        .assert_ok("an allowed name alone on its address");
    s.resolve("tracker.test")
        .assert_eperm("a denied name on the same address");
    s.resolve("cdn.allow.test")
        .assert_eperm("an address bound to an allowed and a denied name is denied");
}

#[test]
fn after_the_ttl_a_new_connection_falls_through_and_an_established_one_keeps_flowing() {
    let zone = Zone::new().host("ttl.allow.test", &["203.0.113.40"], 4);
    let s = DnsScenario::start(
        "oe-nttl",
        "--enforce",
        &allow_suffix(),
        &["--dns-min-ttl", "1"],
        &zone,
        &[],
    );
    let mut held = s.hold("ttl.allow.test");
    held.first.assert_ok("connect right after resolution");
    held.send().assert_ok("data on the new connection");
    s.connect("203.0.113.40")
        .assert_ok("a second connection while the binding lives");
    // After 4 s (above the 1 s minimum, so not raised) the binding expires: a new connection falls
    // through to the IP rules, i.e. to default deny.
    wait_for(
        "a new connection refused after the TTL",
        Duration::from_secs(15),
        || (s.connect("203.0.113.40").errno() == Some(libc::EPERM)).then_some(()),
    );
    for i in 0..5 {
        held.send().assert_ok(&format!(
            "data {i} on the established connection after the TTL"
        ));
    }
}

#[test]
fn dns_over_tcp_after_a_truncated_udp_answer_is_learned() {
    // 31 A records make an answer of more than 512 bytes: without EDNS (glibc's default)
    // dnsmasq truncates the UDP answer (30 records fit) and glibc asks again over TCP.
    let addrs: Vec<String> = (0..31).map(|i| format!("203.0.113.{}", 101 + i)).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let zone = Zone::new().host("big.allow.test", &refs, 300);
    let s = start("oe-ntcp", &allow_suffix(), &zone);
    let p = s.inside(&["resolve", "big.allow.test", "--family", "4", "--all"]);
    assert_eq!(
        p.json["addrs"].as_array().map(Vec::len),
        Some(31),
        "{}",
        p.json
    );
    assert!(
        p.ok(),
        "every address of the TCP answer is bound (the truncated UDP answer lacks one): {}",
        p.json
    );
}

#[test]
fn many_answers_in_one_response_are_all_bound() {
    // 32 A records (the most one answer binds) in one UDP answer: EDNS lets it exceed 512
    // bytes.
    let addrs: Vec<String> = (0..32).map(|i| format!("203.0.113.{}", 140 + i)).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let zone = Zone::new().host("many.allow.test", &refs, 300).host(
        "many.allow.test",
        &["2001:db8::1:1", "2001:db8::1:2"],
        300,
    );
    let s = DnsScenario::start(
        "oe-nmany",
        "--enforce",
        &allow_suffix(),
        &[],
        &zone,
        &["edns0"],
    );
    let p = s.inside(&["resolve", "many.allow.test", "--family", "4", "--all"]);
    assert_eq!(
        p.json["addrs"].as_array().map(Vec::len),
        Some(32),
        "{}",
        p.json
    );
    assert!(p.ok(), "every address of the answer is bound: {}", p.json);
    let p6 = s.inside(&["resolve", "many.allow.test", "--family", "6", "--all"]);
    assert_eq!(p6.json["successes"], 2, "{}", p6.json);
    assert!(s.answers("learned") >= 2.0);
    // The names table holds one live (address, name) pair per address.
    let d = s.daemon();
    wait_for("34 bindings in the metric", Duration::from_secs(5), || {
        let v = metric_value(&d.metrics(), "ollama_egress_dns_bindings");
        (v == Some(34.0)).then_some(())
    });
}

#[test]
fn forged_and_malformed_answers_change_nothing() {
    let zone = Zone::new();
    let s = start("oe-nforge", &allow_suffix(), &zone);
    let exchange = |name: &str, addr: &str, kind: &str| {
        let p = s.inside(&["dns-exchange", FAKE_SERVER, name, addr, "--kind", kind]);
        assert_eq!(
            p.json["answer_received"], true,
            "{kind}: the answer reaches the process (learning never drops it): {}",
            p.json
        );
        p
    };
    let counts = || ["ignored", "malformed", "learned"].map(|r| s.answers(r));
    // Each answer, the counter it must raise (none: a message with QR clear is no answer;
    // a record cut short ends the walk, keeping the records before it, here none), and
    // nothing may be bound: a UDP packet from port 53 that answers no query, answers with
    // another id, from another server, to another port or after the query window (5 s), and
    // answers to a real query that cannot be parsed or name a non-canonical question.
    let cases = [
        ("forged.allow.test", "203.0.113.60", "unsolicited", Some(0)),
        ("forged.allow.test", "203.0.113.61", "wrong-id", Some(0)),
        ("forged.allow.test", "203.0.113.67", "wrong-server", Some(0)),
        ("forged.allow.test", "203.0.113.68", "wrong-port", Some(0)),
        ("forged.allow.test", "203.0.113.70", "late", Some(0)),
        ("m.allow.test", "203.0.113.62", "not-response", None),
        ("m.allow.test", "203.0.113.63", "two-questions", Some(1)),
        (
            "m.allow.test",
            "203.0.113.64",
            "compressed-question",
            Some(1),
        ),
        ("b!d.allow.test", "203.0.113.65", "good", Some(1)),
        ("m.allow.test", "203.0.113.66", "truncated", Some(2)),
    ];
    let mut wrong = Vec::new();
    for (name, addr, kind, counter) in cases {
        let before = counts();
        exchange(name, addr, kind)
            .assert_eperm(&format!("the address of a {kind} answer for {name}"));
        let after = counts();
        let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let mut expected = vec![0.0; 3];
        if let Some(c) = counter {
            expected[c] = 1.0;
        }
        if delta != expected {
            wrong.push(format!(
                "{kind} ({name}): ignored/malformed/learned rose by {delta:?}, expected {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let learned = s.answers("learned");
    exchange("fine.allow.test", "203.0.113.69", "good")
        .assert_ok("a well-formed answer from the same server is learned");
    assert_eq!(s.answers("learned") - learned, 1.0);
    for addr in ["203.0.113.60", "203.0.113.61", "203.0.113.62"] {
        s.connect(addr)
            .assert_eperm(&format!("{addr} stays refused afterwards"));
    }
}

#[test]
fn the_resolver_cgroup_learns_for_clients_that_ask_it_over_loopback() {
    require_root();
    let resolver_cg = TestCgroup::new("oe-nrescg");
    let cg = resolver_cg.path.display().to_string();
    let zone = Zone::new()
        .host("r.allow.test", &["203.0.113.80"], 300)
        .host("other.test", &["203.0.113.81"], 300);
    let policy = names_policy("deny", &["*.allow.test"], &[], &["127.0.0.0/8"]);
    let s = DnsScenario::start(
        "oe-nres",
        "--enforce",
        &policy,
        &["--dns-cgroup", &cg],
        &zone,
        &[],
    );
    // A forwarding resolver in its own cgroup, on loopback port 5353, asking the namespace's
    // authoritative server: the client's answers come from port 5353, only the resolver's
    // come from port 53.
    let _forwarder = Dnsmasq::forwarder(&s.s.ns, &resolver_cg.path);
    let p = s.inside(&["ask", "127.0.0.1:5353", "r.allow.test"]);
    p.assert_ok("an allowed name learned from the resolver's cgroup");
    assert_eq!(p.json["addr"], "203.0.113.80", "{}", p.json);
    assert_eq!(s.event("allowed", "203.0.113.80")["host"], "r.allow.test");
    s.inside(&["ask", "127.0.0.1:5353", "other.test"])
        .assert_eperm("a name not allowed, through the same resolver");
}

#[test]
fn answers_from_a_local_stub_resolver_on_loopback_are_learned() {
    let zone = Zone::new().host("stub.allow.test", &["203.0.113.85"], 300);
    let policy = names_policy("deny", &["*.allow.test"], &[], &["127.0.0.0/8"]);
    let s = start("oe-nstub", &policy, &zone);
    // A stub on 127.0.0.53:53 outside every watched cgroup, forwarding to the namespace's
    // server: the client's query and answer cross loopback, port 53.
    let stub = Dnsmasq::start(&DnsmasqSpec {
        ns: &s.s.ns,
        listen: "127.0.0.53",
        port: 53,
        zone: &Zone::new(),
        upstream: Some(ollama_egress_tests::dns::RESOLVER),
        cgroup: None,
    });
    s.resolv.set("127.0.0.53", &[]);
    let p = s.resolve("stub.allow.test");
    p.assert_ok("an allowed name answered by the stub");
    assert_eq!(
        s.event("allowed", "203.0.113.85")["host"],
        "stub.allow.test"
    );
    let log = stub.log_text();
    assert!(
        log.contains("query[A] stub.allow.test from 127.0.0.1"),
        "the stub answered the client:\n{log}"
    );
}

#[test]
fn events_carry_the_host_and_logs_filter_by_it() {
    let zone = Zone::new()
        .host("a.allow.test", &["203.0.113.11"], 300)
        .host("b.allow.test", &["203.0.113.12"], 300)
        .host("evil.test", &["203.0.113.13"], 300);
    let policy = names_policy("deny", &["*.allow.test"], &["evil.test"], &[]);
    let s = start("oe-nhost", &policy, &zone);
    s.resolve("a.allow.test").assert_ok("a");
    s.resolve("b.allow.test").assert_ok("b");
    s.resolve("evil.test").assert_eperm("evil");
    assert_eq!(s.event("allowed", "203.0.113.11")["host"], "a.allow.test");
    let ev = s.event("blocked", "203.0.113.13");
    assert_eq!(ev["host"], "evil.test", "{ev}");
    assert_eq!(ev["rule"], "deny.domains:evil.test", "{ev}");

    let d = s.daemon();
    let hosts = |args: &[&str]| -> Vec<String> {
        logs_json(d, args)
            .iter()
            .map(|e| e["host"].as_str().unwrap_or("null").to_owned())
            .collect()
    };
    let a = hosts(&["--host", "a.allow.test"]);
    assert!(
        !a.is_empty() && a.iter().all(|h| h == "a.allow.test"),
        "{a:?}"
    );
    let mut suffix = hosts(&["--host", "*.allow.test"]);
    suffix.dedup();
    assert_eq!(suffix, ["a.allow.test", "b.allow.test"], "{suffix:?}");
    assert_eq!(hosts(&["--host", "EVIL.test."]), ["evil.test"]);
    assert!(hosts(&["--host", "*.evil.test"]).is_empty());
}

#[test]
fn monitor_mode_records_would_block_with_the_host() {
    let zone = Zone::new().host("evil.test", &["203.0.113.14"], 300).host(
        "ok.allow.test",
        &["203.0.113.15"],
        300,
    );
    let policy = names_policy("deny", &["*.allow.test"], &["evil.test"], &[]);
    let s = DnsScenario::start("oe-nmon", "--monitor", &policy, &[], &zone, &[]);
    s.resolve("evil.test")
        .assert_ok("monitor mode lets a denied name through");
    s.resolve("ok.allow.test").assert_ok("an allowed name");
    let ev = s.event("would_block", "203.0.113.14");
    assert_eq!(ev["host"], "evil.test", "{ev}");
    assert_eq!(ev["rule"], "deny.domains:evil.test", "{ev}");
    assert_eq!(ev["mode"], "monitor", "{ev}");
    let ok = s.event("allowed", "203.0.113.15");
    assert_eq!(ok["host"], "ok.allow.test", "{ok}");
}

#[test]
fn a_reload_rebinds_learned_names_under_the_new_rules() {
    let zone = Zone::new()
        .host("soon.allow.test", &["203.0.113.90"], 300)
        .host("later.test", &["203.0.113.91"], 300);
    let s = start("oe-nreload", &allow_suffix(), &zone);
    s.resolve("soon.allow.test")
        .assert_ok("allowed before the reload");
    s.resolve("later.test")
        .assert_eperm("not allowed before the reload");
    std::fs::write(
        &s.s.policy,
        names_policy("deny", &["later.test"], &["soon.allow.test"], &[]),
    )
    .expect("write the new policy");
    let d = s.daemon();
    wait_for("the new policy loaded", Duration::from_secs(10), || {
        d.stderr_text().contains("policy reloaded").then_some(())
    });
    // Neither name is asked again: the bindings learned under the old policy are judged by
    // the new one at once.
    s.connect("203.0.113.90")
        .assert_eperm("a name the new policy denies, learned before the reload");
    assert_eq!(
        s.event("blocked", "203.0.113.90")["rule"],
        "deny.domains:soon.allow.test"
    );
    s.connect("203.0.113.91")
        .assert_ok("a name the new policy allows, learned before the reload");
    assert_eq!(s.event("allowed", "203.0.113.91")["host"], "later.test");
}

/// The harness itself, without domain rules: dnsmasq answers getaddrinfo in the namespace (also
/// over TCP and through a CNAME chain), the fake server's answers reach the probe, a forwarder
/// in a cgroup of its own answers over loopback, and a held connection carries data.
#[test]
fn the_namespace_resolver_answers_the_probe() {
    require_root();
    let resolver_cg = TestCgroup::new("oe-nharncg");
    let addrs: Vec<String> = (0..31).map(|i| format!("203.0.113.{}", 101 + i)).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let zone = Zone::new()
        .host("a.test", &["203.0.113.5", "2001:db8::5"], 300)
        .host("big.test", &refs, 300)
        .host("end.test", &["203.0.113.6"], 300)
        .cname("alias.test", "end.test", 300);
    let s = start("oe-nharn", &names_policy("allow", &[], &[], &[]), &zone);
    let p = s.inside(&["resolve", "a.test", "--family", "4"]);
    p.assert_ok("resolve and connect");
    assert_eq!(p.json["addr"], "203.0.113.5", "{}", p.json);
    let p = s.inside(&["resolve", "a.test", "--family", "6"]);
    assert_eq!(p.json["addr"], "2001:db8::5", "{}", p.json);
    p.assert_ok("resolve and connect over IPv6");
    let p = s.inside(&["resolve", "big.test", "--all"]);
    assert_eq!(p.json["successes"], 31, "{}", p.json);
    assert_eq!(s.resolve("alias.test").json["addr"], "203.0.113.6");
    let p = s.inside(&[
        "dns-exchange",
        FAKE_SERVER,
        "x.test",
        "203.0.113.7",
        "--kind",
        "good",
    ]);
    p.assert_ok("the fake server's answer");
    assert_eq!(p.json["answer_received"], true, "{}", p.json);
    let _forwarder = Dnsmasq::forwarder(&s.s.ns, &resolver_cg.path);
    let p = s.inside(&["ask", "127.0.0.1:5353", "end.test"]);
    p.assert_ok("through the forwarder");
    assert_eq!(p.json["addr"], "203.0.113.6", "{}", p.json);
    let mut held = s.hold("a.test");
    held.first.assert_ok("held connect");
    held.send().assert_ok("data on the held connection");
    let p = held.send();
    assert_eq!(p.json["bytes_received"], 2000, "{}", p.json);
}
