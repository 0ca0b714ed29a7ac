//! `qiao`: see `qiao --help`. `main` stays synchronous: pingora owns its runtimes.

fn main() -> std::process::ExitCode {
    qiao::cli::main()
}
