//! The `sceau` executable: parse, set up logging, run, print one error.
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// mimalloc: the OCSP hot path makes a few short-lived allocations per request (hyper's buffers
// and header map, the response headers); glibc's malloc spent about 8 % of the daemon's CPU
// there under load (perf, benches/ocsp-load.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sceau::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs in files and journald stay plain text.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match sceau::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sceau: {error}");
            // By kind (sysexits.h): 78 a configuration to fix, 69 something to wait for, ...
            error.exit_code()
        }
    }
}
