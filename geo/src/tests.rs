/// The daemon shares one `GeoDb` between tasks and sends errors across threads.
#[test]
fn thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<crate::GeoDb>();
    assert_send_sync::<crate::GeoError>();
    assert_send_sync::<crate::UpdateReport>();
}
