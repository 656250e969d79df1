//! What every verb is handed: where the API or the database is, and how to print. A verb asks
//! for the API client or for the database; it never decides between them itself, and a verb
//! that needs the database is refused under `--url` instead of quietly opening the default
//! one. Text or JSON is chosen here once: [`Ctx::show`] renders a value's text with its
//! [`Render`], [`Ctx::show_as`] with a function the verb names.

use crate::client::Client;
use anyhow::{Context, Result};
use sluice_engine::{Engine, EngineConfig};
use sluice_store::{ConnectOptions, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A value's text form (its JSON form is its `Serialize`).
pub trait Render {
    fn render(&self, out: &mut String);
}

/// `writeln!` into a `String`, which cannot fail.
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use line;

/// The settings of the global flags a verb runs with.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub database_url: String,
    pub results_dir: PathBuf,
    pub results_url: Option<String>,
    pub connect_timeout: Duration,
    pub url: Option<String>,
    pub token: Option<String>,
    pub output: Output,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Prints `v` as the output asks: pretty JSON, or its text form.
    pub fn show<T: Render + serde::Serialize + ?Sized>(&self, v: &T) -> Result<()> {
        self.show_as(v, T::render)
    }

    /// Prints `v` as the output asks: pretty JSON, or the text `text` writes. For a value
    /// whose text form depends on the verb that shows it (a job cancelled, a job moved).
    pub fn show_as<T: serde::Serialize + ?Sized>(
        &self,
        v: &T,
        text: impl Fn(&T, &mut String),
    ) -> Result<()> {
        print!("{}", self.format(v, text)?);
        Ok(())
    }

    fn format<T: serde::Serialize + ?Sized>(
        &self,
        v: &T,
        text: impl Fn(&T, &mut String),
    ) -> Result<String> {
        Ok(match self.output {
            Output::Json => format!("{}\n", serde_json::to_string_pretty(v)?),
            Output::Text => {
                let mut s = String::new();
                text(v, &mut s);
                s
            }
        })
    }

    /// The API: the server at `--url` with `--token`, or the API run in this process on the
    /// database as `owner` (with the admin role: whoever can open the database can change it
    /// anyway).
    pub async fn api(&self, owner: &str) -> Result<Client> {
        if let Some(url) = &self.url {
            return Client::remote(url, self.token.clone(), self.connect_timeout);
        }
        let store = open_store(&self.database_url, self.connect_timeout).await?;
        let engine = self.engine()?;
        let api = sluice_hunt::api(store, engine, sluice_api::ApiConfig::default());
        Ok(Client::local(
            api,
            sluice_api::Caller {
                owner: owner.to_string(),
                role: sluice_store::Role::Admin,
                lakes: sluice_store::LakeAccess::all(),
                token: None,
            },
        ))
    }

    /// The database, for `verb`, which works on it directly: refused when `--url` names a
    /// server, so that the default database is never opened by mistake.
    pub async fn store(&self, verb: &str) -> Result<Arc<dyn Store>> {
        if let Some(url) = &self.url {
            anyhow::bail!(
                "`sluice {verb}` works on the database, not through the API at {url}: give --database-url and drop --url (and SLUICE_URL)"
            );
        }
        open_store(&self.database_url, self.connect_timeout).await
    }

    /// Where results are kept (and staged).
    pub fn engine_config(&self) -> EngineConfig {
        let mut cfg = EngineConfig::new(&self.results_dir);
        cfg.results_url = self.results_url.clone();
        cfg
    }

    /// A query engine writing to and reading from the results store.
    pub fn engine(&self) -> Result<Arc<Engine>> {
        engine(self.engine_config())
    }
}

pub fn engine(cfg: EngineConfig) -> Result<Arc<Engine>> {
    let e = Engine::new(cfg).context("starting the query engine")?;
    Ok(Arc::new(e))
}

pub(crate) async fn open_store(url: &str, connect_timeout: Duration) -> Result<Arc<dyn Store>> {
    let opts = ConnectOptions {
        max_connections: 16,
        application_name: Some("sluice".into()),
        connect_timeout: Some(connect_timeout),
        ..Default::default()
    };
    sluice_store::connect(url, opts)
        .await
        .with_context(|| format!("opening database {}", sluice_store::redact_url(url)))
}

/// `95s` → `1m35s`, `4000s` → `1h06m` (seconds as the API gives them).
pub fn human_secs(s: f64) -> String {
    sluice_core::human_duration(Duration::from_secs(s.max(0.0).ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct V {
        n: u32,
    }

    impl Render for V {
        fn render(&self, out: &mut String) {
            line!(out, "n is {}", self.n);
        }
    }

    #[test]
    fn one_value_renders_as_text_or_pretty_json() {
        let ctx = |output| Ctx {
            database_url: String::new(),
            results_dir: PathBuf::new(),
            results_url: None,
            connect_timeout: Duration::ZERO,
            url: None,
            token: None,
            output,
        };
        let v = V { n: 3 };
        assert_eq!(ctx(Output::Text).format(&v, V::render).unwrap(), "n is 3\n");
        assert_eq!(
            ctx(Output::Json).format(&v, V::render).unwrap(),
            "{\n  \"n\": 3\n}\n"
        );
    }
}
