//! Time: the host's clock, and the time zone as UTC (R's `Sys.time`, `as.POSIXct`, `strftime`).

use super::*;

/// A clock or time-zone function.
pub(super) fn func(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
        ("env", "emscripten_date_now") => Func::wrap(s, |_c: Cx| -> f64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        }),
        ("env", "emscripten_get_now") => {
            Func::wrap(s, |_c: Cx| -> f64 { monotonic_ns() as f64 / 1e6 })
        }
        ("env", "_tzset_js") => Func::wrap(
            s,
            |mut c: Cx, tz: i32, daylight: i32, std: i32, dst: i32| {
                let (mem, _) = mem_of(&mut c);
                put_u32(mem, tz as u32, 0);
                put_u32(mem, daylight as u32, 0);
                for p in [std, dst] {
                    put_bytes(mem, p as u32, b"UTC\0");
                }
            },
        ),
        ("env", "_localtime_js") | ("env", "_gmtime_js") => {
            Func::wrap(s, |mut c: Cx, t: i64, tm: i32| {
                let (mem, _) = mem_of(&mut c);
                write_tm(mem, tm as u32, t);
            })
        }
        ("env", "_mktime_js") | ("env", "_timegm_js") => {
            Func::wrap(s, |mut c: Cx, tm: i32| -> i64 {
                let (mem, _) = mem_of(&mut c);
                let f = |i: u32| get_u32(mem, tm as u32 + 4 * i) as i32 as i64;
                let (sec, min, hour, mday, mon, year) = (f(0), f(1), f(2), f(3), f(4), f(5));
                let y = year + 1900 + mon.div_euclid(12);
                let m = mon.rem_euclid(12) + 1;
                let t = days_from_civil(y, m, 1) * 86400
                    + (mday - 1) * 86400
                    + hour * 3600
                    + min * 60
                    + sec;
                write_tm(mem, tm as u32, t);
                t
            })
        }
        _ => return None,
    })
}
/// The TZif (RFC 8536, version 2) description of UTC: no transitions, one zone type.
pub(super) fn tzif_utc() -> Vec<u8> {
    let block = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"TZif2");
        out.extend_from_slice(&[0; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for n in [0u32, 0, 0, 0, 1, 4] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&0i32.to_be_bytes()); // utoff
        out.extend_from_slice(&[0, 0]); // isdst, desigidx
        out.extend_from_slice(b"UTC\0");
    };
    let mut out = Vec::new();
    block(&mut out);
    block(&mut out);
    out.extend_from_slice(b"\nUTC0\n");
    out
}

pub(super) fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
        + 1
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm; UTC is the
/// only time zone inside, so this is all the calendar the host needs).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `struct tm` for `t` (UTC): sec, min, hour, mday, mon, year, wday, yday, isdst, gmtoff, zone.
fn write_tm(mem: &mut [u8], tm: u32, t: i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let yday = days - days_from_civil(y, 1, 1);
    let wday = (days + 4).rem_euclid(7);
    let fields = [
        secs % 60,
        secs / 60 % 60,
        secs / 3600,
        d,
        m - 1,
        y - 1900,
        wday,
        yday,
        0,
        0,
    ];
    for (i, v) in fields.iter().enumerate() {
        put_u32(mem, tm + 4 * i as u32, *v as i32 as u32);
    }
    put_u32(mem, tm + 40, 0);
}
