//! Property tests of the message reader fed a hostile server's bytes:
//! the bytes arrive over a real loopback socket and are read by the real
//! `Connection` (`read_group` for our own statements, `read_batch` with
//! the real JSON `ResultWriter` for the user's). For every input:
//!
//! 1. nothing panics, and the read ends (the server closes after its
//!    bytes: an unfinished response is an error, never a hang);
//! 2. no more is allocated than a bound that does not depend on what the
//!    messages *announce* (a length field of 2 GiB costs nothing), only
//!    on the buffer bounds and the bytes actually sent;
//! 3. a malformed message (an unknown type, a length under 4, a body its
//!    parser rejects) is an error, and any error leaves the connection
//!    marked broken so the pool drops it;
//! 4. a batch read to its end with rows produced valid JSON.
//!
//! Inputs: random bytes; random sequences of backend messages with
//! random bodies and sometimes lying lengths; and valid responses (row
//! description, rows, command complete, ready for query) mutated by byte
//! flips, truncations and inserted length fields. Fixed seed and case
//! count; `WIRE_FUZZ_CASES` and `WIRE_FUZZ_SEED` explore further.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::connect::Stream;
use super::read::{INITIAL_BUFFER, MAX_OTHER_MESSAGE};
use super::{Connection, RowSink, SessionStatements, WireError};

/// Runs `read` with the real JSON result writer as its sink: its value,
/// and the writer's JSON when the result had columns.
fn with_result_writer<T>(
    budget: usize,
    read: impl FnOnce(&mut dyn RowSink) -> T,
) -> (T, Option<String>) {
    let types = crate::values::TypeCache::default();
    let mut resolve = |_: &[u32]| {};
    let mut writer = crate::result::ResultWriter::new(&types, &mut resolve, budget, 100, true);
    let value = read(&mut writer);
    let json = writer.has_columns().then(|| writer.finish("SELECT"));
    (value, json)
}

/// Counts the bytes this thread holds allocated, and the most it held,
/// for property 2. Other threads are not counted.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping
// touches only const-initialised thread-locals without destructors.
#[allow(unsafe_code)] // an allocator is unsafe by definition; see above.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn account(delta: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Most bytes held at once during `f`, beyond what was held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let value = f();
    let peak = PEAK.with(Cell::get);
    (value, usize::try_from(peak - base).unwrap_or(0))
}

const CASES: u32 = 1500;

fn config() -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("WIRE_FUZZ_CASES").map_or(CASES, |n| n as u32),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(env("WIRE_FUZZ_SEED").unwrap_or(0x7769_7265_2d66_757a)),
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

thread_local! {
    /// One listener per test thread: a listener per case would need a
    /// new port per case, and long runs (100,000 connections) exhaust the
    /// ephemeral ports while closed sockets wait out TIME_WAIT. A thread
    /// runs its cases one after another, so each accept pairs with the
    /// case's own connection.
    static LISTENER: TcpListener = TcpListener::bind("127.0.0.1:0").unwrap();
}

/// A connection whose server sends `bytes` and closes.
fn connection_fed(bytes: Vec<u8>) -> (Connection, std::thread::JoinHandle<()>) {
    let (listener, address) = LISTENER.with(|listener| {
        (
            listener.try_clone().unwrap(),
            listener.local_addr().unwrap(),
        )
    });
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let _ = socket.write_all(&bytes);
        let _ = socket.shutdown(std::net::Shutdown::Write);
        // Keep reading whatever the client sends (cancel requests go
        // elsewhere) until it hangs up.
        let _ = std::io::copy(&mut socket, &mut std::io::sink());
    });
    let tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let connection = Connection {
        stream: Stream::Plain(tcp),
        read_buf: BytesMut::with_capacity(INITIAL_BUFFER),
        buffer_grew: false,
        write_buf: BytesMut::new(),
        broken: false,
        statements: SessionStatements::default(),
        pooling: super::Pooling::Session,
        defaults: std::sync::Arc::new(super::SessionDefaults {
            statement_timeout: "0".into(),
            application_name: "fuzz".into(),
        }),
        last_used: Instant::now(),
        cancel: None,
        server_major: 15,
    };
    (connection, server)
}

/// The most a read may hold: the read buffer at its largest (a whole
/// non-row message plus one read chunk), a skip buffer, and a constant
/// factor of the bytes actually sent (owned rows, JSON output).
fn allocation_bound(sent: usize) -> usize {
    2 * (MAX_OTHER_MESSAGE + 4 * 1024 * 1024) + 64 * 1024 + 16 * sent + 64 * 1024
}

/// Whether `bytes` starts with a message no reader accepts: a type byte
/// that is not a backend message, or a length under 4.
fn starts_malformed(bytes: &[u8]) -> bool {
    const BACKEND: &[u8] = b"123ACDEGHIKNRSTVWZdnpstcv";
    if bytes.len() < 5 {
        return false;
    }
    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    !BACKEND.contains(&bytes[0]) || length < 4
}

/// Properties 1–3 for one input through both readers.
fn check_input(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let sent = bytes.len();
    let malformed = starts_malformed(&bytes);
    for reader in [Reader::Group, Reader::Batch] {
        let (mut connection, server) = connection_fed(bytes.clone());
        let started = Instant::now();
        let (outcome, peak) = peak_during(|| reader.read(&mut connection));
        drop(connection);
        let _ = server.join();
        prop_assert!(
            started.elapsed() < Duration::from_secs(5),
            "{reader:?} took {:?}",
            started.elapsed()
        );
        prop_assert!(
            peak <= allocation_bound(sent),
            "{reader:?} held {peak} bytes for {sent} bytes sent"
        );
        match outcome {
            Outcome::Error { broken } => {
                prop_assert!(broken, "{reader:?}: an error left the connection usable")
            }
            Outcome::Finished { json_ok } => {
                prop_assert!(!malformed, "{reader:?} accepted a malformed first message");
                prop_assert!(json_ok, "{reader:?} wrote invalid JSON");
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Reader {
    /// `read_group`, as for our own statements.
    Group,
    /// `read_batch` into the real JSON result writer, as for the user's.
    Batch,
}

enum Outcome {
    Error { broken: bool },
    Finished { json_ok: bool },
}

impl Reader {
    fn read(self, connection: &mut Connection) -> Outcome {
        match self {
            Reader::Group => match connection.read_group(1000) {
                Ok(_) => Outcome::Finished { json_ok: true },
                Err(_) => Outcome::Error {
                    broken: connection.is_broken(),
                },
            },
            Reader::Batch => {
                let (result, json) =
                    with_result_writer(64 * 1024, |sink| connection.read_batch(0, sink, None));
                match result {
                    Ok(_) => Outcome::Finished {
                        json_ok: json.is_none_or(|json| {
                            serde_json::from_str::<serde_json::Value>(&json).is_ok()
                        }),
                    },
                    Err(_) => Outcome::Error {
                        broken: connection.is_broken(),
                    },
                }
            }
        }
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A valid response: a row description of `columns` text columns, rows,
/// command complete, ready for query.
fn valid_response(columns: usize, rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut description = (columns as u16).to_be_bytes().to_vec();
    for column in 0..columns {
        description.extend_from_slice(format!("c{column}\0").as_bytes());
        description.extend_from_slice(&0u32.to_be_bytes()); // table
        description.extend_from_slice(&0u16.to_be_bytes()); // attribute
        description.extend_from_slice(&25u32.to_be_bytes()); // text
        description.extend_from_slice(&(-1i16).to_be_bytes());
        description.extend_from_slice(&(-1i32).to_be_bytes());
        description.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    out.extend(message(b'T', &description));
    for row in rows {
        let mut body = (columns as u16).to_be_bytes().to_vec();
        for column in 0..columns {
            match row.get(column).cloned().flatten() {
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(&value);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.extend(message(b'D', &body));
    }
    out.extend(message(b'C', b"SELECT 1\0"));
    out.extend(message(b'Z', b"I"));
    out
}

fn valid_responses() -> impl Strategy<Value = Vec<u8>> {
    (1usize..4)
        .prop_flat_map(|columns| {
            let value = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
            let row = prop::collection::vec(value, columns..=columns);
            (Just(columns), prop::collection::vec(row, 0..6))
        })
        .prop_map(|(columns, rows)| valid_response(columns, &rows))
}

/// A valid response with a few mutations.
fn mutated_responses() -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| (0u8, at, byte, 0u32)),
        any::<prop::sample::Index>().prop_map(|at| (1u8, at, 0, 0)),
        (any::<prop::sample::Index>(), any::<u32>()).prop_map(|(at, length)| (2u8, at, 0, length)),
        (any::<prop::sample::Index>(), 0x7fff_0000u32..=u32::MAX)
            .prop_map(|(at, length)| (2u8, at, 0, length)),
    ];
    (valid_responses(), prop::collection::vec(mutation, 1..4)).prop_map(|(mut bytes, mutations)| {
        for (kind, at, byte, length) in mutations {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match kind {
                0 => bytes[at] ^= byte | 1,
                1 => bytes.truncate(at),
                _ => {
                    let end = (at + 4).min(bytes.len());
                    let field = length.to_be_bytes();
                    bytes[at..end].copy_from_slice(&field[..end - at]);
                }
            }
        }
        bytes
    })
}

/// Random messages of backend kinds (and some others), random bodies,
/// sometimes a length that lies.
fn message_soup() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        prop::sample::select(b"123ACDEGHIKNRSTVWZdnpstcv".to_vec()),
        any::<u8>(),
    ];
    let one = (
        kind,
        prop::collection::vec(any::<u8>(), 0..64),
        prop::option::weighted(0.2, any::<u32>()),
    )
        .prop_map(|(kind, body, lie)| {
            let mut bytes = message(kind, &body);
            if let Some(length) = lie {
                bytes[1..5].copy_from_slice(&length.to_be_bytes());
            }
            bytes
        });
    prop::collection::vec(one, 1..8).prop_map(|messages| messages.concat())
}

fn run(strategy: impl Strategy<Value = Vec<u8>>) {
    let mut runner = TestRunner::new(config());
    if let Err(failure) = runner.run(&strategy, check_input) {
        panic!("{failure}");
    }
}

#[test]
fn random_bytes_from_the_server() {
    run(prop::collection::vec(any::<u8>(), 0..2048));
}

#[test]
fn random_backend_messages_from_the_server() {
    run(message_soup());
}

#[test]
fn mutated_valid_responses_from_the_server() {
    run(mutated_responses());
}

/// The allocation count sees the reader's allocations (the property is
/// not vacuous): a valid 200 KiB row costs at least its size.
#[test]
fn the_allocation_count_sees_a_large_row() {
    let value = vec![b'x'; 200 * 1024];
    let bytes = valid_response(1, &[vec![Some(value)]]);
    let (mut connection, server) = connection_fed(bytes);
    let (result, peak) = peak_during(|| connection.read_group(10));
    drop(connection);
    let _ = server.join();
    assert_eq!(result.unwrap().rows.len(), 1);
    assert!(peak >= 200 * 1024, "{peak}");
}

/// A message announcing 2 GiB costs no more than the bound, and is an
/// error once the server closes.
#[test]
fn an_announced_two_gigabyte_message_allocates_nothing_of_it() {
    for kind in [b'D', b'E', b'T', b'N'] {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 100]);
        let (mut connection, server) = connection_fed(bytes);
        let (result, peak) = peak_during(|| connection.read_group(10));
        drop(connection);
        let _ = server.join();
        assert!(matches!(
            result,
            Err(WireError::Io(_) | WireError::Protocol(_))
        ));
        assert!(
            peak <= allocation_bound(105),
            "{} held {peak}",
            kind as char
        );
    }
}
