//! What an idle client costs in memory, checked where it is decided (no timing involved):
//! each session is one task holding its future, so that future must stay small; the
//! command being served is boxed and exists only while it runs.

/// The size of the future `f` would return.
fn future_size<F, Fut>(_f: &F) -> usize
where
    F: Fn() -> Fut,
{
    std::mem::size_of::<Fut>()
}

#[test]
fn an_idle_sessions_task_stays_small() {
    #[allow(unreachable_code)]
    let serve = || switchyard::session::serve(unreachable!(), unreachable!(), unreachable!());
    let size = future_size(&serve);
    eprintln!("session future: {size} bytes");
    // about 2.6 KiB in a release build, more in a debug one; it was 9.8 KiB before the
    // command in progress was boxed
    assert!(size <= 4 * 1024, "a session's future is {size} bytes");
}
