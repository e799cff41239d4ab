//! For sample and aggregate: ordinary least squares of `y` on `x` over the rows it sees,
//! published as `coefficients` = [intercept, slope]; params `{"table", "x", "y"}`.
fn run(text: &str) -> cleanroom_guest::Result<()> {
    let p: serde_json::Value = cleanroom_guest::params(text)?;
    let t = cleanroom_guest::Table::open(p["table"].as_str().unwrap_or("data"))?;
    let xi = t.column_index(p["x"].as_str().unwrap_or("x"))?;
    let yi = t.column_index(p["y"].as_str().unwrap_or("y"))?;
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for batch in t.raw_batches() {
        let batch = batch?;
        let (xs, ys) = (batch.column(xi)?.to_f64()?, batch.column(yi)?.to_f64()?);
        for (x, y) in xs.iter().zip(&ys) {
            n += 1.0;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
    }
    let slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    let intercept = (sy - slope * sx) / n;
    cleanroom_guest::publish_json("coefficients", &[intercept, slope])
}
cleanroom_guest::analysis!(run);
