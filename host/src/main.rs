//! `mcp-delegate`: an MCP server that runs agents' SQL as the calling user's
//! own database role, through delegation-module plugins. See
//! docs/ARCHITECTURE.md for the code map.

mod audit;
mod auth;
mod builtin;
mod call;
mod check_config;
mod cli;
mod config;
mod db_setup;
#[cfg(test)]
mod fuzz;
mod http;
mod json;
mod logging;
mod mcp;
mod metrics;
mod plugins;
mod registry;
mod reload;
mod runtime;
mod serve;
mod status;
mod trace;

use std::process::ExitCode;

use clap::Parser;

/// glibc gives every thread that allocates its own arena; with one blocking
/// thread per concurrent tool call that multiplies resident memory for no
/// speed (measured: peak 64 → 47 MiB at 64 clients). Two arenas suffice.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // mallopt is an FFI call; see the SAFETY note.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Results and messages of megabytes are allocated and freed per
        // call: a fixed threshold keeps them in their own mappings, given
        // back when freed. (glibc's default threshold grows to 32 MiB after
        // the first large free, and then keeps such blocks on the heap.)
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Every connection is a file descriptor, and many systems start
/// processes with a soft limit of 1024: raise it to the hard limit so
/// that `mcp.maxConnections` (default 4096), not the soft limit, bounds
/// the connections served.
#[cfg(unix)]
#[allow(unsafe_code)] // getrlimit/setrlimit are FFI calls; see the SAFETY note.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct passed by pointer,
    // which lives on this stack frame for the duration of the call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_file_limit();
    let cli = cli::Cli::parse();
    logging::init();
    match cli.command {
        Some(cli::Command::CheckConfig { file, common }) => check_config::run(&file, &common),
        Some(cli::Command::DbSetup {
            module,
            config,
            roles,
            common,
        }) => db_setup::run(&config, &module, &roles, &common),
        None => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(serve::run(cli.serve)),
            Err(err) => {
                eprintln!("cannot start the async runtime: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
