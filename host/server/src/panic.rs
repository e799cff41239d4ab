//! The enclave's panic hook: a panic's message can carry text a guest controlled (a value
//! from a table, an output name, an error string), and the default hook prints it to stderr,
//! which in the image is the operator's serial console. This hook prints where the panic
//! happened (source file, line, thread) and never its message.

use std::panic::PanicHookInfo;

/// Replace the default panic hook with [`report`], process-wide.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", report(info));
    }));
}

/// What is printed for a panic: its location and thread, never its payload.
pub fn report(info: &PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    match info.location() {
        Some(at) => format!(
            "cleanroomd: thread '{name}' panicked at {}:{}:{} (message withheld: it may carry \
             guest-controlled text)",
            at.file(),
            at.line(),
            at.column()
        ),
        None => format!(
            "cleanroomd: thread '{name}' panicked (message withheld: it may carry \
             guest-controlled text)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A panic whose message carries a patient id: the report names the place, not the id.
    #[test]
    fn a_panic_report_never_carries_the_message() {
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            *sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = report(info);
        }));
        let caught = std::thread::Builder::new()
            .name("run-worker".into())
            .spawn(|| panic!("guest text PAT-00042"))
            .expect("thread starts")
            .join();
        std::panic::set_hook(previous);
        assert!(caught.is_err());
        let report = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert!(report.contains("panic.rs:"), "{report}");
        assert!(report.contains("run-worker"), "{report}");
        assert!(!report.contains("PAT-00042"), "{report}");
    }
}
