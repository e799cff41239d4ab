//! Asks the host for a grouped aggregate through the aggregate interface; params:
//! `{"table", "group", "value", "epsilon"?, "again"?, "name"?}`. `name` names the aggregate
//! (default `by_group`; an adversary names it after a patient). With `again`, asks a second time for
//! that much ε (to try the run's budget). Publishes how long the aggregate seemed to take on
//! the guest's clock as `elapsed_ns` (the host stops the guest's clocks while it works).
use cleanroom_guest::{Aggregate, params};

fn run(text: &str) -> cleanroom_guest::Result<()> {
    let p: serde_json::Value = params(text)?;
    let table = p["table"].as_str().unwrap_or("data");
    let ask = |epsilon: Option<f64>| {
        let mut a = Aggregate::table(table)
            .group_by(&[p["group"].as_str().unwrap_or("sex")])
            .value(p["value"].as_str().unwrap_or("age"))
            .count()
            .mean()
            .quantile(0.5);
        if let Some(e) = epsilon {
            a = a.epsilon(e);
        }
        a
    };
    let start = std::time::Instant::now();
    let name = p["name"].as_str().unwrap_or("by_group");
    let released = ask(p["epsilon"].as_f64()).publish(name)?;
    let elapsed = start.elapsed().as_nanos() as u64;
    cleanroom_guest::info(&format!("{} groups", released.cells.len()));
    if let Some(again) = p["again"].as_f64() {
        ask(Some(again)).publish("by_group_again")?;
    }
    cleanroom_guest::publish_json("elapsed_ns", &elapsed)
}
cleanroom_guest::analysis!(run);
