//! The README's demo, run as a newcomer would: start it, copy what it
//! prints into a shell, check the answers, press Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_delegate_tests::paths::build_dir;
use serde_json::Value;

#[test]
fn the_demo_prints_tokens_and_curl_commands_that_work_and_cleans_up() {
    let mut demo = Command::new(build_dir().join("mcp-delegate-demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("Press Ctrl-C") {
                let _ = tx.send(printed.clone());
            }
        }
    });
    let printed = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the demo got ready");
    assert!(printed.contains("valid for 8 hours"), "{printed}");
    // The printed text is a shell script: exports, then curl commands.
    let mut script = String::from("set -e\n");
    let mut outputs = 0;
    for block in printed.split("\n\n") {
        for line in block.lines().filter(|l| l.starts_with("export ")) {
            script.push_str(line);
            script.push('\n');
        }
        if let Some(start) = block.find("curl ") {
            outputs += 1;
            script.push_str(&block[start..]);
            script.push_str("\necho\n");
        }
    }
    assert_eq!(outputs, 3, "{printed}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON answer"))
        .collect();
    let tools = answers[0]["result"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 8);
    let revenue = &answers[1]["result"]["structuredContent"]["rows"];
    let names: Vec<&str> = revenue
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let mut names = names.clone();
    names.sort();
    assert_eq!(
        names,
        ["Acme Corp", "Globex"],
        "alice sees only her customers: {}",
        answers[1]
    );
    assert_eq!(
        answers[2]["result"]["structuredContent"]["primaryKey"],
        serde_json::json!(["date", "region"])
    );

    // Ctrl-C: everything stops and the temporary data goes away.
    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = demo.try_wait() {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!mcp_delegate_tests::paths::workspace_root()
        .join("target/demo")
        .exists());
}
