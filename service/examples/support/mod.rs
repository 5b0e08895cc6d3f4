//! What the benchmark programs share: reading adoptd's log stamps,
//! percentiles, naming the machine they ran on, and compiling the C
//! peers they measure adoptd against.

use std::path::{Path, PathBuf};

/// `2026-01-02T03:04:05.678901Z` → microseconds since the epoch.
pub fn parse_utc_micros(stamp: &str) -> Option<i64> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.')?;
    let mut clock = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let mut micros: i64 = fraction.get(..6)?.parse().ok()?;
    for _ in fraction.len()..6 {
        micros *= 10;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

pub fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The binaries of this build, next to the examples directory, or in
/// `$ADOPTD_BENCH_BINARIES` when it is set (to measure another build's
/// adoptd, adoptctl and dance with the same benchmark, side by side).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("ADOPTD_BENCH_BINARIES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("this program's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/PROFILE/examples")
                .to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p adoptd -p adoptctl -p dance` first",
        path.display()
    );
    path
}

/// Compiles the C program `source` with `cc -O2` into `directory/name`.
pub fn compile_c(source: &str, directory: &Path, name: &str) -> Result<PathBuf, String> {
    compile_c_with(source, directory, name, &[])
}

/// As [`compile_c`], with `flags` added (`-static`).
pub fn compile_c_with(
    source: &str,
    directory: &Path,
    name: &str,
    flags: &[&str],
) -> Result<PathBuf, String> {
    let file = directory.join(format!("{name}.c"));
    let program = directory.join(name);
    std::fs::write(&file, source).map_err(|e| e.to_string())?;
    let compiled = std::process::Command::new("cc")
        .args(flags)
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&file)
        .status()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !compiled.success() {
        return Err(format!("cc failed: {compiled}"));
    }
    Ok(program)
}
