//! Settings from flags, environment (`SLUICE_…`) and an optional TOML file, in that order of
//! precedence. The file is one more source of the same environment names: `worker.concurrency =
//! 32` (or `worker_concurrency = 32` at the top) is `SLUICE_WORKER_CONCURRENCY=32`. Before clap
//! parses, every file setting whose variable is not set already is exported, so a flag beats the
//! environment, the environment beats the file, and the file beats the defaults — with one
//! parser, one set of checks and one name per setting. Unknown names are refused.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a setting's value came from, for `sluice config show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// The settings the file supplied (environment name → value), and the file.
#[derive(Debug, Default)]
pub struct FileSettings {
    pub path: Option<PathBuf>,
    pub applied: BTreeMap<String, String>,
}

/// Every environment name the CLI reads, over every subcommand (the names a file may set).
pub fn known_env(cmd: &clap::Command) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, Option<String>>) {
        for a in cmd.get_arguments() {
            if let Some(env) = a
                .get_env()
                .filter(|e| e.to_string_lossy().starts_with("SLUICE_"))
            {
                let default = a
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned());
                out.insert(env.to_string_lossy().into_owned(), default);
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, out);
        }
    }
    walk(cmd, &mut out);
    out
}

/// The config file named by `--config FILE` / `SLUICE_CONFIG`, else `./sluice.toml` if it exists.
fn config_path(args: &[std::ffi::OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os("SLUICE_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let default = PathBuf::from("sluice.toml");
    default.exists().then_some((default, false))
}

/// Flattens the file's table: `[worker] concurrency = 32` → `SLUICE_WORKER_CONCURRENCY`.
fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<(String, String)>) -> Result<()> {
    for (k, v) in t {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}_{k}")
        };
        let value = match v {
            toml::Value::Table(t) => {
                flatten(&name, t, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "setting {name:?}: a {} is not a setting value (use a string, number or boolean)",
                other.type_str()
            ),
        };
        out.push((
            format!(
                "SLUICE_{}",
                name.to_ascii_uppercase().replace(['-', '.'], "_")
            ),
            value,
        ));
    }
    Ok(())
}

/// Reads the file (if any) and exports its settings that the environment does not set yet.
/// Must run before any thread is started (it sets environment variables).
pub fn load(args: &[std::ffi::OsString], cmd: &clap::Command) -> Result<FileSettings> {
    let Some((path, named)) = config_path(args) else {
        return Ok(FileSettings::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileSettings::default());
        }
        Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
    };
    let settings = parse(&text, &path, cmd)?;
    let mut applied = BTreeMap::new();
    for (env, value) in settings {
        if std::env::var_os(&env).is_none() {
            // SAFETY (of the std requirement): called from `main` before the runtime or any
            // other thread exists.
            #[allow(unsafe_code)]
            unsafe {
                std::env::set_var(&env, &value);
            }
            applied.insert(env, value);
        }
    }
    Ok(FileSettings {
        path: Some(path),
        applied,
    })
}

/// The file's settings as environment names and values; malformed TOML and unknown names are
/// errors (with the TOML error's line and column).
pub fn parse(text: &str, path: &Path, cmd: &clap::Command) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            e.to_string().replace('\n', " ").trim()
        )
    })?;
    let mut out = Vec::new();
    flatten("", &table, &mut out)?;
    let known = known_env(cmd);
    for (env, _) in &out {
        if env == "SLUICE_CONFIG" || !known.contains_key(env) {
            let name = env.trim_start_matches("SLUICE_").to_ascii_lowercase();
            bail!(
                "{}: unknown setting {name:?} (`sluice config show` lists the settings)",
                path.display()
            );
        }
    }
    Ok(out)
}

/// Whether a setting holds a secret (shown masked).
fn is_secret(env: &str) -> bool {
    ["PASSWORD", "SECRET", "TOKEN", "KEY"]
        .iter()
        .any(|s| env.contains(s))
}

/// One setting as `sluice config show` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shown {
    pub setting: String,
    pub env: String,
    pub value: Option<String>,
    pub source: Source,
}

/// The effective value of every setting: environment (or file) over default; for the global
/// flags given on this command line, the flag.
pub fn show(
    cmd: &clap::Command,
    file: &FileSettings,
    flags: &BTreeMap<String, String>,
) -> Vec<Shown> {
    known_env(cmd)
        .into_iter()
        .filter(|(env, _)| env != "SLUICE_CONFIG")
        .map(|(env, default)| {
            let (value, source) = if let Some(v) = flags.get(&env) {
                (Some(v.clone()), Source::Flag)
            } else if let Some(v) = file.applied.get(&env) {
                (Some(v.clone()), Source::File)
            } else if let Ok(v) = std::env::var(&env) {
                (Some(v), Source::Env)
            } else {
                (default, Source::Default)
            };
            let value = value.map(|v| {
                if env.ends_with("DATABASE_URL") {
                    sluice_store::redact_url(&v)
                } else if is_secret(&env) {
                    "***".into()
                } else {
                    v
                }
            });
            Shown {
                setting: env.trim_start_matches("SLUICE_").to_ascii_lowercase(),
                env,
                value,
                source,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("t")
            .arg(
                clap::Arg::new("database_url")
                    .long("database-url")
                    .env("SLUICE_DATABASE_URL")
                    .default_value("sqlite://sluice.db"),
            )
            .subcommand(
                clap::Command::new("worker").arg(
                    clap::Arg::new("concurrency")
                        .long("concurrency")
                        .env("SLUICE_WORKER_CONCURRENCY"),
                ),
            )
    }

    #[test]
    fn file_settings_are_env_names_and_unknown_or_malformed_ones_are_refused() {
        let p = Path::new("sluice.toml");
        let got = parse(
            "database_url = \"postgres://u:pw@db/s\"\n[worker]\nconcurrency = 32\n",
            p,
            &cmd(),
        )
        .unwrap_or_default();
        assert_eq!(
            got,
            vec![
                ("SLUICE_DATABASE_URL".into(), "postgres://u:pw@db/s".into()),
                ("SLUICE_WORKER_CONCURRENCY".into(), "32".into()),
            ]
        );
        let cases = [
            (
                "[worker]\nconcurency = 3\n",
                "unknown setting \"worker_concurency\"",
            ),
            ("database_url = \n", "sluice.toml"),
            ("[worker\n", "sluice.toml"),
            ("database_url = [1, 2]\n", "not a setting value"),
            ("config = \"other.toml\"\n", "unknown setting \"config\""),
        ];
        for (text, want) in cases {
            match parse(text, p, &cmd()) {
                Err(e) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
                Ok(v) => panic!("{text:?} was accepted: {v:?}"),
            }
        }
    }

    #[test]
    fn show_masks_passwords_and_names_the_source() {
        let file = FileSettings {
            path: None,
            applied: [(
                "SLUICE_DATABASE_URL".to_string(),
                "postgres://u:pw@db/s".to_string(),
            )]
            .into(),
        };
        let shown = show(&cmd(), &file, &BTreeMap::new());
        let db = shown
            .iter()
            .find(|s| s.setting == "database_url")
            .map(|s| (s.value.clone(), s.source));
        assert_eq!(
            db,
            Some((Some("postgres://u:***@db/s".into()), Source::File))
        );
        assert!(is_secret("SLUICE_API_TOKEN") && !is_secret("SLUICE_WORKER_LEASE"));
    }
}
