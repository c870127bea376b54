use super::*;

#[test]
fn completions_name_every_subcommand() {
    let mut buf = Vec::new();
    CompletionsArgs {
        shell: clap_complete::Shell::Bash,
    }
    .run(&mut buf)
    .expect("bash completion");
    let text = String::from_utf8(buf).expect("utf-8");
    for sub in [
        "run",
        "logs",
        "status",
        "detach",
        "policy",
        "geo",
        "completions",
    ] {
        assert!(text.contains(sub), "bash completion lacks {sub}");
    }
    assert!(
        text.contains("--enforce"),
        "bash completion lacks run's flags"
    );
}

#[test]
fn man_pages_cover_subcommands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = write_pages(dir.path()).expect("pages");
    let names: Vec<String> = pages
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    for want in [
        "ollama-egress.1",
        "ollama-egress-run.1",
        "ollama-egress-policy-check.1",
        "ollama-egress-geo-update.1",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    let run = std::fs::read_to_string(dir.path().join("ollama-egress-run.1")).expect("run.1");
    assert!(run.contains(".TH"), "not a man page: {run}");
    assert!(run.contains("enforce"), "run page lacks --enforce");
    assert!(
        !names.iter().any(|n| n.contains("manpages")),
        "hidden command documented"
    );
}

#[test]
fn version_names_commit_and_kernel_object() {
    assert!(LONG_VERSION.starts_with(env!("CARGO_PKG_VERSION")));
    assert!(LONG_VERSION.contains("commit "));
    assert!(LONG_VERSION.contains("kernel object "));
}
