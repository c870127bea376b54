use super::*;

#[test]
fn generations_round_trip_for_the_same_pins_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("SLOT_CONFIG");
    std::fs::write(&pin, "").expect("pin stand-in");
    let book = RuleBook::new(dir.path(), Path::new("/sys/fs/bpf/x"), &pin).expect("book");
    let policy = crate::policy::Policy::from_toml_str(
        "default = \"allow\"\n[deny]\ncidrs = [\"198.51.100.0/24\"]\n",
        "t",
    )
    .expect("policy");
    let compiled = crate::policy::compile(&policy, None).expect("compile");
    for g in 1..=10 {
        book.record(g, &compiled, Mode::Enforce);
    }
    let gens = book.generations();
    assert_eq!(gens.len(), KEPT);
    assert_eq!(gens[0].generation, 3);
    assert_eq!(gens[KEPT - 1].generation, 10);
    assert!(
        gens[0]
            .rules
            .iter()
            .any(|r| r == "deny.cidrs:198.51.100.0/24")
    );
    let other = RuleBook::new(dir.path(), Path::new("/sys/fs/bpf/y"), &pin).expect("book");
    assert!(other.generations().is_empty());
}
