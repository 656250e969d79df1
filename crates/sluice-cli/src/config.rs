//! Settings from flags, environment (`SLUICE_…`) and an optional TOML file, in that order of
//! precedence. The file names settings as the environment does, without `SLUICE_`:
//! `worker.concurrency = 32` (or `worker_concurrency = 32` at the top) is
//! `SLUICE_WORKER_CONCURRENCY`. Its values become the defaults of the arguments that read
//! those variables ([`with_file_defaults`]), so clap layers them itself — flag, then
//! environment, then file, then built-in default — with one parser, one set of checks and one
//! name per setting, and reports where each value came from (`ValueSource`). Nothing is
//! written to the process environment. Unknown names are refused.

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

/// Reads the file (if any): the settings it supplies that the environment does not set.
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
    let applied = settings
        .into_iter()
        .filter(|(env, _)| std::env::var_os(env).is_none())
        .collect();
    Ok(FileSettings {
        path: Some(path),
        applied,
    })
}

/// `cmd` with the file's settings as the defaults of the arguments that read their variables,
/// in every subcommand.
pub fn with_file_defaults(cmd: clap::Command, file: &FileSettings) -> clap::Command {
    if file.applied.is_empty() {
        return cmd;
    }
    let ids: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let v = file.applied.get(&env)?;
            Some((a.get_id().clone(), v.clone()))
        })
        .collect();
    let mut cmd = ids
        .into_iter()
        .fold(cmd, |c, (id, v)| c.mut_arg(id, |a| a.default_value(v)));
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| with_file_defaults(s, file));
    }
    cmd
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
    sluice_core::secrets::is_secret_key(env.trim_start_matches("SLUICE_"))
}

/// What `sluice config show` prints: every setting (the JSON), and the file.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct Shown {
    pub settings: Vec<Setting>,
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// The settings of this run: the file's and the global flags given on the command line.
#[derive(Debug, Default)]
pub struct Settings {
    pub file: FileSettings,
    pub flags: BTreeMap<String, String>,
}

impl Settings {
    pub fn shown(&self) -> Shown {
        use clap::CommandFactory;
        Shown {
            settings: show(&crate::cli::Cli::command(), &self.file, &self.flags),
            file: self.file.path.clone(),
        }
    }
}

/// One setting as `sluice config show` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Setting {
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
) -> Vec<Setting> {
    known_env(cmd)
        .into_iter()
        .filter(|(env, _)| env != "SLUICE_CONFIG")
        .map(|(env, default)| {
            let (value, source) = if let Some(v) = flags.get(&env) {
                (Some(v.clone()), Source::Flag)
            } else if let Ok(v) = std::env::var(&env) {
                (Some(v), Source::Env)
            } else if let Some(v) = file.applied.get(&env) {
                (Some(v.clone()), Source::File)
            } else {
                (default, Source::Default)
            };
            let value = value.map(|v| {
                if v.contains("://") {
                    sluice_store::redact_url(&v)
                } else if is_secret(&env) {
                    "***".into()
                } else {
                    v
                }
            });
            Setting {
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

    #[test]
    fn the_file_is_the_default_layer_under_flags_in_every_subcommand() {
        let file = FileSettings {
            path: None,
            applied: [
                (
                    "SLUICE_DATABASE_URL".to_string(),
                    "sqlite://file.db".to_string(),
                ),
                ("SLUICE_WORKER_CONCURRENCY".to_string(), "7".to_string()),
            ]
            .into(),
        };
        let get = |args: &[&str]| {
            let m = with_file_defaults(cmd(), &file).get_matches_from(args);
            let db = m.get_one::<String>("database_url").cloned();
            let src = m.value_source("database_url");
            let n = m
                .subcommand_matches("worker")
                .and_then(|w| w.get_one::<String>("concurrency").cloned());
            (db, src, n)
        };
        use clap::parser::ValueSource::*;
        assert_eq!(
            get(&["t", "worker"]),
            (
                Some("sqlite://file.db".into()),
                Some(DefaultValue),
                Some("7".into())
            )
        );
        assert_eq!(
            get(&[
                "t",
                "--database-url",
                "sqlite://flag.db",
                "worker",
                "--concurrency",
                "3"
            ]),
            (
                Some("sqlite://flag.db".into()),
                Some(CommandLine),
                Some("3".into())
            )
        );
        let none = FileSettings::default();
        let m = with_file_defaults(cmd(), &none).get_matches_from(["t"]);
        assert_eq!(
            m.get_one::<String>("database_url").map(String::as_str),
            Some("sqlite://sluice.db")
        );
    }
}
