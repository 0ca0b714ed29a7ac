//! `qiao`: see `qiao --help`. `main` stays synchronous: pingora owns its runtimes.

// glibc's malloc was a quarter of the gateway's own CPU time under load (docs/performance.md);
// mimalloc's thread-local free lists fit the many small allocations of JSON values better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    qiao::cli::main()
}
