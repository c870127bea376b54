use super::*;

#[test]
fn finds_the_cookie_of_an_own_socket() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut want: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid pointers for the call.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut want as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(ret, 0);
    let got = cookies(Path::new("/proc"), std::process::id()).expect("own sockets");
    assert!(got.contains(&want), "{want} in {got:?}");
}
