//! Docker-compatible output helpers: human sizes ("1.98MB"), relative times
//! ("2 hours ago") and tab-aligned tables, matching the docker CLI's
//! go-units and text/tabwriter behaviour so scripts and eyes see the same shapes.

use std::time::{SystemTime, UNIX_EPOCH};

/// Sizes as `docker images` prints them: decimal units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    human_size_precision(bytes, 3)
}

/// Sizes as `docker system df` prints them (go-units `HumanSize`: 4 significant digits).
pub fn human_size4(bytes: u64) -> String {
    human_size_precision(bytes, 4)
}

fn human_size_precision(bytes: u64, digits: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!(
        "{}{}",
        significant(value, digits),
        UNITS.get(unit).unwrap_or(&"B")
    )
}

/// Go's `%.{digits}g` for 0 <= value < 1000: that many significant digits, no
/// trailing zeros.
fn significant(value: f64, digits: usize) -> String {
    let integer_digits = if value >= 100.0 {
        3
    } else if value >= 10.0 {
        2
    } else {
        1
    };
    let decimals = digits.saturating_sub(integer_digits);
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// go-units `HumanDuration` of the time since `unix_secs`, plus " ago".
pub fn time_ago(unix_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    format!("{} ago", human_duration((now - unix_secs as f64).max(0.0)))
}

/// go-units `HumanDuration`.
pub fn human_duration(seconds: f64) -> String {
    let secs = seconds as i64;
    let minutes = (seconds / 60.0) as i64;
    let hours = (seconds / 3600.0 + 0.5) as i64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (seconds / 3600.0 / 24.0 / 365.0) as i64)
    }
}

/// Renders rows like Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)` as the
/// docker CLI uses it: each column is max(widest cell + 3, 10) wide, the last
/// column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                let target = (width + 3).max(10);
                line.push_str(&" ".repeat(target.saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Go `stringutils.Ellipsis`: at most `max` characters, the last one "…".
pub fn ellipsis(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let mut short: String = chars.iter().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_982_256), "1.98MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(1_200_000_000), "1.2GB");
        assert_eq!(human_size4(207_512_345), "207.5MB");
        assert_eq!(human_size4(399_200_000), "399.2MB");
        assert_eq!(human_size4(0), "0B");
    }

    #[test]
    fn durations_match_go_units() {
        assert_eq!(human_duration(0.2), "Less than a second");
        assert_eq!(human_duration(1.0), "1 second");
        assert_eq!(human_duration(59.0), "59 seconds");
        assert_eq!(human_duration(61.0), "About a minute");
        assert_eq!(human_duration(600.0), "10 minutes");
        assert_eq!(human_duration(3600.0), "About an hour");
        assert_eq!(human_duration(7200.0), "2 hours");
        assert_eq!(human_duration(3.0 * 86400.0), "3 days");
        assert_eq!(human_duration(21.0 * 86400.0), "3 weeks");
        assert_eq!(human_duration(90.0 * 86400.0), "3 months");
        assert_eq!(human_duration(800.0 * 86400.0), "2 years");
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let rows = vec![
            vec![
                "REPOSITORY".into(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
            ],
            vec![
                "busybox".into(),
                "local".into(),
                "da4102151fea".into(),
                "5 minutes ago".into(),
                "1.98MB".into(),
            ],
        ];
        assert_eq!(
            table(&rows),
            "REPOSITORY   TAG       IMAGE ID       CREATED         SIZE\n\
             busybox      local     da4102151fea   5 minutes ago   1.98MB\n"
        );
        assert_eq!(ellipsis("abcdef", 4), "abc…");
    }
}
