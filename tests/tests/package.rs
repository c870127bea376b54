//! The `.deb` of `cargo xtask dist`, installed into a clean Debian root: the policy check, the
//! man page and a shell completion work there, the conffile is a conffile, and installing
//! starts nothing.
//!
//! Needs `OLLAMA_EGRESS_DEB` (the package) and `OLLAMA_EGRESS_DEBIAN_ROOT` (a debootstrapped
//! root, never modified: each test works on an overlay of it); `cargo xtask test` provides both.

use std::fs;

use ollama_egress_tests::debian::installed;

#[test]
fn deb_installs_and_its_commands_work_in_a_clean_debian_root() {
    let ov = installed();

    // The static binary runs on a system that has none of the build's libraries.
    let version = ov.ok("ollama-egress --version");
    assert!(
        version.starts_with("ollama-egress ") && version.contains("kernel object"),
        "unexpected --version: {version}"
    );

    let check = ov.ok("ollama-egress policy check /etc/ollama-egress/policy.toml");
    assert!(check.contains("policy OK"), "policy check: {check}");

    let man = ov.ok("MANPAGER=cat MANWIDTH=80 man ollama-egress");
    assert!(
        man.contains("ollama-egress") && man.contains("run"),
        "man ollama-egress: {man}"
    );
    let man_run = ov.ok("MANPAGER=cat man ollama-egress-run");
    assert!(
        man_run.contains("--enforce"),
        "man ollama-egress-run: {man_run}"
    );

    // Bash completion, as bash-completion loads it: complete `ollama-egress ru` and
    // `ollama-egress run --enf`.
    let words = ov.ok("bash -c '. /usr/share/bash-completion/bash_completion; \
         . /usr/share/bash-completion/completions/ollama-egress; \
         f=$(complete -p ollama-egress | sed -E \"s/.*-F ([^ ]+).*/\\1/\"); \
         COMP_WORDS=(ollama-egress ru); COMP_CWORD=1; $f ollama-egress ru ollama-egress; \
         echo \"${COMPREPLY[@]}\"; \
         COMP_WORDS=(ollama-egress run --enf); COMP_CWORD=2; $f ollama-egress --enf run; \
         echo \"${COMPREPLY[@]}\"'");
    let mut lines = words.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("run"),
        "completion of `ru`: {words}"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("--enforce"),
        "completion of `run --enf`: {words}"
    );
    for f in [
        "/usr/share/zsh/vendor-completions/_ollama-egress",
        "/usr/share/fish/vendor_completions.d/ollama-egress.fish",
        "/lib/systemd/system/ollama-egress.service",
        "/lib/systemd/system/ollama.slice",
        "/usr/lib/systemd/system/ollama.service.d/ollama-egress.conf",
    ] {
        assert!(
            ov.root().join(f.trim_start_matches('/')).is_file(),
            "{f} not installed"
        );
    }

    let unit = fs::read_to_string(ov.root().join("lib/systemd/system/ollama-egress.service"))
        .expect("unit installed");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|cmd| cmd.split_whitespace().next())
        .expect("ExecStart in the unit");
    assert!(
        ov.root().join(exec.trim_start_matches('/')).is_file(),
        "the unit runs {exec}, which the package does not install"
    );

    // The policy is a conffile, and installing enabled and started nothing.
    let conffiles = ov.ok("dpkg-query --showformat='${Conffiles}' --show ollama-egress");
    assert!(
        conffiles.contains("/etc/ollama-egress/policy.toml"),
        "policy.toml is not a conffile: {conffiles}"
    );
    let wants = ov.ok("find /etc/systemd/system -name 'ollama-egress*'");
    assert!(
        wants.trim().is_empty(),
        "installing enabled the unit: {wants}"
    );
    assert!(
        !ov.root().join("var/lib/ollama-egress/state.json").exists(),
        "installing started the daemon"
    );
}

#[test]
fn removing_keeps_the_edited_policy_and_purging_removes_it() {
    let ov = installed();
    ov.ok("echo '# edited' >> /etc/ollama-egress/policy.toml");
    ov.ok("dpkg -r ollama-egress");
    assert!(
        !ov.root().join("usr/bin/ollama-egress").exists(),
        "binary left after remove"
    );
    let kept = fs::read_to_string(ov.root().join("etc/ollama-egress/policy.toml"))
        .expect("conffile kept after remove");
    assert!(kept.contains("# edited"), "edited policy lost on remove");
    ov.ok("dpkg --purge ollama-egress");
    assert!(
        !ov.root().join("etc/ollama-egress/policy.toml").exists(),
        "policy left after purge"
    );
}
