//! The findings console end to end: a real daemon serving `/ui` and
//! `/api` on its own loopback listener, a real HTTP client. Access by
//! token (bearer, or the login form's session cookie), pagination and
//! filters, a finding in full, hostile strings escaped, security headers.

use std::process::Command;

use super::daemon::{Daemon, exec_line, free_port};
use super::*;

const TOKEN: &str = "console-token-0123456789";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Console {
    _tmp: tempfile::TempDir,
    d: Daemon,
    base: String,
}

/// A daemon with the console on, fed five exec findings (two by a user
/// whose name is a script) and a configmap read.
fn start() -> Console {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("audit.log");
    let token = dir.join("ui.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let key = dir.join("evidence.pem");
    kaudit(&["keygen", "--out", &path_str(&key)], b"");
    let (ops, ui) = (free_port(), free_port());
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\", ui: {{enabled: true, listen: \"127.0.0.1:{ui}\", token_file: {}, sign_key: {}}}}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\n",
            path_str(&dir.join("k.db")),
            path_str(&token),
            path_str(&key),
            path_str(&log)
        ),
    )
    .unwrap();
    let mut lines: Vec<String> = (0..3).map(|i| exec_line(&format!("u{i}"))).collect();
    for i in 3..5 {
        lines.push(
            exec_line(&format!("u{i}"))
                .replace(
                    "\"username\":\"alice@example.com\"",
                    "\"username\":\"<script>alert(1)</script>\"",
                )
                .replace(
                    "\"name\":\"web-1\"",
                    "\"name\":\"<img src=x onerror=alert(2)>\"",
                ),
        );
    }
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let d = Daemon::start(&cfg, ops);
    let base = format!("http://127.0.0.1:{ui}");
    let c = client();
    d.wait_for(
        || {
            c.get(format!("{base}/api/findings?rule=pod-exec"))
                .bearer_auth(TOKEN)
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|v| v["findings"].as_array().is_some_and(|a| a.len() == 5))
        },
        "five findings through the API",
    );
    Console { _tmp: tmp, d, base }
}

#[test]
fn the_api_takes_a_bearer_token_and_pages_newest_first() {
    let c = start();
    let http = client();
    let r = http.get(format!("{}/api/findings", c.base)).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http
        .get(format!("{}/api/findings", c.base))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Pages of two, newest first, each finding once.
    let mut seen = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut url = format!("{}/api/findings?rule=pod-exec&limit=2", c.base);
        if let Some(b) = before {
            url += &format!("&before={b}");
        }
        let v: serde_json::Value = http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let rows = v["findings"].as_array().unwrap();
        assert!(rows.len() <= 2);
        for r in rows {
            seen.push((
                r["seq"].as_u64().unwrap(),
                r["audit_id"].clone(),
                r["id"].as_str().unwrap().to_owned(),
            ));
        }
        match v["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {seen:?}"
    );

    // Filters: another rule, a severity, a user.
    let v: serde_json::Value = http
        .get(format!(
            "{}/api/findings?user=alice@example.com&rule=pod-exec",
            c.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 3);
    let r = http
        .get(format!("{}/api/findings?severity=extreme", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // One finding in full, with its evidence and the same user's others.
    let id = &seen[4].2;
    let v: serde_json::Value = http
        .get(format!("{}/api/findings/{id}", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["finding"]["id"], id.as_str());
    assert_eq!(v["finding"]["evidence"]["objectRef"]["subresource"], "exec");
    assert!(v["related"].as_array().unwrap().len() >= 2, "{v}");
    let r = http
        .get(format!("{}/api/findings/nope", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    for path in ["/api/coverage?since=2026-11-01", "/api/deliveries"] {
        let r = http
            .get(format!("{}{path}", c.base))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Coverage lists hours one by one: its range is bounded.
    let r = http
        .get(format!(
            "{}/api/coverage?since=2000-01-01&until=2100-01-01",
            c.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let cov: serde_json::Value = http
        .get(format!("{}/api/coverage?since=2026-11-01", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        cov["clusters"]["prod"]["hours_with_events"]
            .as_u64()
            .unwrap()
            >= 1,
        "{cov}"
    );
    let api: serde_json::Value = http
        .get(format!("{}/api/openapi.json", c.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    for p in [
        "/api/findings",
        "/api/findings/{id}",
        "/api/coverage",
        "/api/deliveries",
        "/api/findings/{id}/triage",
        "/api/export",
    ] {
        assert!(api["paths"][p].is_object(), "{p}");
    }
    c.d.stop();
}

#[test]
fn the_pages_sign_in_once_and_escape_what_they_show() {
    let c = start();
    let http = client();
    let r = http.get(format!("{}/ui", c.base)).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    // Security headers on every answer, the login page included.
    let r = http.get(format!("{}/ui/login", c.base)).send().unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe") && csp.contains("script-src 'self';"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    let r = http
        .post(format!("{}/ui/login", c.base))
        .form(&[("name", "mallory"), ("token", "not-the-token")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(format!("{}/ui/login", c.base))
        .form(&[("name", "Alice Analyst"), ("token", TOKEN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();

    let page = http
        .get(format!("{}/ui?rule=pod-exec", c.base))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().unwrap();
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    // The list links to each finding; the finding's page shows its evidence.
    let link = body
        .split("href=\"/ui/findings/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let detail = http
        .get(format!("{}/ui/findings/{link}", c.base))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        detail.contains("Evidence") && detail.contains("&quot;subresource&quot;: &quot;exec&quot;"),
        "{detail}"
    );
    assert!(!detail.contains("<script>alert"), "{detail}");
    // Coverage hour by hour.
    let cov = http
        .get(format!(
            "{}/ui/coverage?since=2026-11-03T08:00:00Z&until=2026-11-03T12:00:00Z",
            c.base
        ))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(cov.contains("<h2>prod</h2>"), "{cov}");
    assert!(cov.contains("<td>2026-11-03T10:00:00Z</td><td>"), "{cov}");
    // By default, the last two days: a cluster seen before and silent since
    // shows as silent.
    let recent = http
        .get(format!("{}/ui/coverage", c.base))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        recent.contains("<td>prod</td><td>0</td><td class=\"high\">"),
        "{recent}"
    );
    for p in ["/ui/coverage", "/ui/deliveries"] {
        let r = http
            .get(format!("{}{p}", c.base))
            .header("Cookie", &session)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    // The pages' forms carry the session's CSRF token; a change without
    // it is refused, even with the cookie.
    let csrf = detail
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 32, "{csrf}");
    let r = http
        .post(format!("{}/ui/findings/{link}/triage", c.base))
        .header("Cookie", &session)
        .form(&[("action", "acknowledge"), ("comment", "no token")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Triage from the page: recorded under the name given at sign-in.
    let r = http
        .post(format!("{}/ui/findings/{link}/triage", c.base))
        .header("Cookie", &session)
        .form(&[
            ("action", "false_positive"),
            ("comment", "<b>the CI runner</b>"),
            ("csrf", &csrf),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let detail = http
        .get(format!("{}/ui/findings/{link}", c.base))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        detail.contains("Alice Analyst") && detail.contains("false_positive"),
        "{detail}"
    );
    assert!(
        detail.contains("&lt;b&gt;the CI runner&lt;/b&gt;"),
        "{detail}"
    );
    // A change asked for by another site is refused, even with the cookie.
    let r = http
        .post(format!("{}/ui/findings/{link}/triage", c.base))
        .header("Cookie", &session)
        .header("Origin", "https://evil.example")
        .form(&[("action", "acknowledge"), ("comment", "x"), ("csrf", &csrf)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Signed out: the session no longer lets in.
    let r = http
        .post(format!("{}/ui/logout", c.base))
        .header("Cookie", &session)
        .form(&[("csrf", &csrf)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .get(format!("{}/ui", c.base))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    c.d.stop();
}

#[test]
fn a_console_reachable_from_the_network_needs_tls_and_a_way_in() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("k.yaml");
    std::fs::write(
        &cfg,
        "storage: {path: /tmp/k.db}\nserver: {ui: {enabled: true, listen: \"0.0.0.0:9443\"}}\nsources: [{type: stdin}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["check", "--config", &path_str(&cfg)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.ui is enabled without a way in"),
        "{err}"
    );
    assert!(err.contains("not a loopback address"), "{err}");
}

/// A minimal W3C WebDriver client over chromedriver (Debian's chromium and
/// chromium-driver, installed by scripts/test.sh).
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(downloads: &Path) -> Browser {
        assert!(
            Path::new("/usr/bin/chromedriver").exists(),
            "chromedriver is not installed: scripts/test.sh installs chromium and chromium-driver"
        );
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        let start = std::time::Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(start.elapsed().as_secs() < 30, "chromedriver did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let v: serde_json::Value = http
            .post(format!("{base}/session"))
            .json(&serde_json::json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                    "prefs": {
                        "download.default_directory": path_str(downloads),
                        "download.prompt_for_download": false
                    }
                }
            }}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {v}"))
            .to_owned();
        let b = Browser {
            driver,
            base,
            session,
            http,
        };
        // Headless downloads go to the directory asked for.
        let url = format!("{}/session/{}/chromium/send_command", b.base, b.session);
        let _ = b
            .http
            .post(url)
            .json(&serde_json::json!({"cmd": "Page.setDownloadBehavior",
                "params": {"behavior": "allow", "downloadPath": path_str(downloads)}}))
            .send();
        b
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), url);
        if method == reqwest::Method::POST {
            req = req.json(&body);
        }
        let v: serde_json::Value = req.send().unwrap().json().unwrap();
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({"url": url}),
        );
    }

    fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", serde_json::Value::Null)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            reqwest::Method::POST,
            "/elements",
            serde_json::json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
        .collect()
    }

    fn find(&self, css: &str) -> String {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Waits (up to 15 s) until `css` matches on the page: a click that
    /// submits a form returns before the next page has loaded.
    fn wait_for(&self, css: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            if let Some(el) = self.find_all(css).into_iter().next() {
                return el;
            }
            assert!(start.elapsed().as_secs() < 15, "no {css} on {}", self.url());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn text(&self, el: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/text"),
            serde_json::Value::Null,
        )
        .as_str()
        .unwrap()
        .to_owned()
    }

    fn type_into(&self, el: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            serde_json::json!({"text": text}),
        );
    }

    /// Saves a PNG of the page as a test artifact (under the target
    /// directory's test scratch space) and checks it is one.
    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", serde_json::Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    fn click(&self, el: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            serde_json::json!({}),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// In a real (headless) browser: sign in, the list loads, a filter narrows
/// it, a finding opens with its evidence, attacker strings stay text (an
/// executed script would leave an alert open and fail the next command).
#[test]
fn a_real_browser_signs_in_filters_and_opens_a_finding() {
    let c = start();
    let downloads = c._tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = Browser::start(&downloads);
    b.go(&format!("{}/ui", c.base));
    assert!(b.url().ends_with("/ui/login"), "{}", b.url());
    b.type_into(&b.find("input[name=name]"), "Carol SOC");
    let input = b.find("input[name=token]");
    b.type_into(&input, TOKEN);
    b.click(&b.find("form[action='/ui/login'] button"));
    b.wait_for("form.filters");
    assert!(
        b.url().ends_with("/ui"),
        "{}: {}",
        b.url(),
        b.text(&b.find("main"))
    );
    let all = b.find_all("tbody tr").len();
    assert!(all > 5, "{all} rows");
    // New findings appear on the open list by themselves.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(c._tmp.path().join("audit.log"))
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{}\n", exec_line("live-1")).as_bytes()).unwrap();
    let fresh = b.wait_for("tbody tr.new");
    assert!(
        b.text(&fresh).contains("alice@example.com"),
        "{}",
        b.text(&fresh)
    );
    let page = b.text(&b.find("table"));
    assert!(page.contains("<script>alert(1)</script>"), "{page}");
    b.screenshot("list");

    let rule = b.find("input[name=rule]");
    b.type_into(&rule, "pod-exec");
    b.click(&b.find("form.filters button"));
    let start = std::time::Instant::now();
    while !b.url().contains("rule=pod-exec") {
        assert!(start.elapsed().as_secs() < 15, "{}", b.url());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    b.wait_for("form.filters");
    let rows = b.find_all("tbody tr");
    assert_eq!(rows.len(), 6, "five exec findings and the live one");

    b.click(&b.find("tbody tr a"));
    b.wait_for("form.triage");
    assert!(b.url().contains("/ui/findings/"), "{}", b.url());
    let evidence: Vec<String> = b.find_all("pre").iter().map(|e| b.text(e)).collect();
    assert!(
        evidence
            .iter()
            .any(|t| t.contains("\"subresource\": \"exec\"")),
        "{evidence:?}"
    );

    // Acknowledged, with a comment, recorded under the name signed in with.
    b.type_into(
        &b.find("form.triage input[name=comment]"),
        "on-call looked at it",
    );
    b.click(&b.find("form.triage button"));
    let triage = b.text(&b.wait_for("table.triage"));
    assert!(
        triage.contains("Carol SOC")
            && triage.contains("acknowledge")
            && triage.contains("on-call looked at it"),
        "{triage}"
    );
    b.screenshot("finding");
    // The acknowledgement shows in the API.
    let id = b.url().rsplit('/').next().unwrap().to_owned();
    let api: serde_json::Value = client()
        .get(format!("{}/api/findings/{id}", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api["triage"][0]["action"], "acknowledge", "{api}");
    assert_eq!(api["triage"][0]["actor"], "Carol SOC");

    // A finding whose fields carry <script> and <img onerror>: text, and no
    // script ran (an alert would be open, and the next command fail).
    b.go(&format!("{}/ui?user=<script>alert(1)</script>", c.base));
    b.click(&b.wait_for("tbody tr a"));
    b.wait_for("form.triage");
    let main = b.text(&b.find("main"));
    assert!(
        main.contains("<script>alert(1)</script>") && main.contains("<img src=x onerror=alert(2)>"),
        "{main}"
    );
    assert!(
        b.find_all("main img").is_empty(),
        "an <img> element was made from the data"
    );
    let alert = b
        .http
        .get(format!("{}/session/{}/alert/text", b.base, b.session))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(alert["value"]["error"], "no such alert", "{alert}");

    // The export form downloads a bundle that kaudit verify accepts.
    b.go(&format!("{}/ui/export?rule=pod-exec", c.base));
    b.click(&b.find("main form button"));
    let start = std::time::Instant::now();
    let bundle = loop {
        let done = std::fs::read_dir(&downloads)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tar.gz"));
        if let Some(p) = done {
            break p;
        }
        assert!(start.elapsed().as_secs() < 30, "no download");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = kaudit(&["verify", &path_str(&bundle)], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    b.click(&b.find("form[action='/ui/logout'] button"));
    b.wait_for("input[name=token]");
    assert!(b.url().ends_with("/ui/login"), "{}", b.url());
    b.go(&format!("{}/ui", c.base));
    assert!(b.url().ends_with("/ui/login"), "signed out: {}", b.url());
    c.d.stop();
}

/// Triage through the API (with a silence made from a finding), and the
/// evidence bundle of a filter downloaded, verified by `kaudit verify`,
/// with the triage in it.
#[test]
fn triage_and_the_exported_bundle_go_together() {
    let c = start();
    let http = client();
    let list: serde_json::Value = http
        .get(format!("{}/api/findings?rule=pod-exec", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["findings"][0]["id"].as_str().unwrap().to_owned();
    // Without an actor, a bare token cannot triage.
    let r = http
        .post(format!("{}/api/findings/{id}/triage", c.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"action": "acknowledge", "comment": "seen"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/api/findings/{id}/triage", c.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"action": "silence", "comment": "maintenance window", "actor": "bob", "silence_for": "2h"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: serde_json::Value = r.json().unwrap();
    assert_eq!(t["action"], "silence");
    let r = http
        .post(format!("{}/api/findings/{id}/triage", c.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"action": "silence", "comment": "forever", "actor": "bob", "silence_for": "400d"}))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "silences from the console last 30 days at most"
    );
    // A browser session cannot export by GET (the form's POST carries the
    // CSRF token); the bearer token can.
    let r = http
        .get(format!("{}/api/export?rule=pod-exec", c.base))
        .header("Cookie", "kaudit_session=not-a-session")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(t["silence_id"].as_i64().is_some(), "{t}");
    let detail: serde_json::Value = http
        .get(format!("{}/api/findings/{id}", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(detail["triage"][0]["actor"], "bob");
    // The silence exists in the store, as `kaudit silence list` shows.
    let db = c._tmp.path().join("k.db");
    let out = kaudit(&["silence", "list", "--db", &path_str(&db)], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("maintenance window"));

    let r = http
        .get(format!("{}/api/export?rule=pod-exec", c.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let bundle = c._tmp.path().join("bundle.tar.gz");
    std::fs::write(&bundle, r.bytes().unwrap()).unwrap();
    // Signed with the console's key: verify holds it to the public half.
    let public = c._tmp.path().join("evidence.pem.pub");
    let out = kaudit(
        &[
            "verify",
            "--public-key",
            &path_str(&public),
            &path_str(&bundle),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let other = c._tmp.path().join("other.pem");
    kaudit(&["keygen", "--out", &path_str(&other)], b"");
    let out = kaudit(
        &[
            "verify",
            "--public-key",
            &format!("{}.pub", path_str(&other)),
            &path_str(&bundle),
        ],
        b"",
    );
    assert_ne!(out.status.code(), Some(0), "another key must not verify it");
    // The triage is in the bundle.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&bundle).unwrap(),
    ));
    let mut triage = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("triage.jsonl") {
            std::io::Read::read_to_string(&mut e, &mut triage).unwrap();
        }
    }
    assert!(
        triage.contains("maintenance window") && triage.contains("\"actor\":\"bob\""),
        "{triage}"
    );
    c.d.stop();
}

/// With `tls.client_ca` and no token, a client certificate is the way in
/// (over HTTPS, from any address); triage is recorded under its common
/// name; without a certificate the handshake is refused.
#[test]
fn a_client_certificate_lets_in_and_names_who_triaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = super::daemon::make_pki(dir, "soc-laptop-7");
    let log = dir.join("audit.log");
    std::fs::write(&log, format!("{}\n", exec_line("m1"))).unwrap();
    let (ops, ui) = (free_port(), free_port());
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\", ui: {{enabled: true, listen: \"0.0.0.0:{ui}\", tls: {{cert: {}, key: {}, client_ca: {}}}}}}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\n",
            path_str(&dir.join("k.db")),
            path_str(&pki.cert),
            path_str(&pki.key),
            path_str(&pki.ca),
            path_str(&log)
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ops);
    let base = format!("https://127.0.0.1:{ui}");
    let with_cert = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .identity(reqwest::Identity::from_pem(&pki.client_pem).unwrap())
        .build()
        .unwrap();
    d.wait_for(
        || {
            with_cert
                .get(format!("{base}/api/findings?rule=pod-exec"))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|v| v["findings"].as_array().is_some_and(|a| a.len() == 1))
        },
        "the finding through a client certificate",
    );
    let list: serde_json::Value = with_cert
        .get(format!("{base}/api/findings?rule=pod-exec"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["findings"][0]["id"].as_str().unwrap().to_owned();
    let r = with_cert
        .post(format!("{base}/api/findings/{id}/triage"))
        .json(&serde_json::json!({"action": "acknowledge", "comment": "mine"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: serde_json::Value = r.json().unwrap();
    assert_eq!(t["actor"], "soc-laptop-7");
    let without = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .build()
        .unwrap();
    assert!(without.get(format!("{base}/api/findings")).send().is_err());
    d.stop();
}
