//! Remembers the previous run's params in a static; a fresh instance per run
//! means it must always see none.
static mut LAST: Option<String> = None;
fn run(params: &str) -> cleanroom_guest::Result<()> {
    // SAFETY: components are single-threaded.
    let previous = unsafe { (*std::ptr::addr_of_mut!(LAST)).replace(params.to_string()) };
    cleanroom_guest::publish_json("previous", &previous)
}
cleanroom_guest::analysis!(run);
