//! A reload that cannot be used changes nothing: the old configuration
//! keeps answering, `/ready` and `health-check` say why, and the watcher
//! tries again once what was missing arrives.

use std::time::{Duration, Instant};

use mcp_delegate_tests::generation::{await_reload, loaded_at, ready};
use mcp_delegate_tests::host::{replace_file, Host};
use mcp_delegate_tests::paths::{incompatible_echo_plugin, plugin_dir, plugin_library};
use serde_json::{json, Value};

/// A reload that cannot be used changes nothing: the old configuration
/// keeps answering, and `/ready` and `health-check` say why until a good
/// reload. `--no-watch`: only `SIGHUP` reloads.
#[test]
fn a_refused_reload_keeps_the_old_configuration_and_says_why() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let good = json!({"delegation": {"modules": {"echo1": {"greeting": "hello"}}}});
    let mut host = Host::start_with(&good, plugins.path(), &["--no-watch"]);
    let first_status = ready(&host);
    let generation = first_status["config"]["generation"]
        .as_str()
        .unwrap()
        .to_owned();
    let loaded = loaded_at(&first_status);
    let echo = |host: &mut Host| {
        host.call_tool("echo1-echo", json!({"message": "still here"}))["structuredContent"].clone()
    };

    let with_auth_none = |config: Value| {
        let mut config = config;
        config["auth"] = json!({"mode": "none"});
        config.to_string()
    };
    let refused = [
        ("{\"delegation\": ".to_owned(), "", "not valid JSON"),
        (
            with_auth_none(json!({"delegation": {"modules": {"echo1": {"greeting": 7}}}})),
            "delegation.modules.echo1.greeting",
            "expected a string",
        ),
        (
            with_auth_none(json!({"delegation": {"modules": {"echo1": {"greting": "typo"}}}})),
            "delegation.modules.echo1.greting",
            "unknown key",
        ),
    ];
    for (text, path, message) in refused {
        replace_file(host.config_path(), text.as_bytes());
        host.hang_up();
        assert!(
            host.wait_for_log("reload refused", Duration::from_secs(20)),
            "{text}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = ready(&host);
            let errors = &status["config"]["lastReloadError"]["errors"];
            if errors.as_array().is_some_and(|errors| {
                errors.iter().any(|error| {
                    error["path"] == path
                        && error["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains(message)
                })
            }) {
                break status;
            }
            assert!(Instant::now() < deadline, "{text}: /ready {status}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status["config"]["generation"], generation, "{status}");
        assert_eq!(loaded_at(&status), loaded, "{status}");
        assert_eq!(echo(&mut host)["greeting"], "hello");
        let health = host.call_tool("health-check", json!({}))["structuredContent"].clone();
        assert_eq!(
            health["config"]["lastReloadError"],
            status["config"]["lastReloadError"]
        );
    }

    // An incompatible upgrade of the plugin: refused in one line, the old
    // library keeps serving.
    std::fs::write(host.config_path(), with_auth_none(good.clone())).unwrap();
    replace_file(
        &plugins.path().join("libmcp_delegate_echo.so"),
        &std::fs::read(incompatible_echo_plugin()).unwrap(),
    );
    host.hang_up();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = ready(&host);
        let errors = status["config"]["lastReloadError"]["errors"].to_string();
        if errors.contains("incompatible") {
            break status;
        }
        assert!(Instant::now() < deadline, "/ready {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["config"]["generation"], generation, "{status}");
    assert_eq!(echo(&mut host)["build"], "echo-build-1");
    let refusal_lines = host
        .logs()
        .iter()
        .filter(|line| line.contains("plugin refused"))
        .count();
    assert_eq!(refusal_lines, 1, "one line for the refused library");

    // A good reload clears the error.
    replace_file(
        &plugins.path().join("libmcp_delegate_echo.so"),
        &std::fs::read(plugin_library("mcp_delegate_echo")).unwrap(),
    );
    replace_file(
        host.config_path(),
        with_auth_none(json!({"delegation": {"modules": {"echo1": {"greeting": "hi again"}}}}))
            .as_bytes(),
    );
    host.hang_up();
    let status = await_reload(&host, &loaded);
    assert_ne!(status["config"]["generation"], generation, "{status}");
    assert_eq!(status["config"]["lastReloadError"], Value::Null, "{status}");
    assert_eq!(echo(&mut host)["greeting"], "hi again");
}

/// The watcher tries a refused config again when what it lacked arrives:
/// here a secret file it names that did not exist yet. (It does not retry
/// the same refused content otherwise: one refusal, one log line set.)
#[test]
fn a_config_refused_for_a_missing_secret_loads_when_the_secret_arrives() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let secrets = tempfile::tempdir().unwrap();
    let mut host = Host::start_with(
        &json!({"delegation": {"modules": {"echo1": {"greeting": "hello"}}}}),
        plugins.path(),
        &[
            "--secrets-dir",
            secrets.path().to_str().unwrap(),
            "--watch-interval",
            "100ms",
        ],
    );
    let loaded = loaded_at(&ready(&host));
    let config = json!({"auth": {"mode": "none"}, "delegation": {"modules": {
        "echo1": {"greeting": {"$secret": "ECHO_GREETING"}}}}});
    replace_file(host.config_path(), config.to_string().as_bytes());
    assert!(host.wait_for_log("reload refused", Duration::from_secs(20)));
    // Refused content is not tried again while nothing changes.
    std::thread::sleep(Duration::from_millis(600));
    let refusals = host
        .logs()
        .iter()
        .filter(|line| line.contains("reload refused"))
        .count();
    assert_eq!(refusals, 1, "{:?}", host.logs());
    assert_eq!(loaded_at(&ready(&host)), loaded);

    std::fs::write(secrets.path().join("ECHO_GREETING"), "from a secret\n").unwrap();
    let status = await_reload(&host, &loaded);
    assert_eq!(status["config"]["lastReloadError"], Value::Null, "{status}");
    let answer = host.call_tool("echo1-echo", json!({"message": "m"}));
    assert_eq!(answer["structuredContent"]["greeting"], "from a secret");
}
