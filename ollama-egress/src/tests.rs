use super::*;

#[test]
fn a_source_already_in_the_message_is_not_repeated() {
    let io = io::Error::from(io::ErrorKind::NotFound);
    let e = ollama_egress::policy::PolicyError::Read {
        path: "/nonexist".into(),
        source: io,
    };
    let text = render_error(&anyhow::Error::new(e));
    assert_eq!(text, "cannot read policy file /nonexist: entity not found");
    let ctx = anyhow::Error::new(io::Error::other("disk on fire")).context("writing x");
    assert_eq!(render_error(&ctx), "writing x: disk on fire");
}
