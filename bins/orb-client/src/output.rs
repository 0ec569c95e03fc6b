//! Printing: tables, JSON values as text, times.

use serde_json::Value;

/// Print a JSON list as pretty JSON, or as a table: `columns` are the
/// headers with their widths (negative: right-aligned; 0: the last,
/// unpadded), `row` the cells of one element.
pub fn table(
    v: &Value,
    json: bool,
    columns: &[(&str, isize)],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for ((_, width), cell) in columns.iter().zip(cells) {
            let w = width.unsigned_abs();
            match width.signum() {
                0 => out.push_str(&cell),
                1 => out.push_str(&format!("{cell:<w$} ")),
                _ => out.push_str(&format!("{cell:>w$} ")),
            }
        }
        out.trim_end().to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| h.to_string()).collect())
    );
    for item in v.as_array().into_iter().flatten() {
        println!("{}", line(row(item)));
    }
    Ok(())
}

/// A JSON value as text: strings without quotes.
pub fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// The first `n` characters of a JSON string (IDs and hashes).
pub fn short(v: &Value, n: usize) -> String {
    s(v).chars().take(n).collect()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration like `90s`, `15m`, `2h`, `1d` or plain seconds, in
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 90s, 15m, 2h, 1d)"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    n.checked_mul(ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("30"), Ok(30_000));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
