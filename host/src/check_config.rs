//! `mcp-delegate check-config FILE`: builds the [`Runtime`] exactly as
//! `serve` does (without binding or starting anything) and prints what it
//! found.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::CommonArgs;
use crate::config::display_path;
use crate::runtime::{BuildArgs, Runtime};

pub fn run(file: &Path, common: &CommonArgs) -> ExitCode {
    let args = BuildArgs {
        common,
        local_addr: None,
        reload_log: Default::default(),
    };
    let built = Runtime::build(file, &args, None);
    let (built, diagnostics) = (built.runtime, built.diagnostics);
    for warning in &diagnostics.warnings {
        println!(
            "warning: {}: {}",
            display_path(&warning.path),
            warning.message
        );
    }
    let mut error_count = diagnostics.errors.len();
    for error in &diagnostics.errors {
        println!("error: {}: {}", display_path(&error.path), error.message);
    }
    if let Some(built) = built {
        for missing in &built.registry.modules.unavailable {
            error_count += 1;
            println!(
                "error: delegation.modules.{}: {}",
                missing.name, missing.reason
            );
        }
        if error_count == 0 {
            println!(
                "ok: {} module(s), {} tool(s): {}",
                built.registry.modules.running.len(),
                built.registry.tools().len(),
                built
                    .registry
                    .tools()
                    .iter()
                    .map(|tool| tool.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        built.shutdown_modules_except(None);
    }
    if error_count == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{error_count} error(s)");
        ExitCode::FAILURE
    }
}
