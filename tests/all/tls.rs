//! Attested TLS as a network attacker meets it: a connection is accepted only to the key
//! the attested enclave endorsed, plain HTTP only on loopback in simulation.

use crate::server::{Study, TestServer, err_text, signed_get};

#[test]
fn the_cli_speaks_only_to_the_attested_key_and_a_redirect_is_refused() {
    let a = TestServer::start();
    let b = TestServer::start();
    assert!(a.url.starts_with("https://"));
    a.keygen("owner");
    // An agent attested to A, pointed at B (a different enclave, same measurement, its own
    // key: what a redirecting network would show): the handshake is refused.
    let agent = a.agent();
    let err = agent
        .get(format!("{}/health", b.url))
        .call()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not the one the attested enclave endorsed"),
        "{err}"
    );
    // The same agent still reaches A.
    let ok = agent.get(format!("{}/health", a.url)).call().unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn evidence_that_does_not_verify_means_no_connection() {
    let s = TestServer::start();
    s.keygen("owner");
    let wrong = "00".repeat(48);
    let err = err_text(s.cli(
        Some("owner"),
        &[
            "dataset",
            "list",
            "--measurement",
            &wrong,
            "--accept-insecure-simulation",
        ],
    ));
    assert!(err.contains("attestation verification failed"), "{err}");
    // Simulation evidence without the explicit opt-in: refused.
    let err = err_text(s.cli(
        Some("owner"),
        &["dataset", "list", "--measurement", &s.measurement],
    ));
    assert!(err.contains("simulation"), "{err}");
    // No measurement at all: the CLI asks for one instead of trusting whoever answers.
    let argv = ["cleanroom", "dataset", "list", "--server", &s.url, "--json"];
    let err = format!("{:#}", cleanroom_cli::run_capture(argv).unwrap_err());
    assert!(err.contains("--measurement"), "{err}");
}

#[test]
fn plain_http_only_on_loopback_in_simulation() {
    // The CLI will not send requests in the clear to a remote address.
    let argv = [
        "cleanroom",
        "dataset",
        "list",
        "--server",
        "http://10.0.0.1:7878",
        "--json",
    ];
    let err = format!("{:#}", cleanroom_cli::run_capture(argv).unwrap_err());
    assert!(
        err.contains("only for a local simulation on loopback"),
        "{err}"
    );
    // cleanroomd will not serve plain HTTP beyond loopback, even in simulation.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = cleanroomd::Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        data_dir: dir.path().join("server"),
        insecure_simulation: true,
        plain_http: true,
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        rt.block_on(cleanroomd::start(config, true)).unwrap_err()
    );
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn a_whole_study_runs_over_attested_tls() {
    // The study helpers drive every command over https:// (see TestServer::start_in); one
    // signed read shows the session is the attested one.
    let st = Study::new();
    let listing = signed_get(&st.s, "st_marys", "/v1/datasets");
    assert!(listing["datasets"].as_array().is_some(), "{listing}");
}

#[test]
fn exit_codes_classify_what_went_wrong() {
    use cleanroom_cli::failure::exit_code;
    let st = Study::new();
    let code = |r: anyhow::Result<serde_json::Value>| exit_code(&r.unwrap_err());
    // Evidence that does not verify: 6.
    let wrong = "00".repeat(48);
    assert_eq!(
        code(st.s.cli(
            Some("st_marys"),
            &[
                "dataset",
                "list",
                "--measurement",
                &wrong,
                "--accept-insecure-simulation"
            ],
        )),
        6
    );
    // The server refuses (a stranger reads a policy it may not see): 3.
    assert_eq!(
        code(st.s.cli(Some("stranger"), &["policy", "show", "--dataset", &st.a])),
        3
    );
    // A run that ends withheld (identifier column published): 4.
    let copier = crate::server::push_module(&st.s, cleanroom_tests::COPY_TABLE);
    st.grant_both_module(&copier, &[]);
    let run = st.submit(&copier, "{}").unwrap();
    assert_eq!(
        code(st.s.cli(Some("researcher"), &["run", "watch", &run])),
        4
    );
    // A usage error: 2.
    assert_eq!(code(st.s.cli(None, &["run", "submit", "--bogus"])), 2);
}

#[test]
fn unknown_paths_and_methods_get_the_apis_json_error() {
    let s = TestServer::start();
    let agent = s.agent();
    for (method, path) in [
        ("GET", "/v1/nope"),
        ("DELETE", "/v1/runs"),
        ("PATCH", "/health"),
    ] {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", s.url))
            .body(Vec::new())
            .unwrap();
        let resp = agent.run(req).unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        let body: serde_json::Value =
            serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
        assert_eq!(body["type"], "not-found", "{body}");
        assert!(body["message"].as_str().unwrap().contains(path), "{body}");
    }
}
