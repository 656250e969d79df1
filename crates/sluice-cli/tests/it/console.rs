//! The web console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver) against `sluice server` on Postgres with generated lakes. A researcher signs
//! in, types SQL with a mistake and sees it marked at its line and column, fixes it, submits,
//! watches the job, reads and downloads the results; an operator pauses the lakes' scope and
//! the researcher's job says so; the researcher cancels and reruns it; the operator resumes
//! and it finishes. Another researcher sees neither the job nor the operations. Lake data,
//! error text and reasons carrying HTML are shown as text. Screenshots of the pages are saved
//! to `$SLUICE_SCREENSHOTS` (docs/console/ holds the committed ones).

use super::api::{http, start_server, token_of};
use super::{Proc, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::Command;
use std::time::{Duration, Instant};

/// A chromedriver on a free port; killed with the test.
fn chromedriver() -> (Proc, String) {
    let port = free_port();
    let driver = Proc::quiet(
        Command::new("chromedriver").arg(format!("--port={port}")),
        "chromedriver (Debian package chromium-driver; `make test` installs it)",
    );
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, format!("http://{addr}"))
}

/// A new headless Chromium session (its own profile, so its own cookies).
async fn browser(driver: &str) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000"],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

/// Waits (up to 60 s) until the script `expr` (an expression) is true in the page.
async fn until(c: &Client, what: &str, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = c
            .execute(&format!("return !!({expr});"), vec![])
            .await
            .unwrap_or(serde_json::Value::Bool(false));
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let text = c
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap_or_default();
            panic!("timed out waiting for {what} ({expr}) at {url}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the script expression `expr` in the page.
async fn eval(c: &Client, expr: &str) -> serde_json::Value {
    c.execute(&format!("return {expr};"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

async fn text_of(c: &Client, css: &str) -> String {
    eval(
        c,
        &format!("document.querySelector({css:?})?.textContent ?? ''"),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Clicks the element `css` finds, finding it again if the page replaced it meanwhile.
async fn click(c: &Client, css: &str) {
    for tries_left in (0..5).rev() {
        let el = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match el.click().await {
            Ok(()) => return,
            Err(e) if tries_left > 0 && e.to_string().contains("stale element") => continue,
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let el = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("typing");
}

/// Confirms the console's confirmation dialog (with `reason`, where it asks for one).
async fn confirm(c: &Client, reason: Option<&str>) {
    until(
        c,
        "the confirmation",
        "document.getElementById('confirm').open",
    )
    .await;
    if let Some(r) = reason {
        type_into(c, "#confirm-reason", r).await;
    }
    click(c, "#confirm-yes").await;
    until(
        c,
        "the dialog to close",
        "!document.getElementById('confirm').open",
    )
    .await;
}

async fn sign_in(c: &Client, site: &str, token: &str) {
    c.goto(&format!("{site}/signin"))
        .await
        .expect("sign-in page");
    type_into(c, "#token", token).await;
    click(c, "#signin").await;
    until(c, "the jobs page", "document.getElementById('whoami')").await;
}

/// Saves a screenshot of the page as `name`.png under `$SLUICE_SCREENSHOTS`, or a temporary
/// folder (it is taken either way, so a page that cannot be captured fails here too).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::env::var_os("SLUICE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-console-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot");
}

/// No element any of the page's data could have injected: the markup in the data is text.
async fn nothing_injected(c: &Client) {
    assert_eq!(
        eval(
            c,
            "document.querySelectorAll('main img, main script, main b, dialog img').length"
        )
        .await,
        0,
        "markup from data became elements"
    );
    assert_eq!(eval(c, "window.__xss === undefined").await, true);
}

const PAYLOAD: &str = r#"<img src=x onerror="window.__xss=1">"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researchers_and_operators_use_the_console_in_a_real_browser() {
    let (_store, db) = sluice_store::testing::pg_store().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (results, lakes) = (dir.path().join("results"), dir.path().join("lakes"));
    let addr = format!("127.0.0.1:{}", free_port());
    let site = format!("http://{addr}");
    // Lakes, tokens and the server: blocking work, off the runtime.
    let (server, manifest, alice, bob, ops) = {
        let (db, results, lakes, addr) = (db.clone(), results.clone(), lakes.clone(), addr.clone());
        tokio::task::spawn_blocking(move || {
            let manifest = crate::generate_lakes(&db, &results, &lakes, 6, 300, 29);
            let alice = token_of(&db, &results, "alice", "researcher");
            let bob = token_of(&db, &results, "bob", "researcher");
            let ops = token_of(&db, &results, "olga", "admin");
            let server = start_server(&db, &results, &addr, &["--concurrency", "2"], &[]);
            (server, manifest, alice, bob, ops)
        })
        .await
        .expect("setup")
    };
    let needles = manifest["needles"].as_array().expect("needles").clone();
    let ip = needles
        .iter()
        .find(|n| n["kind"] == "ip")
        .and_then(|n| n["value"].as_str())
        .expect("an IP needle")
        .to_string();
    let (_, text) = http(&addr, "GET", "/v1/lakes", &alice, None);
    let lake_list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("lakes");
    let scope = lake_list[0]["scope"].as_str().expect("scope").to_string();

    let (_driver, driver) = chromedriver();
    let a = browser(&driver).await;

    // Signed out, every page sends the browser to sign in; a wrong token is refused.
    a.goto(&format!("{site}/hunt")).await.expect("hunt page");
    until(&a, "the sign-in page", "location.pathname === '/signin'").await;
    type_into(&a, "#token", &format!("slc_{}", "0".repeat(64))).await;
    click(&a, "#signin").await;
    until(
        &a,
        "a refusal",
        "document.getElementById('signin-error').textContent.includes('unknown or revoked')",
    )
    .await;
    screenshot(&a, "signin").await;
    sign_in(&a, &site, &alice).await;
    // The session cookie is out of the page's reach (HttpOnly), and so is the token.
    assert_eq!(eval(&a, "document.cookie").await, "");
    assert_eq!(
        eval(&a, "localStorage.length + sessionStorage.length").await,
        0
    );
    assert_eq!(text_of(&a, "#whoami").await, "alice (researcher)");
    assert_eq!(
        eval(&a, "!!document.getElementById('nav-ops')").await,
        false
    );

    // A mistake on line 3 is marked at its line and column, with a hint.
    a.goto(&format!("{site}/hunt")).await.expect("hunt page");
    until(
        &a,
        "the lake picker",
        "document.querySelectorAll('#lakes input').length === 6",
    )
    .await;
    let wrong = format!(
        "SELECT src_ip, dst_ip, '{}' AS payload\nFROM events\nWHERE src_ipp = '{ip}'",
        PAYLOAD.replace('\'', "''")
    );
    type_into(&a, "#sql", &wrong).await;
    until(&a, "the mark", "document.querySelector('#marks li.mark')").await;
    assert_eq!(
        (
            eval(&a, "document.querySelector('#marks li.mark').dataset.line").await,
            eval(
                &a,
                "document.querySelector('#marks li.mark').dataset.column"
            )
            .await,
        ),
        (serde_json::json!("3"), serde_json::json!("7")),
        "{}",
        text_of(&a, "#marks").await
    );
    assert!(
        text_of(&a, "#marks .where")
            .await
            .starts_with("Line 3, column 7")
    );
    assert!(text_of(&a, "#marks .hint").await.contains("src_ip"));
    assert_eq!(
        text_of(&a, "#marks pre").await,
        format!("WHERE src_ipp = '{ip}'\n      ^"),
        "the caret under column 7"
    );
    assert_eq!(
        eval(&a, "document.getElementById('submit').disabled").await,
        true
    );
    assert_eq!(
        eval(
            &a,
            "document.getElementById('sql').getAttribute('aria-invalid')"
        )
        .await,
        "true"
    );
    screenshot(&a, "hunt-error").await;
    // Clicking the mark puts the cursor on it.
    click(&a, "#marks li.mark").await;
    assert_eq!(
        eval(&a, "document.getElementById('sql').selectionStart").await,
        serde_json::json!(wrong.find("src_ipp").expect("typo"))
    );

    // Fixed: the plan (every lake, the estimate, the ETA), then submitted.
    type_into(&a, "#sql", &wrong.replace("src_ipp", "src_ip")).await;
    until(&a, "a valid plan", "document.getElementById('plan-ok')").await;
    let plan = text_of(&a, "#plan-ok").await;
    assert!(
        plan.contains("6 lakes") && plan.contains("provider calls") && plan.contains("ETA"),
        "{plan}"
    );
    assert_eq!(
        eval(&a, "document.getElementById('marks').children.length").await,
        0
    );
    screenshot(&a, "hunt-valid").await;
    click(&a, "#submit").await;
    until(
        &a,
        "the job page",
        "/^\\/jobs\\/[0-9]+$/.test(location.pathname)",
    )
    .await;
    let path = a.current_url().await.expect("url").path().to_string();
    let first: i64 = path.trim_start_matches("/jobs/").parse().expect("job id");

    // Progress until it succeeds; then the results, each row's markup shown as text.
    until(
        &a,
        "success",
        "document.querySelector('#job-title [data-state=succeeded]')",
    )
    .await;
    let (_, text) = http(&addr, "GET", &format!("/v1/jobs/{first}"), &alice, None);
    let job: serde_json::Value = serde_json::from_str(&text).expect("job");
    let found = job["rows_found"].as_i64().expect("rows");
    assert!(found > 0, "{job}");
    until(
        &a,
        "the result rows",
        &format!(
            "document.querySelectorAll('#result-rows tbody tr').length === {}",
            found.min(50)
        ),
    )
    .await;
    assert_eq!(text_of(&a, "#rows-found").await, found.to_string());
    assert_eq!(text_of(&a, "#progress-text").await, "6 of 6 done");
    let payloads = eval(
        &a,
        "[...document.querySelectorAll('#result-rows tbody tr')].map(r => r.children[[...document.querySelectorAll('#result-rows th')].findIndex(t => t.textContent === 'payload')].textContent)",
    )
    .await;
    let payloads = payloads.as_array().expect("cells").clone();
    assert!(
        !payloads.is_empty() && payloads.iter().all(|p| p == PAYLOAD),
        "{payloads:?}"
    );
    nothing_injected(&a).await;
    until(
        &a,
        "the timeline",
        "document.querySelectorAll('#timeline tbody tr').length > 6",
    )
    .await;
    screenshot(&a, "job").await;
    // The download links read the same rows with the session.
    let csv = a
        .execute_async(
            "const done = arguments[0]; fetch(document.getElementById('download-csv').href).then(r => r.text()).then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("csv");
    let csv = csv.as_str().unwrap_or_default();
    assert!(
        csv.lines()
            .next()
            .is_some_and(|h| h.contains("src_ip") && h.contains("payload"))
            && csv.contains(&ip),
        "{csv}"
    );
    assert_eq!(csv.lines().count() as i64, found + 1, "{csv}");
    // A change without the session's CSRF token is refused, even from the page itself.
    let refused = a
        .execute_async(
            &format!("const done = arguments[0]; fetch('/v1/jobs/{first}/retry', {{method: 'POST'}}).then(r => done(r.status), e => done(String(e)));"),
            vec![],
        )
        .await
        .expect("fetch");
    assert_eq!(refused, 403);

    // An operator (an admin token here: operators read, admins change) pauses the lakes' scope.
    let o = browser(&driver).await;
    sign_in(&o, &site, &ops).await;
    o.goto(&format!("{site}/ops")).await.expect("ops page");
    until(
        &o,
        "the scopes",
        &format!("document.querySelector('#scopes tr[data-scope=\"{scope}\"]')"),
    )
    .await;
    type_into(&o, "#pause-target", &format!("scope:{scope}")).await;
    type_into(
        &o,
        "#pause-reason",
        &format!("provider maintenance {PAYLOAD}"),
    )
    .await;
    click(&o, "#pause").await;
    confirm(&o, None).await;
    until(
        &o,
        "the pause",
        &format!("document.querySelector('#pauses tr[data-pause=\"scope:{scope}\"]')"),
    )
    .await;
    nothing_injected(&o).await;
    screenshot(&o, "ops").await;

    // The researcher's next hunt (indicators this time) waits, and says why.
    a.goto(&format!("{site}/hunt")).await.expect("hunt page");
    click(&a, "#tab-ioc").await;
    type_into(&a, "#ips", &ip).await;
    until(&a, "a valid plan", "document.getElementById('plan-ok')").await;
    click(&a, "#submit").await;
    until(
        &a,
        "the job page",
        &format!(
            "/^\\/jobs\\/[0-9]+$/.test(location.pathname) && location.pathname !== '/jobs/{first}'"
        ),
    )
    .await;
    until(
        &a,
        "the wait",
        "document.querySelector('#waits li')?.textContent.includes('paused')",
    )
    .await;
    assert!(
        text_of(&a, "#waits").await.contains(PAYLOAD),
        "the reason, as text"
    );
    nothing_injected(&a).await;
    let second = a
        .current_url()
        .await
        .expect("url")
        .path()
        .trim_start_matches("/jobs/")
        .to_string();
    // The operator sees it on the job too.
    o.goto(&format!("{site}/jobs/{second}"))
        .await
        .expect("job page");
    until(
        &o,
        "the wait",
        "document.querySelector('#waits li')?.textContent.includes('paused')",
    )
    .await;

    // Cancelled with a reason full of markup, then run again.
    click(&a, "#cancel").await;
    confirm(
        &a,
        Some(r#"wrong range <img src=x onerror="window.__xss=2">"#),
    )
    .await;
    until(
        &a,
        "cancelled",
        "document.querySelector('#job-title [data-state=cancelled]')",
    )
    .await;
    assert!(
        text_of(&a, "#job-error")
            .await
            .contains(r#"<img src=x onerror="window.__xss=2">"#)
    );
    nothing_injected(&a).await;
    click(&a, "#rerun").await;
    confirm(&a, None).await;
    until(
        &a,
        "queued again",
        "document.querySelector('#job-title [data-state=queued], #job-title [data-state=running]')",
    )
    .await;
    until(
        &a,
        "the wait",
        "document.querySelector('#waits li')?.textContent.includes('paused')",
    )
    .await;

    // Resumed by the operator: the job finishes.
    o.goto(&format!("{site}/ops")).await.expect("ops page");
    click(&o, &format!("button[data-resume=\"scope:{scope}\"]")).await;
    confirm(&o, None).await;
    until(&o, "no pause", "document.querySelector('#pauses td.muted')").await;
    until(
        &a,
        "success",
        "document.querySelector('#job-title [data-state=succeeded]')",
    )
    .await;
    assert_eq!(text_of(&a, "#progress-text").await, "6 of 6 done");

    // Another researcher sees neither alice's jobs nor the operations.
    let b = browser(&driver).await;
    sign_in(&b, &site, &bob).await;
    until(
        &b,
        "the job list",
        "document.body.innerText.includes('No jobs yet')",
    )
    .await;
    assert_eq!(
        eval(&b, "document.querySelectorAll('#jobs tbody tr').length").await,
        0
    );
    assert_eq!(
        eval(&b, "!!document.getElementById('nav-ops')").await,
        false
    );
    b.goto(&format!("{site}/jobs/{first}"))
        .await
        .expect("job page");
    until(&b, "not found", "document.getElementById('not-found')").await;
    b.goto(&format!("{site}/ops")).await.expect("ops page");
    until(&b, "refused", "document.getElementById('ops-denied')").await;
    assert_eq!(
        eval(&b, "document.querySelectorAll('main button').length").await,
        0
    );

    // Her recurring hunt is on her jobs page; she pauses and resumes it there.
    let schedule = serde_json::json!({
        "name": "nightly-<b>ips</b>", "cron": "0 3 * * *",
        "submit": {"hunt": {"kind": "ioc", "ips": [ip]}},
    });
    let (status, text) = http(
        &addr,
        "POST",
        "/v1/schedules",
        &alice,
        Some(&schedule.to_string()),
    );
    assert_eq!(status, 400, "a name is letters, digits and -_.: {text}");
    let schedule = serde_json::json!({
        "name": "nightly-ips", "cron": "0 3 * * *",
        "submit": {"hunt": {"kind": "ioc", "ips": [ip]}},
    });
    let (status, text) = http(
        &addr,
        "POST",
        "/v1/schedules",
        &alice,
        Some(&schedule.to_string()),
    );
    assert_eq!(status, 201, "{text}");
    let sid = serde_json::from_str::<serde_json::Value>(&text).expect("schedule")["id"]
        .as_i64()
        .expect("id");
    a.goto(&format!("{site}/")).await.expect("jobs page");
    let row = format!("#schedules tr[data-schedule=\"{sid}\"]");
    until(
        &a,
        "the schedule",
        &format!("document.querySelector('{row}')"),
    )
    .await;
    click(&a, &format!("button[data-hold=\"{sid}\"]")).await;
    confirm(&a, None).await;
    until(
        &a,
        "paused",
        &format!("document.querySelector('{row}')?.textContent.includes('paused by alice')"),
    )
    .await;
    click(&a, &format!("button[data-hold=\"{sid}\"]")).await;
    confirm(&a, None).await;
    until(&a, "running again", &format!("document.querySelector('{row}')?.textContent.includes('(cron 0 3 * * *)') && !document.querySelector('{row}').textContent.includes('paused')")).await;
    // Bob sees none of it.
    b.goto(&format!("{site}/")).await.expect("jobs page");
    until(
        &b,
        "the schedules",
        "document.body.innerText.includes('No recurring hunts')",
    )
    .await;

    // Alice's list has both jobs; signing out ends the session on the server.
    a.goto(&format!("{site}/")).await.expect("jobs page");
    until(
        &a,
        "both jobs",
        "document.querySelectorAll('#jobs tbody tr').length === 2",
    )
    .await;
    screenshot(&a, "jobs").await;
    click(&a, "#signout").await;
    until(&a, "the sign-in page", "location.pathname === '/signin'").await;
    a.goto(&format!("{site}/")).await.expect("jobs page");
    until(&a, "the sign-in page", "location.pathname === '/signin'").await;

    for c in [a, o, b] {
        c.close().await.expect("close");
    }
    tokio::task::spawn_blocking(move || super::api::stop_server(server))
        .await
        .expect("stop");
}
