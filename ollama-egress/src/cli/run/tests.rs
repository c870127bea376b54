//! Tests of `ollama-egress run`'s target options.

use clap::Parser;

use super::*;
use crate::targeting::TargetSpec;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn parse(args: &[&str]) -> Result<RunOptions, String> {
    Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
        .map(|c| c.run.options())
        .map_err(|e| e.to_string())
}

#[test]
fn container_and_engine_socket() {
    let o = parse(&[
        "--monitor",
        "--container",
        "ollama",
        "--engine-socket",
        "/tmp/x/docker.sock",
    ])
    .expect("parses");
    assert_eq!(o.target, TargetSpec::Container("ollama".into()));
    assert_eq!(o.engine_socket, Some(PathBuf::from("/tmp/x/docker.sock")));
}

#[test]
fn no_target_flag_is_automatic() {
    let o = parse(&["--enforce"]).expect("parses");
    assert_eq!(o.target, TargetSpec::Auto);
    assert_eq!(o.engine_socket, None);
    let o = parse(&["--enforce", "--process", "ollama"]).expect("parses");
    assert_eq!(o.target, TargetSpec::Process("ollama".into()));
}

#[test]
fn one_target_only() {
    let err =
        parse(&["--monitor", "--container", "a", "--unit", "ollama.service"]).expect_err("refused");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn pod_selector_and_node_name() {
    let o = parse(&[
        "--enforce",
        "--pod-selector",
        "app.kubernetes.io/name=ollama",
        "--node-name",
        "worker-1",
    ])
    .expect("parses");
    let TargetSpec::Pod(spec) = o.target else {
        panic!("{:?}", o.target)
    };
    assert_eq!(spec.selector.to_string(), "app.kubernetes.io/name=ollama");
    assert_eq!(spec.node.as_deref(), Some("worker-1"));
    assert_eq!(spec.api, kube::ApiSpec::default());
    assert_eq!(spec.namespace, None);
    let o = parse(&[
        "--monitor",
        "--pod-selector",
        "a=b",
        "--pod-namespace",
        "ai",
    ])
    .expect("parses");
    let TargetSpec::Pod(spec) = o.target else {
        panic!("{:?}", o.target)
    };
    assert_eq!(spec.namespace.as_deref(), Some("ai"));
    let err = parse(&["--monitor", "--pod-namespace", "ai"]).expect_err("refused");
    assert!(err.contains("--pod-selector"), "{err}");
    let err = parse(&["--enforce", "--pod-selector", "app=oll@ma"]).expect_err("refused");
    assert!(err.contains("column 8"), "{err}");
    let err = parse(&["--enforce", "--pod-selector", "a=b", "--unit", "x"]).expect_err("refused");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn log_stdout_is_off_unless_asked() {
    assert!(!parse(&["--monitor"]).expect("parses").log_stdout);
    let o = parse(&["--monitor", "--log-stdout"]).expect("parses");
    assert!(o.log_stdout);
    assert_eq!(
        o.log_dir,
        PathBuf::from(defaults::LOG_DIR),
        "the log dir stays"
    );
}
