use super::*;

#[test]
fn the_server_name_is_answered_with_loopback_and_the_id_echoed() {
    let r = answer(&query(0xbeef, SERVER_NAME)).expect("an answer");
    assert_eq!(&r[0..2], &[0xbe, 0xef]);
    assert_eq!(&r[4..8], &[0, 1, 0, 1], "one question, one answer");
    assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
    assert_eq!(&r[r.len() - 10..r.len() - 6], &ANSWER_TTL_S.to_be_bytes());
}

#[test]
fn fresh_names_get_documentation_addresses() {
    let r = answer(&query(1, &format!("q7-1.{FRESH_SUFFIX}"))).expect("an answer");
    assert_eq!(&r[r.len() - 4..r.len() - 1], &[198, 51, 100]);
    assert_ne!(r[r.len() - 1], 0);
}

#[test]
fn truncated_or_questionless_queries_get_no_answer() {
    let q = query(1, SERVER_NAME);
    assert!(answer(&q[..q.len() - 3]).is_none());
    let mut none = q.clone();
    none[5] = 0;
    assert!(answer(&none).is_none());
    assert!(answer(&[0; 5]).is_none());
}

#[test]
fn the_domain_lines_close_deny_and_open_allow() {
    let p = policy_domains();
    assert_eq!(p.matches(".denied.bench.test").count(), DENY_RULES);
    assert!(p.contains("[allow]\ndomains = [\"server.bench.test\", \"*.allowed.bench.test\"]"));
}
