//! Lays out the release binary's code so that what lit-mux runs sits together.
//!
//! The kernel maps a program's code in 64 KiB windows here (page-cache folios, fault-around), so
//! one function run from a window makes the whole window resident. Left in the compiler's
//! order, the code a running lit-mux uses (under 4 MiB) is spread over most of the 14 MiB of
//! text, and 10 MiB of it ends up resident. `link/hot-text.order` lists that code (made by
//! `scripts/hot-text-order`); the linker places it first. A symbol the list names that no
//! longer exists is skipped, so a stale list only costs memory, never a build.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.order");
    println!("cargo:rerun-if-env-changed=LIT_MUX_NO_TEXT_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    // The list holds the symbol names of an x86_64 Linux build, and the option is lld's
    // (the linker rustc uses there by default); a linker chosen by the user may not have it.
    let lld_target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS")
            .is_ok_and(|flags| flags.contains("linker") || flags.contains("fuse-ld"));
    if !release || !lld_target || own_linker || env::var_os("LIT_MUX_NO_TEXT_ORDER").is_some() {
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot-text.order");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=lit-mux=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=lit-mux=-Wl,--no-warn-symbol-ordering");
    }
}
