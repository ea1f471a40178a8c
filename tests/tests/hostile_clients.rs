//! Hostile HTTP clients: thousands of idle sockets, slowloris, a client
//! that never finishes its body, more connections than the cap. A normal
//! client keeps completing calls, with p99 within 3× of unloaded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::load::quantile;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

fn echo_host(mcp: Value) -> (Host, tempfile::TempDir) {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({"mcp": mcp, "delegation": {"modules": {"echo1": {}}}});
    (Host::start(&config, plugins.path()), plugins)
}

fn address(host: &Host) -> String {
    host.base_url.trim_start_matches("http://").to_owned()
}

fn echo(client: &reqwest::blocking::Client, url: &str, message: &str) -> Result<(), String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo1-echo", "arguments": {"message": message}}});
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .map_err(|err| err.to_string())?;
    let text = response.text().map_err(|err| err.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|err| format!("{err}: {text}"))?;
    if value["result"]["structuredContent"]["message"] == message {
        Ok(())
    } else {
        Err(text)
    }
}

/// Durations of calls for `run`: half on one keep-alive connection, half
/// each on a connection of its own.
fn normal_client(url: &str, run: Duration) -> Vec<Duration> {
    let kept = reqwest::blocking::Client::new();
    let started = Instant::now();
    let mut durations = Vec::new();
    let mut n = 0;
    while started.elapsed() < run {
        let fresh;
        let client = if n % 2 == 0 {
            &kept
        } else {
            fresh = reqwest::blocking::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            &fresh
        };
        let at = Instant::now();
        echo(client, url, &format!("call {n}")).expect("a normal call failed");
        durations.push(at.elapsed());
        n += 1;
    }
    durations
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn two_thousand_idle_and_two_hundred_slowloris_connections_do_not_stop_a_normal_client() {
    let (host, _plugins) = echo_host(json!({"headerReadTimeoutMillis": 8000}));
    let (url, address) = (host.mcp_url(), address(&host));
    normal_client(&url, Duration::from_millis(500));
    let unloaded = normal_client(&url, Duration::from_secs(2));
    let descriptors_before = open_descriptors(host.pid());
    let rss_before = host.memory_kib("VmRSS");

    let attack_started = Instant::now();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&address).expect("idle connection"))
        .collect();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).expect("slow connection");
            write!(stream, "POST /mcp HTTP/1.1\r\nHost: {address}\r\nX-Slow: ").expect("write");
            stream
        })
        .collect();
    let opened = attack_started.elapsed();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbling = stop.clone();
    let dribbler = std::thread::spawn(move || {
        // One header byte per connection every 200 ms.
        while !dribbling.load(std::sync::atomic::Ordering::Relaxed) {
            for stream in &mut slow {
                let _ = stream.write_all(b"a");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        slow
    });
    std::thread::sleep(Duration::from_millis(500));
    let held = open_descriptors(host.pid()) - descriptors_before;
    let loaded = normal_client(&url, Duration::from_secs(3));
    let rss_during = host.memory_kib("VmRSS");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slow = dribbler.join().expect("dribbler");
    assert!(
        attack_started.elapsed() < Duration::from_secs(8),
        "the measurement outlasted the header timeout: opened in {opened:?}, ended at {:?}, {} calls",
        attack_started.elapsed(),
        loaded.len()
    );
    let (base, during) = (quantile(&unloaded, 0.99), quantile(&loaded, 0.99));
    println!(
        "opened 2,200 connections in {opened:?}, held {held}; normal client p99 {base:?} unloaded, {during:?} \
         during ({} calls); RSS {} → {} MiB",
        loaded.len(),
        rss_before / 1024,
        rss_during / 1024
    );
    assert!(
        held >= 2150,
        "the server held only {held} of 2,200 connections"
    );
    let bound = (base * 3).max(base + Duration::from_millis(5));
    assert!(during <= bound, "p99 went from {base:?} to {during:?}");

    // After the header timeout every attacking connection is closed.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(attack_started.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_descriptors(host.pid()) > descriptors_before + 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = open_descriptors(host.pid()).saturating_sub(descriptors_before);
    assert!(left <= 20, "{left} attacking connections are still open");
    drop((idle, slow));
    echo(&reqwest::blocking::Client::new(), &url, "after").expect("served after");
}

#[test]
fn at_the_connection_cap_new_connections_wait_and_open_ones_keep_working() {
    let (host, _plugins) = echo_host(json!({"maxConnections": 20}));
    let (url, address) = (host.mcp_url(), address(&host));
    let kept = reqwest::blocking::Client::new();
    echo(&kept, &url, "first").expect("first call");
    // Nineteen more connections fill the cap (each accepted: it answers).
    let mut held: Vec<TcpStream> = (0..19)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).expect("connect");
            write!(stream, "GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("write");
            let mut buffer = [0u8; 512];
            let n = stream.read(&mut buffer).expect("answer");
            assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
            stream
        })
        .collect();
    // A new connection waits…
    let waiting = {
        let url = url.clone();
        std::thread::spawn(move || {
            let at = Instant::now();
            let fresh = reqwest::blocking::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            (echo(&fresh, &url, "waited"), at.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !waiting.is_finished(),
        "a connection beyond the cap was served"
    );
    // … while the open one keeps working.
    for n in 0..20 {
        echo(&kept, &url, &format!("kept {n}")).expect("the open connection failed");
    }
    // A place frees: the waiting connection is served.
    held.truncate(15);
    let (answer, waited) = waiting.join().expect("waiting client");
    answer.expect("the waiting connection was not served");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    println!("a connection beyond the cap of 20 waited {waited:?}, then was served");
}

#[test]
fn a_request_that_is_not_answered_in_time_gets_504_and_idle_connections_close() {
    let (host, _plugins) = echo_host(json!({
        "requestTimeoutMillis": 1000, "headerReadTimeoutMillis": 1500}));
    let address = address(&host);
    // A call slower than the request timeout.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo1-echo", "arguments": {"message": "slow", "delayMillis": 4000}}});
    let at = Instant::now();
    let response = reqwest::blocking::Client::new()
        .post(host.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .expect("answer");
    assert_eq!(response.status().as_u16(), 504);
    let answer: Value = response.json().expect("JSON");
    assert_eq!(answer["error"], "REQUEST_TIMEOUT", "{answer}");
    assert!(
        at.elapsed() < Duration::from_millis(2500),
        "{:?}",
        at.elapsed()
    );

    // A body that never comes (headers complete, so hyper's header timer
    // is done): answered 504 and closed.
    let mut stream = TcpStream::connect(&address).expect("connect");
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"jsonrpc\""
    )
    .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let at = Instant::now();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        at.elapsed() < Duration::from_millis(2500),
        "{:?}",
        at.elapsed()
    );

    // A keep-alive connection that sends nothing more is closed after
    // the header timeout.
    let mut stream = TcpStream::connect(&address).expect("connect");
    write!(stream, "GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buffer = [0u8; 512];
    let n = stream.read(&mut buffer).expect("answer");
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let at = Instant::now();
    let n = stream.read(&mut buffer).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection got more bytes");
    let idle = at.elapsed();
    assert!(
        idle >= Duration::from_millis(1300) && idle < Duration::from_millis(3000),
        "an idle keep-alive connection was closed after {idle:?}"
    );
}
