//! The console's session: the one-time login link, the port-bound session cookie, the
//! `Host` and `Origin` checks every request passes, and opening the browser without the
//! token on any command line.

use super::*;

/// Best effort: the URL is printed either way. The browser is not given the URL on its
/// command line (any local user can read another process's argv): it opens a page in a
/// directory only this user can read, which forwards to the login link (as Jupyter does).
pub(super) fn open_browser(url: &str) -> Option<tempfile::TempDir> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    // tempfile makes the directory 0700 on Unix.
    let dir = tempfile::Builder::new()
        .prefix("cleanroom-console-")
        .tempdir()
        .ok()?;
    let page = dir.path().join("open.html");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>cleanroom console</title><a href=\"{url}\">Open the cleanroom console</a>\n"
    );
    std::fs::write(&page, html).ok()?;
    let _ = std::process::Command::new(opener)
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    Some(dir)
}

/// Every response: refuse a `Host` that is not this listener (DNS rebinding) and a form post
/// from another origin; forbid framing, caching, cross-origin referrers and any script but ours.
pub(super) async fn guard(State(c): Shared, req: Request, next: Next) -> Response {
    let (host_ok, origin_ok) = {
        let named = |name: header::HeaderName, allowed: &[String]| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| allowed.iter().any(|a| a == v))
        };
        (
            named(header::HOST, &c.hosts),
            req.method() == axum::http::Method::GET || named(header::ORIGIN, &c.origins),
        )
    };
    let mut resp = if !host_ok || !origin_ok {
        Problem {
            status: StatusCode::FORBIDDEN,
            title: "Refused",
            detail: "The request did not come from this console's own pages.".into(),
            next: "Open the console from the link `cleanroom console` printed.",
        }
        .into_response()
    } else {
        next.run(req).await
    };
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, and the
        // origin check above needs the real one. Nothing leaves this origin either way.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Constant-time comparison of a token.
pub(super) fn same_token(expected: &str, candidate: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(candidate.as_bytes()).into()
}

/// Whether `candidate` is this console's session token.
pub(super) fn token_matches(c: &Console, candidate: &str) -> bool {
    same_token(&c.token, candidate)
}

/// Every page but `/login` needs the session cookie.
pub(super) async fn session(State(c): Shared, req: Request, next: Next) -> Response {
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == c.cookie())
        .map(|(_, v)| v.to_string());
    if cookie.is_some_and(|v| token_matches(&c, &v)) {
        next.run(req).await
    } else {
        Problem::unauthorised().into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginQuery {
    token: Option<String>,
}

/// Exchange the one-time token in the printed link for the session cookie (a different
/// value), and drop it from the URL. A second use of the link is refused.
pub(super) async fn login(State(c): Shared, Query(q): Query<LoginQuery>) -> Response {
    if !q.token.is_some_and(|t| c.redeem(&t)) {
        return Problem::unauthorised().into_response();
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        c.cookie(),
        c.token
    );
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex is a valid header"),
    );
    resp
}
