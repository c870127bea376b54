use super::*;

fn cgroup(root: &Path, rel: &str, populated: bool) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::write(p.join("cgroup.procs"), "").expect("procs");
    std::fs::write(
        p.join("cgroup.events"),
        format!("populated {}\nfrozen 0\n", u8::from(populated)),
    )
    .expect("events");
    p
}

#[test]
fn ttl_bounds_are_checked() {
    let mut o = DnsOptions::default();
    assert_eq!(o.config().expect("defaults").min_ttl_s, 60);
    assert_eq!(o.config().expect("defaults").max_ttl_s, 3600);
    o.min_ttl_s = 1;
    assert_eq!(o.config().expect("1 is allowed").min_ttl_s, 1);
    o.min_ttl_s = 0;
    assert!(matches!(o.config(), Err(DnsError::TtlBounds { .. })));
    o.min_ttl_s = 100;
    o.max_ttl_s = 99;
    let err = o.config().expect_err("min above max");
    assert!(err.to_string().contains("--dns-min-ttl 100"), "{err}");
}

#[test]
fn the_resolver_cgroup_is_found_or_named_as_missing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mount = root.path();
    // Nothing asked, resolved not there: none.
    assert_eq!(
        resolver_cgroup(&DnsOptions::default(), mount).expect("ok"),
        None
    );
    // resolved's cgroup exists but nothing runs in it: none.
    let resolved = cgroup(mount, "system.slice/systemd-resolved.service", false);
    assert_eq!(
        resolver_cgroup(&DnsOptions::default(), mount).expect("ok"),
        None
    );
    cgroup(mount, "system.slice/systemd-resolved.service", true);
    assert_eq!(
        resolver_cgroup(&DnsOptions::default(), mount).expect("ok"),
        Some(resolved)
    );
    // Explicit unit.
    let dnsmasq = cgroup(mount, "system.slice/dnsmasq.service", true);
    let o = DnsOptions {
        unit: Some("dnsmasq".into()),
        ..DnsOptions::default()
    };
    assert_eq!(
        resolver_cgroup(&o, mount).expect("ok"),
        Some(dnsmasq.clone())
    );
    let o = DnsOptions {
        unit: Some("unbound.service".into()),
        ..DnsOptions::default()
    };
    let err = resolver_cgroup(&o, mount).expect_err("no such unit");
    assert!(
        err.to_string()
            .starts_with("--dns-unit unbound.service: no cgroup"),
        "{err}"
    );
    // Explicit cgroup, relative to the mount.
    let o = DnsOptions {
        cgroup: Some("system.slice/dnsmasq.service".into()),
        ..DnsOptions::default()
    };
    assert_eq!(resolver_cgroup(&o, mount).expect("ok"), Some(dnsmasq));
    let o = DnsOptions {
        cgroup: Some("gone.slice".into()),
        ..DnsOptions::default()
    };
    let err = resolver_cgroup(&o, mount).expect_err("missing");
    assert!(
        err.to_string().contains("gone.slice does not exist"),
        "{err}"
    );
}
