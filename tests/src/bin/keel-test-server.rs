//! The `keel` command line, built inside this package so that integration
//! tests can spawn it as a real process (see `keel_tests::server`).

fn main() -> std::process::ExitCode {
    keel_host::cli::main()
}
