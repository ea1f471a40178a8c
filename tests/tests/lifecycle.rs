//! A graceful stop under load: on SIGTERM the server stops accepting,
//! lets every call in flight finish (bounded by `--drain-timeout`),
//! answers new requests on open connections with 503 and
//! `Connection: close`, and exits 0. No request sent before the signal is
//! cut.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

/// What one request came to.
struct Sent {
    at: Instant,
    message: String,
    answer: Result<(u16, Value), String>,
}

fn call(
    client: &reqwest::blocking::Client,
    url: &str,
    message: &str,
    delay: u64,
) -> Result<(u16, Value), String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo1-echo", "arguments": {"message": message, "delayMillis": delay}}});
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().map_err(|err| err.to_string())?;
    let value = serde_json::from_str(&text).map_err(|err| format!("cut answer ({err}): {text}"))?;
    Ok((status, value))
}

#[test]
fn sigterm_under_load_finishes_every_call_in_flight_and_exits_zero() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({"delegation": {"modules": {"echo1": {}}}});
    let mut host = Host::start_with(&config, plugins.path(), &["--drain-timeout", "20s"]);
    let url = host.mcp_url();
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_index in 0..4 {
        let (url, log, stop) = (url.clone(), log.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let message = format!("c{client_index}-{n}");
                let at = Instant::now();
                let answer = call(&client, &url, &message, 300);
                let refused = answer.is_err();
                log.lock().unwrap().push(Sent {
                    at,
                    message,
                    answer,
                });
                if refused {
                    std::thread::sleep(Duration::from_millis(20));
                }
                n += 1;
            }
        }));
    }
    // A long call in flight when the signal comes.
    let long = {
        let url = url.clone();
        std::thread::spawn(move || {
            let at = Instant::now();
            let answer = call(&reqwest::blocking::Client::new(), &url, "long", 3000);
            Sent {
                at,
                message: "long".into(),
                answer,
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let signal = Instant::now();
    let exit = host.terminate(Duration::from_secs(30));
    let stopped_after = signal.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let long = long.join().unwrap();
    assert_eq!(exit, Some(0), "the host exits 0 after a SIGTERM");

    let mut log = std::mem::take(&mut *log.lock().unwrap());
    log.push(long);
    // Sent well before the signal (50 ms: it had reached the server): a
    // complete, correct answer, every one.
    let before: Vec<&Sent> = log
        .iter()
        .filter(|sent| sent.at + Duration::from_millis(50) < signal)
        .collect();
    assert!(before.len() >= 8, "too little load: {} calls", before.len());
    for sent in &before {
        match &sent.answer {
            Ok((200, value)) => assert_eq!(
                value["result"]["structuredContent"]["message"], sent.message,
                "{value}"
            ),
            other => panic!(
                "{} was sent before the signal and got {other:?}",
                sent.message
            ),
        }
    }
    // After it: a 503 that says so, or no connection; never a cut answer.
    let mut shut_out = 0;
    for sent in log.iter().filter(|sent| sent.at >= signal) {
        match &sent.answer {
            Ok((503, value)) => {
                assert_eq!(value["error"], "SHUTTING_DOWN", "{value}");
                shut_out += 1;
            }
            Ok((200, _)) => {}
            Ok(other) => panic!("unexpected answer after the signal: {other:?}"),
            Err(err) => assert!(!err.starts_with("cut answer"), "{err}"),
        }
    }
    assert!(
        stopped_after >= Duration::from_millis(1000),
        "the long call (3 s, 1.5 s in) was waited for: stopped after {stopped_after:?}"
    );
    eprintln!(
        "{} calls before the signal all answered; {shut_out} answered 503 after it; exit 0 after {:?}",
        before.len(),
        stopped_after
    );
}

/// Slowloris: connections that dribble a request's headers are closed
/// after `mcp.headerReadTimeoutMillis`, while a normal client is served
/// all along.
#[test]
fn connections_that_never_finish_their_headers_are_closed() {
    use std::io::{Read, Write};
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "mcp": {"headerReadTimeoutMillis": 500},
        "delegation": {"modules": {"echo1": {}}}
    });
    let mut host = Host::start(&config, plugins.path());
    let address = host.base_url.trim_start_matches("http://").to_owned();
    let mut slow: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            write!(stream, "POST /mcp HTTP/1.1\r\nHost: {address}\r\nX-Slow: ").unwrap();
            stream
        })
        .collect();
    // Served meanwhile.
    let answer = host.call_tool("echo1-echo", json!({"message": "still served"}));
    assert_eq!(answer["structuredContent"]["message"], "still served");
    std::thread::sleep(Duration::from_millis(1500));
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(b"a");
        let mut buffer = [0u8; 256];
        // Closed: end of stream, a reset, or a 408 then the end.
        let closed = match stream.read(&mut buffer) {
            Ok(0) => true,
            Err(err) => !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            Ok(n) => String::from_utf8_lossy(&buffer[..n]).contains("408"),
        };
        assert!(
            closed,
            "a connection that never finished its headers is still open"
        );
    }
    let answer = host.call_tool("echo1-echo", json!({"message": "after"}));
    assert_eq!(answer["structuredContent"]["message"], "after");
}
