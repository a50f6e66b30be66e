//! Thin binary over the library: parse, run, map failures to exit codes.

use clap::Parser;
use joulebench::cli::{self, Cli, Failure};

fn main() {
    joulebench::engine::alloc::configure_from_env();
    let parsed = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            eprintln!("joulebench: {}", cli::clap_error_line(&e));
            std::process::exit(2);
        }
    };
    let code = match run_on_pool(parsed) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("joulebench: error: {}", cli::one_line(&e));
            2
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("joulebench: error: {}", cli::one_line(&e));
            1
        }
    };
    std::process::exit(code);
}

/// Runs the command on a worker thread of rayon's global pool instead of the main thread.
///
/// Every kernel splits its work over rayon. A split issued from outside the pool is injected
/// into it through a lock and a wake-up, and the caller sleeps until it is done: with one
/// thread a pair of context switches per kernel call, hundreds per transformer step. A split
/// issued from a worker is a push onto that worker's own queue. Worker stacks are 64 MiB
/// (candle's backward walks the graph recursively; the main thread had 8 MiB, rayon's default
/// is 2 MiB). The pool has `RAYON_NUM_THREADS` threads (default: one per logical CPU), as
/// before; if it was already built, the command runs on the main thread.
fn run_on_pool(parsed: Cli) -> Result<i32, Failure> {
    let built = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .build_global();
    if built.is_err() {
        return cli::run(parsed);
    }
    let mut out = None;
    rayon::scope(|s| s.spawn(|_| out = Some(cli::run(parsed))));
    out.expect("rayon::scope returns after its job ran")
}
