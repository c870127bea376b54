use super::*;

fn listed(name: &str, image: &str) -> ListedContainer {
    ListedContainer {
        name: name.to_owned(),
        id: format!("{name}-id"),
        image: image.to_owned(),
        state: "running".to_owned(),
    }
}

#[test]
fn the_unit_comes_first() {
    let found = Found {
        unit_cgroup: Some(PathBuf::from("/sys/fs/cgroup/system.slice/ollama.service")),
        containers: vec![listed("ollama", "ollama/ollama")],
    };
    let c = choose(&found, "ollama");
    assert_eq!(c.spec, TargetSpec::Unit("ollama.service".into()));
    assert!(
        c.reason.contains("system.slice/ollama.service"),
        "{}",
        c.reason
    );
}

#[test]
fn then_a_container_of_an_ollama_image() {
    let found = Found {
        unit_cgroup: None,
        containers: vec![
            listed("web", "nginx:latest"),
            listed("zz-llm", "ghcr.io/x/ollama-cuda:1"),
            listed("llm", "docker.io/Ollama/ollama:latest"),
        ],
    };
    let c = choose(&found, "ollama");
    assert_eq!(c.spec, TargetSpec::Container("llm".into()));
    assert!(
        c.reason.contains("docker.io/Ollama/ollama:latest"),
        "{}",
        c.reason
    );
    assert!(c.reason.contains("zz-llm"), "{}", c.reason);
    assert!(c.reason.contains("--container"), "{}", c.reason);
}

#[test]
fn else_processes_by_name() {
    let found = Found {
        unit_cgroup: None,
        containers: vec![listed("web", "nginx")],
    };
    let c = choose(&found, "ollama");
    assert_eq!(c.spec, TargetSpec::Process("ollama".into()));
    assert!(c.reason.contains("processes named ollama"), "{}", c.reason);
    assert_eq!(
        choose(&Found::default(), "ollama").spec,
        TargetSpec::Process("ollama".into())
    );
}
