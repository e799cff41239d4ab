//! Publishes its params verbatim as a JSON output named `out`: the JSON
//! shapes a module could use to carry small groups past a naive check.
fn run(params: &str) -> cleanroom_guest::Result<()> {
    cleanroom_guest::publish_json_text("out", params)
}
cleanroom_guest::analysis!(run);
