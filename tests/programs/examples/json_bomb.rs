//! Publishes a JSON text larger than the output budget (deeply nested, so
//! that parsing it first would be expensive): the budget must refuse it
//! before anything parses it.
fn run(params: &str) -> cleanroom_guest::Result<()> {
    let mib: usize = params.trim().parse().unwrap_or(65);
    let depth = mib << 19;
    let mut text = String::with_capacity(depth * 2);
    text.extend(std::iter::repeat_n('[', depth));
    text.extend(std::iter::repeat_n(']', depth));
    cleanroom_guest::publish_json_text("bomb", &text)
}
cleanroom_guest::analysis!(run);
