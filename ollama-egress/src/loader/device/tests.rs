use super::kernel_at_least;

#[test]
fn kernel_releases_compare_by_major_and_minor() {
    assert_eq!(kernel_at_least("6.18.44-fc-v769", (6, 6)), Some(true));
    assert_eq!(kernel_at_least("6.6.0", (6, 6)), Some(true));
    assert_eq!(kernel_at_least("6.1.0-28-amd64", (6, 6)), Some(false));
    assert_eq!(kernel_at_least("5.15.0-101-generic", (6, 6)), Some(false));
    assert_eq!(kernel_at_least("weird", (6, 6)), None);
}
