//! Validation at submit time, before any task exists or any provider call is made: the hunt is
//! compiled, parsed and planned against the selected lakes' schema. Errors carry line, column
//! and a hint (the nearest column name for an unknown column).

use crate::engine::sql_options;
use crate::hunt::{CompiledHunt, HuntSpec};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest SQL accepted (bytes); a hunt is a query, not a program.
pub const MAX_SQL_BYTES: usize = 256 * 1024;

pub use sluice_core::hunt::HuntError;

fn plain(message: impl Into<String>) -> HuntError {
    HuntError::plain(message)
}

/// `Line: 3, Column: 14` as sqlparser writes positions into its messages.
fn position_in(msg: &str) -> (u64, u64) {
    let num_after = |key: &str| {
        msg.find(key).and_then(|i| {
            let rest = &msg[i + key.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
    };
    (
        num_after("Line:").unwrap_or(0),
        num_after("Column:").unwrap_or(0),
    )
}

/// Line and column just past the end of the text.
fn end_of(sql: &str) -> (u64, u64) {
    let line = sql.lines().count().max(1) as u64;
    let last = sql.lines().last().unwrap_or("");
    (line, last.chars().count() as u64 + 1)
}

/// The first unbalanced bracket outside string literals and comments: `(line, column, opened)`
/// where `opened` is true for a `(` never closed, false for a `)` closing nothing.
fn bracket_problem(sql: &str) -> Option<(u64, u64, bool)> {
    let mut open: Vec<(u64, u64)> = Vec::new();
    let (mut line, mut col) = (1u64, 0u64);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '-' if chars.peek() == Some(&'-') => {
                    // A line comment: skip to the end of the line.
                    for n in chars.by_ref() {
                        if n == '\n' {
                            line += 1;
                            col = 0;
                            break;
                        }
                    }
                }
                '(' => open.push((line, col)),
                ')' if open.pop().is_none() => return Some((line, col, false)),
                _ => {}
            },
        }
    }
    open.first().map(|&(l, c)| (l, c, true))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The column closest to `name`, if any is close enough to be a likely typo.
pub fn nearest_column<'a>(
    name: &str,
    columns: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    columns
        .into_iter()
        .map(|c| (levenshtein(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The unknown column named in a DataFusion "No field named …" message.
fn unknown_column(msg: &str) -> Option<String> {
    let i = msg.find("No field named ")?;
    let rest = &msg[i + "No field named ".len()..];
    let name: String = rest
        .trim_start_matches(['"', '`'])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = name.trim_end_matches('.');
    let name = name.rsplit('.').next().unwrap_or(name).to_string();
    (!name.is_empty()).then_some(name)
}

/// The full table schema: file columns plus partition columns (strings).
pub fn table_schema(file_schema: &Schema, partition_cols: &[String]) -> SchemaRef {
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(
        partition_cols
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, false)),
    );
    Arc::new(Schema::new(fields))
}

/// Deepest nesting of brackets a hunt may have: far more than a person writes, far less than
/// what would exhaust a parser's stack.
pub const MAX_NESTING: usize = 40;
/// Most operators (`a = 1 OR b + 2 > 3 …`) a hunt may have: a chain of them is a level of the
/// plan's expression tree each, which every planning pass walks (some quadratically). A long
/// list is an `IN (…)`.
pub const MAX_OPERATORS: usize = 5_000;
/// Longest a check may take; it evaluates nothing, so only a pathological input gets near it.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Checks at once per process; more wait (up to [`CHECK_TIMEOUT`]) for a turn.
const CHECKS_AT_ONCE: usize = 2;

/// Compiles and checks a hunt against the schema of the lakes it selects. Returns the SQL a
/// task will run, or every problem found.
///
/// The check is bounded: it never evaluates an expression (the analyzer types the plan; the
/// optimizer, which folds constants, does not run), it runs on a thread of its own at a low
/// priority — never on the caller's async runtime —, at most [`CHECKS_AT_ONCE`] at a time,
/// within [`CHECK_TIMEOUT`]; nesting and operator chains are capped before the parser recurses.
pub async fn validate(
    spec: &HuntSpec,
    file_schema: &Schema,
    partition_cols: &[String],
) -> Result<CompiledHunt, Vec<HuntError>> {
    let compiled =
        crate::hunt::compile(spec, partition_cols).map_err(|e| vec![plain(e.to_string())])?;
    let schema = table_schema(file_schema, partition_cols);
    let hunt = compiled.clone();
    // The size cap is the researcher's SQL's; an IOC hunt is bounded by its number of IOCs
    // (`MAX_IOCS`), whatever the size of the SQL it compiles to.
    let max_bytes = matches!(spec, HuntSpec::Sql { .. }).then_some(MAX_SQL_BYTES);
    bounded(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| vec![plain(format!("cannot start a check: {e}"))])?;
        rt.block_on(check_sql(&hunt, &schema, max_bytes))
    })
    .await?;
    Ok(compiled)
}

/// How a refusal for want of time to check begins ([`is_busy`]): the server's state, not the
/// hunt's fault.
const BUSY: &str = "the server is busy checking other hunts";

/// Whether `validate` refused for want of time (try again later), not for the hunt itself.
pub fn is_busy(errors: &[HuntError]) -> bool {
    errors.len() == 1 && errors[0].line == 0 && errors[0].message.starts_with(BUSY)
}

static CHECKS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)));

/// Runs `check` on a thread of its own (a large stack, a low priority), one of
/// [`CHECKS_AT_ONCE`], within [`CHECK_TIMEOUT`] of being asked.
async fn bounded<F>(check: F) -> Result<(), Vec<HuntError>>
where
    F: FnOnce() -> Result<(), Vec<HuntError>> + Send + 'static,
{
    let busy = || {
        vec![plain(format!(
            "{BUSY}: it could not be checked within {}s; try again",
            CHECK_TIMEOUT.as_secs()
        ))]
    };
    let started = tokio::time::Instant::now();
    let permit = tokio::time::timeout(CHECK_TIMEOUT, CHECKS.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-check".into())
        .stack_size(64 << 20)
        .spawn(move || {
            // Below the API and the database work of this process.
            let _ = crate::sys::renice_this_thread(10);
            let r = check();
            drop(permit);
            let _ = tx.send(r);
        })
        .map_err(|e| vec![plain(format!("cannot start a check: {e}"))])?;
    let left = CHECK_TIMEOUT.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(vec![plain("the check of the hunt failed unexpectedly")]),
        Err(_) => Err(vec![plain(format!(
            "{BUSY}, or the hunt is very large: it took longer than {}s to check; try again, or simplify it",
            CHECK_TIMEOUT.as_secs()
        ))]),
    }
}

/// The first place the query nests brackets deeper than [`MAX_NESTING`], or where it passes
/// [`MAX_OPERATORS`] operators (`AND`, `OR`, and each run of `+-*/%|&^=<>!~`), outside strings
/// and comments.
fn too_deep(sql: &str) -> Option<HuntError> {
    const OPERATOR: &str = "+-*/%|&^=<>!~";
    let (mut line, mut col) = (1u64, 0u64);
    let (mut depth, mut ops) = (0usize, 0usize);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let mut word_at = (1u64, 1u64);
    let mut in_operator = false;
    let too_many = |line, column| HuntError {
        line,
        column,
        message: format!("the query has more than {MAX_OPERATORS} operators (AND, OR, =, +, …)"),
        hint: Some("compare a column with a list: col IN ('a', 'b', …)".into()),
    };
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
        }
        if quote.is_none() && (c.is_ascii_alphanumeric() || c == '_') {
            if word.is_empty() {
                word_at = (line, col);
            }
            word.push(c);
        } else if !word.is_empty() {
            if word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or") {
                ops += 1;
                if ops > MAX_OPERATORS {
                    return Some(too_many(word_at.0, word_at.1));
                }
            }
            word.clear();
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => {
                let starts_comment = (c == '-' && chars.peek() == Some(&'-'))
                    || (c == '/' && chars.peek() == Some(&'*'));
                if OPERATOR.contains(c) && !starts_comment {
                    if !in_operator {
                        ops += 1;
                        if ops > MAX_OPERATORS {
                            return Some(too_many(line, col));
                        }
                    }
                    in_operator = true;
                    continue;
                }
                in_operator = false;
                match c {
                    '\'' | '"' => quote = Some(c),
                    '-' => {
                        // A line comment: skip to the end of the line.
                        for n in chars.by_ref() {
                            if n == '\n' {
                                line += 1;
                                col = 0;
                                break;
                            }
                        }
                    }
                    '/' => {
                        // A block comment: skip past its end.
                        chars.next();
                        col += 1;
                        let mut prev = ' ';
                        for n in chars.by_ref() {
                            col += 1;
                            if n == '\n' {
                                line += 1;
                                col = 0;
                            }
                            if prev == '*' && n == '/' {
                                break;
                            }
                            prev = n;
                        }
                    }
                    '(' | '[' => {
                        depth += 1;
                        if depth > MAX_NESTING {
                            return Some(HuntError {
                                line,
                                column: col,
                                message: format!(
                                    "the query nests brackets more than {MAX_NESTING} deep here"
                                ),
                                hint: Some("flatten the expression".into()),
                            });
                        }
                    }
                    ')' | ']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }
    None
}

/// Table references a query expands to when each reference to a `WITH` query counts that
/// query's own references again — what planning walks (DataFusion plans every reference to a
/// `WITH` query anew: a chain that uses the one before twice per level plans 2^n copies).
fn expanded_references(q: &datafusion::sql::sqlparser::ast::Query) -> u64 {
    use datafusion::sql::sqlparser::ast::{ObjectName, Visit, visit_relations};
    use std::ops::ControlFlow;
    fn refs<V: Visit>(v: &V, sizes: &HashMap<String, u64>) -> u64 {
        let mut n = 0u64;
        let _ = visit_relations(v, |name: &ObjectName| {
            let key = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default();
            n = n.saturating_add(sizes.get(&key).copied().unwrap_or(1));
            ControlFlow::<()>::Continue(())
        });
        n
    }
    let mut sizes = HashMap::new();
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            let n = refs(&cte.query, &sizes);
            sizes.insert(cte.alias.name.value.to_ascii_lowercase(), n);
        }
    }
    refs(&q.body, &sizes)
}

/// Most table references a query may expand to ([`expanded_references`]).
pub const MAX_REFERENCES: u64 = 1_000;

/// A session to check hunts in: the default functions, no table functions (`range`,
/// `generate_series`: their arguments are evaluated while planning).
pub(crate) fn check_state(
    config: SessionConfig,
    runtime: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
) -> datafusion::execution::SessionState {
    let mut b = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_table_functions(HashMap::new());
    if let Some(rt) = runtime {
        b = b.with_runtime_env(rt);
    }
    b.build()
}

async fn check_sql(
    hunt: &CompiledHunt,
    schema: &SchemaRef,
    max_bytes: Option<usize>,
) -> Result<(), Vec<HuntError>> {
    let sql = &hunt.sql;
    if sql.trim().is_empty() {
        return Err(vec![plain("the query is empty")]);
    }
    if max_bytes.is_some_and(|m| sql.len() > m) {
        return Err(vec![plain(format!(
            "the query is {} bytes; at most {MAX_SQL_BYTES}",
            sql.len()
        ))]);
    }
    if let Some(e) = too_deep(sql) {
        return Err(vec![e]);
    }
    let statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| {
        let msg = e.to_string();
        let (mut line, mut column) = position_in(&msg);
        if line == 0 && msg.contains("found: EOF") {
            (line, column) = end_of(sql);
        }
        let hint = match bracket_problem(sql) {
            Some((l, c, true)) => Some(format!(
                "the bracket opened at line {l}, column {c} is never closed"
            )),
            Some((l, c, false)) => Some(format!(
                "the bracket at line {l}, column {c} closes nothing"
            )),
            None => None,
        };
        vec![HuntError {
            line,
            column,
            message: msg,
            hint,
        }]
    })?;
    if statements.len() != 1 {
        return Err(vec![plain(format!(
            "expected exactly one SELECT statement, found {}",
            statements.len()
        ))]);
    }
    let Some(statement) = statements.into_iter().next() else {
        return Err(vec![plain("the query is empty")]);
    };
    if !matches!(&statement, Statement::Statement(s) if matches!(s.as_ref(), datafusion::sql::sqlparser::ast::Statement::Query(_)))
    {
        return Err(vec![plain(
            "only SELECT queries are allowed: hunts read, they never write, create or change settings",
        )]);
    }
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.collect_spans = true;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    for (k, v) in &hunt.options {
        config
            .options_mut()
            .set(k, v)
            .map_err(|e| vec![plain(e.to_string())])?;
    }
    let ctx = SessionContext::new_with_state(check_state(config, None));
    let empty =
        MemTable::try_new(schema.clone(), vec![vec![]]).map_err(|e| vec![plain(e.to_string())])?;
    ctx.register_table("events", Arc::new(empty))
        .map_err(|e| vec![plain(e.to_string())])?;
    let state = ctx.state();
    if let Statement::Statement(st) = &statement
        && let datafusion::sql::sqlparser::ast::Statement::Query(q) = st.as_ref()
    {
        let n = expanded_references(q);
        if n > MAX_REFERENCES {
            return Err(vec![HuntError {
                line: 0,
                column: 0,
                message: format!(
                    "the query reads tables {n} times once its WITH queries are expanded, more than {MAX_REFERENCES}"
                ),
                hint: Some(
                    "reference each WITH query once, or join instead of repeating it".into(),
                ),
            }]);
        }
    }
    let plan = state.statement_to_plan(statement).await;
    let plan = plan.and_then(|p| sql_options().verify_plan(&p).map(|_| p));
    // The analyzer (type coercion, function signatures) catches type mismatches. The
    // optimizer would fold constant expressions — evaluate user code — so it does not run
    // here: that happens in a task, under the task's limits.
    let plan = plan.and_then(|p| {
        state
            .analyzer()
            .execute_and_check(p, state.config_options(), |_, _| {})
    });
    if let Err(e) = plan {
        let message = e.strip_backtrace();
        let (mut line, mut column) = position_in(&message);
        if let Some(span) = e.diagnostic().and_then(|d| d.span) {
            (line, column) = (span.start.line, span.start.column);
        }
        let hint = unknown_column(&message).and_then(|c| {
            nearest_column(&c, schema.fields().iter().map(|f| f.name().as_str()))
                .map(|n| format!("did you mean {n}?"))
        });
        let hint = hint.or_else(|| {
            e.diagnostic()
                .and_then(|d| d.helps.first().map(|h| h.message.clone()))
        });
        return Err(vec![HuntError {
            line,
            column,
            message,
            hint,
        }]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::telemetry_schema;
    use crate::hunt::MAX_IOCS;

    async fn check(sql: &str) -> Result<CompiledHunt, Vec<HuntError>> {
        let spec = HuntSpec::Sql {
            sql: sql.into(),
            lakes: Default::default(),
        };
        validate(&spec, &telemetry_schema(), &["dt".to_string()]).await
    }

    #[tokio::test]
    async fn good_queries_pass() {
        for sql in [
            "SELECT * FROM events WHERE src_ip = '1.2.3.4'",
            "select host, count(*) as n\nfrom events\nwhere dt >= '2026-11-20'\ngroup by host\norder by n desc\nlimit 10",
            "SELECT src_ip FROM events WHERE ts > now() - INTERVAL '1 day' AND dst_port IN (22, 3389)",
        ] {
            check(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }

    /// An IOC hunt at its documented size passes (its SQL is far over the SQL size cap),
    /// and one IOC more is refused in IOCs, not in bytes.
    #[tokio::test]
    async fn ioc_hunts_of_ten_thousand_indicators_pass() {
        let hunt = |n: usize| HuntSpec::Ioc {
            ips: (0..n / 4)
                .map(|i| format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255))
                .collect(),
            hashes: (0..n - n / 4).map(|i| format!("{i:064x}")).collect(),
            domains: vec![],
            since: None,
            until: None,
            lakes: Default::default(),
        };
        let ok = validate(&hunt(MAX_IOCS), &telemetry_schema(), &["dt".to_string()])
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(ok.sql.len() > MAX_SQL_BYTES, "{}", ok.sql.len());
        let e = validate(&hunt(MAX_IOCS + 1), &telemetry_schema(), &[])
            .await
            .unwrap_err();
        assert!(
            e[0].message.contains("IOCs in one hunt; at most 10000"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn user_errors_have_position_and_hint() {
        // (sql, line, column, message contains, hint contains)
        let cases: &[(&str, u64, u64, &str, Option<&str>)] = &[
            (
                "SELECT *\nFROM events\nWHERE src_ipp = '1.2.3.4'",
                3,
                7,
                "src_ipp",
                Some("src_ip"),
            ),
            (
                "SELECT dst_prot FROM events",
                1,
                8,
                "dst_prot",
                Some("dst_port"),
            ),
            (
                "SELECT * FROM events\nWHERE (src_ip = '1' OR dst_ip = '2'",
                2,
                36,
                "Expected",
                Some("line 2, column 7 is never closed"),
            ),
            (
                "SELECT * FROM events\nWHERE src_ip = '(' OR dst_ip = '2')",
                2,
                35,
                "",
                Some("line 2, column 35 closes nothing"),
            ),
            ("SELECT * FROM evnts", 1, 15, "evnts", None),
            (
                "SELECT * FROM events WHERE dst_port = 'ssh' + 1",
                0,
                0,
                "",
                None,
            ),
            ("SELEC * FROM events", 1, 1, "SELEC", None),
        ];
        for &(sql, line, column, msg, hint) in cases {
            let errs = check(sql).await.expect_err(sql);
            let e = &errs[0];
            if line > 0 {
                assert_eq!(e.line, line, "{sql}: {e:?}");
            }
            if column > 0 {
                assert_eq!(e.column, column, "{sql}: {e:?}");
            }
            assert!(e.message.contains(msg), "{sql}: {e:?}");
            if let Some(h) = hint {
                assert!(e.hint.as_deref().unwrap_or("").contains(h), "{sql}: {e:?}");
            }
        }
    }

    #[tokio::test]
    async fn hostile_statements_are_rejected() {
        for sql in [
            "COPY (SELECT * FROM events) TO '/tmp/x'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc'",
            "SET datafusion.runtime.memory_limit = '100G'",
            "SELECT * FROM '/etc/passwd'",
            "SELECT 1; SELECT 2",
            "INSERT INTO events VALUES (1)",
            "DROP TABLE events",
            "CREATE TABLE t AS SELECT * FROM events",
            "",
            "   ",
            "EXPLAIN SELECT * FROM events",
        ] {
            let errs = check(sql).await.expect_err(sql);
            assert!(!errs.is_empty(), "{sql}");
        }
        let huge = format!(
            "SELECT * FROM events WHERE src_ip IN ({})",
            vec!["'1.1.1.1'"; 40_000].join(",")
        );
        let errs = check(&huge).await.expect_err("huge");
        assert!(errs[0].message.contains("at most"), "{errs:?}");
    }

    #[tokio::test]
    async fn nesting_and_operator_chains_are_capped_with_a_position() {
        // (sql, line, column, message contains); None: the query passes these caps.
        let deep = format!(
            "SELECT * FROM events\nWHERE {}1 = 1{}",
            "(".repeat(41),
            ")".repeat(41)
        );
        let ok_depth = format!(
            "SELECT * FROM events WHERE {}1 = 1{}",
            "(".repeat(40),
            ")".repeat(40)
        );
        let in_string = format!("SELECT * FROM events WHERE domain = '{}'", "(".repeat(500));
        let in_comment = format!("SELECT * FROM events -- {}\nWHERE 1 = 1", "(".repeat(500));
        let chain = |n: usize| {
            format!(
                "SELECT * FROM events WHERE {}",
                (0..n)
                    .map(|i| format!("dst_port = {i}"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            )
        };
        let in_block_comment = format!(
            "SELECT * FROM events /* {} */ WHERE 1 = 1",
            "( OR ".repeat(MAX_OPERATORS)
        );
        let words_in_strings = format!(
            "SELECT * FROM events WHERE domain = '{}'",
            "and or ".repeat(MAX_OPERATORS)
        );
        type Want = Option<(u64, u64, &'static str)>;
        let cases: Vec<(String, Want)> = vec![
            (deep, Some((2, 47, "more than 40 deep"))),
            (ok_depth, None),
            (in_string, None),
            (in_comment, None),
            // n terms: n `=` and n - 1 `OR`.
            (chain(MAX_OPERATORS / 2), None),
            (
                chain(MAX_OPERATORS / 2 + 1),
                Some((1, 0, "more than 5000 operators")),
            ),
            (in_block_comment, None),
            (
                format!("SELECT 1{}", " + 1".repeat(MAX_OPERATORS + 1)),
                Some((1, 0, "more than 5000 operators")),
            ),
            (
                format!("SELECT 1 FROM events WHERE user = '{}'", "+".repeat(20_000)),
                None,
            ),
            (words_in_strings, None),
        ];
        for (sql, want) in cases {
            let got = too_deep(&sql);
            match (want, &got) {
                (None, None) => {}
                (Some((line, col, msg)), Some(e)) => {
                    assert_eq!(e.line, line, "{e:?}");
                    if col > 0 {
                        assert_eq!(e.column, col, "{e:?}");
                    } else {
                        assert!(e.column > 0, "{e:?}");
                    }
                    assert!(e.message.contains(msg), "{e:?}");
                }
                _ => panic!("{}: {got:?}", &sql[..sql.len().min(80)]),
            }
        }
        // Through `validate`: refused with the position, not a stack overflow.
        let errs = check(&format!(
            "SELECT * FROM events WHERE {}1{}",
            "(".repeat(5000),
            ")".repeat(5000)
        ))
        .await
        .expect_err("deep");
        assert!(
            errs[0].message.contains("deep") && errs[0].line == 1,
            "{errs:?}"
        );
    }

    #[tokio::test]
    async fn a_query_that_expands_exponentially_or_calls_table_functions_is_refused() {
        // Each WITH query uses the one before twice: 2^24 copies of the first when walked.
        let mut sql = String::from("WITH t0 AS (SELECT src_ip FROM events)");
        for i in 1..=24 {
            sql.push_str(&format!(
                ", t{i} AS (SELECT * FROM t{p} UNION ALL SELECT * FROM t{p})",
                p = i - 1
            ));
        }
        sql.push_str(" SELECT count(*) FROM t24");
        let t = std::time::Instant::now();
        let errs = check(&sql).await.expect_err("exponential");
        assert!(errs[0].message.contains("16777216 times"), "{errs:?}");
        assert!(t.elapsed() < CHECK_TIMEOUT, "{:?}", t.elapsed());
        // A few levels are fine.
        let small = "WITH a AS (SELECT src_ip FROM events), b AS (SELECT * FROM a UNION ALL SELECT * FROM a) SELECT * FROM b";
        check(small).await.unwrap_or_else(|e| panic!("{e:?}"));
        // Table functions evaluate their arguments while planning: not in hunts.
        for sql in [
            "SELECT * FROM generate_series(1, length(repeat('x', 2147483647)))",
            "SELECT * FROM range(1, 10)",
        ] {
            let errs = check(sql).await.expect_err(sql);
            assert!(errs[0].message.contains("not found"), "{sql}: {errs:?}");
        }
    }

    #[tokio::test]
    async fn checks_never_evaluate_user_expressions() {
        // Folding this constant would take minutes and gigabytes; a check only types it.
        let t = std::time::Instant::now();
        let r = check(
            "SELECT * FROM events WHERE levenshtein(repeat('a', 100000), repeat('b', 100000)) > 0 \
             AND length(repeat(repeat('x', 1000000), 1000000)) > 0",
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        // Not a timing assertion: the evaluation alone would be hours in a debug build.
        assert!(t.elapsed() < CHECK_TIMEOUT, "{:?}", t.elapsed());
    }

    #[test]
    fn nearest_column_is_a_close_typo_only() {
        let cols = ["src_ip", "dst_ip", "domain", "file_sha256", "user"];
        assert_eq!(nearest_column("src_ipp", cols), Some("src_ip"));
        assert_eq!(nearest_column("DOMIAN", cols), Some("domain"));
        assert_eq!(nearest_column("completely_else", cols), None);
    }
}
