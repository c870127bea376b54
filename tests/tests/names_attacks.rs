//! Names against an attacker inside the target: a process of the watched cgroup that answers
//! its own DNS queries (a DNS server of its own on a local address, port 53) must not be able
//! to bind an allowed name to an address of its choice.

use ollama_egress_tests::dns::{DnsScenario, FAKE_SERVER, Zone, names_policy};

#[test]
fn an_answer_the_target_sends_itself_binds_nothing() {
    let policy = names_policy("deny", &["*.allow.test"], &[], &[]);
    let s = DnsScenario::start("oe-nself", "--enforce", &policy, &[], &Zone::new(), &[]);
    let exchange = |name: &str, addr: &str, in_cgroup: bool| {
        let mut args = vec!["dns-exchange", FAKE_SERVER, name, addr, "--kind", "good"];
        if in_cgroup {
            args.push("--server-in-cgroup");
        }
        let p = s.inside(&args);
        assert_eq!(
            p.json["answer_received"], true,
            "the answer reaches the process (learning never drops it): {}",
            p.json
        );
        p
    };
    let (ignored, learned) = (s.answers("ignored"), s.answers("learned"));
    // The server socket is the target's own: its well-formed answer to the target's own query
    // names an allowed name and an address nothing else bound.
    exchange("self.allow.test", "203.0.113.71", true)
        .assert_eperm("an address the target bound to an allowed name by answering itself");
    assert_eq!(
        (
            s.answers("ignored") - ignored,
            s.answers("learned") - learned
        ),
        (1.0, 0.0),
        "the self-made answer is ignored, not learned"
    );
    s.connect("203.0.113.71")
        .assert_eperm("the address stays refused afterwards");
    // The same exchange with the server outside the cgroup is an answer from a resolver.
    exchange("other.allow.test", "203.0.113.72", false)
        .assert_ok("the answer of a server outside the target is learned");
    assert_eq!(s.answers("learned") - learned, 1.0);
}
