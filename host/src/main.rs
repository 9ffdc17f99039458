//! The `keel` binary; all of it lives in [`keel_host::cli`].

fn main() -> std::process::ExitCode {
    keel_host::cli::main()
}
