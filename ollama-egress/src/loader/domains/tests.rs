use super::*;

fn b(allow: u64, deny: u64, generation: u32, rule: u32) -> Binding {
    Binding {
        allow_until_ns: allow,
        deny_until_ns: deny,
        generation,
        allow_rule: if allow > 0 { rule } else { 0 },
        deny_rule: if deny > 0 { rule } else { 0 },
        reserved: 0,
    }
}

#[test]
fn merge_keeps_the_later_expiry_of_each_action() {
    let kernel = b(500, 0, 7, 3);
    let rebuilt = b(900, 400, 7, 5);
    let m = merge(kernel, rebuilt, 7);
    assert_eq!((m.allow_until_ns, m.allow_rule), (900, 5));
    assert_eq!((m.deny_until_ns, m.deny_rule), (400, 5));
    let m = merge(b(1000, 0, 7, 3), b(900, 0, 7, 5), 7);
    assert_eq!((m.allow_until_ns, m.allow_rule), (1000, 3));
    assert_eq!(m.generation, 7);
}

#[test]
fn merge_ignores_an_entry_of_another_generation() {
    let m = merge(b(5000, 5000, 6, 3), b(900, 0, 7, 5), 7);
    assert_eq!(m, b(900, 0, 7, 5));
}
