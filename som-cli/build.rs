//! Links `som` with its relative relocations packed (`DT_RELR`) where the C library it is linked
//! against can load them.
//!
//! A position-independent executable carries one relocation per pointer in its read-only data
//! (1.2 MB of them for `som`), which the dynamic loader reads, every page of it, at each start.
//! Packed, they take 14 kB, and an idle `som serve` holds about 2.4 MB less (BENCHMARKS.md).
//!
//! glibc loads packed relocations from 2.36 on, and marks that with the symbol version
//! `GLIBC_ABI_DT_RELR`; a linker that packs them (GNU ld 2.38 or later, lld 15 or later) makes
//! the binary require that version, so an older glibc refuses it with a message rather than
//! running it wrongly. Packing is asked for only when the `libc.so.6` the linker would use has
//! that version: building for a Linux glibc target whose linker reports such a file. Anything
//! else (other targets, a linker that names no such file, an older glibc) links as before, and
//! `SOM_BUILD_PACK_RELOCATIONS=0` turns it off.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOM_BUILD_PACK_RELOCATIONS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let wanted = std::env::var("SOM_BUILD_PACK_RELOCATIONS").map_or(true, |v| v.trim() != "0");
    if wanted && target.ends_with("-linux-gnu") && linked_glibc_loads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the `libc.so.6` that the linker driver (cargo's `RUSTC_LINKER`, or `cc`) finds
/// defines the symbol version `GLIBC_ABI_DT_RELR`.
fn linked_glibc_loads_packed_relocations() -> bool {
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let Ok(out) = Command::new(&linker).arg("-print-file-name=libc.so.6").output() else { return false };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // A driver that finds no such file prints the bare name back.
    if !out.status.success() || !path.starts_with('/') {
        return false;
    }
    println!("cargo:rerun-if-changed={path}");
    let Ok(libc) = std::fs::read(&path) else { return false };
    let version = b"GLIBC_ABI_DT_RELR";
    libc.windows(version.len()).any(|w| w == version)
}
