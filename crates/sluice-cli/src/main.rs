//! `sluice`: one binary for every role. Errors are printed as one line; exit codes: 0 success,
//! 1 failure (including a demo whose jobs did not all succeed), 2 bad usage, 3 a wait that
//! timed out (`sluice drain --wait --timeout`).

mod cli;
mod client;
mod cmd;
mod config;
mod ctx;
mod progress;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command, LogFormat};
use std::process::ExitCode;
use std::time::Duration;

/// A trimmed `s` as a whole number and the unit after it; `like` says what a valid one looks
/// like when there is no number.
fn number_and_unit<'a>(s: &'a str, like: &str) -> Result<(u64, &'a str), String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num.parse().map_err(|_| format!("{s:?} is not {like}"))?;
    Ok((n, unit))
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a duration like 500ms, 30s, 5m or 1h")?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        u if u.starts_with('.') => {
            return Err(format!(
                "{s:?} is not a duration: use whole numbers, e.g. 1500ms for 1.5s"
            ));
        }
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("{s:?} is longer than a week"));
    }
    Ok(d)
}

/// A retention: whole seconds, minutes, hours, days or weeks (`90d`), `0` to keep; at most ten
/// years.
pub(crate) fn parse_retention(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a retention like 90d, 12h or 0 (keep)")?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "w" => n.checked_mul(7 * 86_400),
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use s, m, h, d or w"
            ));
        }
    };
    match secs {
        Some(secs) if secs <= sluice_store::MAX_RETENTION_SECS as u64 => {
            Ok(Duration::from_secs(secs))
        }
        _ => Err(format!("{s:?} is longer than ten years")),
    }
}

fn init_logs(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => b.compact().init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A hunt runner started by a worker: nothing of the CLI (no configuration file, no
    // runtime of its own) before it has put its limits on itself.
    if args
        .get(1)
        .is_some_and(|a| a == sluice_engine::isolate::RUNNER_VERB)
    {
        init_logs(LogFormat::Pretty, "warn");
        let config = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        return ExitCode::from(
            u8::try_from(sluice_engine::isolate::runner_main(config)).unwrap_or(2),
        );
    }
    // The file's settings are the defaults under the environment and the flags.
    let file = match config::load(&args, &Cli::command()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}", sluice_core::error_line(e.as_ref()));
            return ExitCode::from(2);
        }
    };
    let matches = config::with_file_defaults(Cli::command(), &file).get_matches_from(&args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Global settings given as flags, for `sluice config show`.
    let mut flags = std::collections::BTreeMap::new();
    for a in Cli::command().get_arguments() {
        if let Some(env) = a.get_env()
            && matches.value_source(a.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
            && let Some(v) = matches
                .get_raw(a.get_id().as_str())
                .and_then(|mut v| v.next())
        {
            flags.insert(
                env.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            );
        }
    }
    let settings = config::Settings { file, flags };
    // The demo tells its own story on stdout; its logs (RUST_LOG) are for debugging it.
    let default_logs = match cli.command {
        Command::Demo(_) => "error",
        _ => "info,sqlx=warn",
    };
    init_logs(cli.log_format, default_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = cli.ctx();
    match rt.block_on(cli.command.run(&ctx, &settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", sluice_core::error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_or_explain() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("30", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "s",
            "-5s",
            "1.5s",
            "3d",
            "99999999999999999999s",
            "200h",
            "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
