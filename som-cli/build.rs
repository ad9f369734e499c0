//! Links `som` with its relative relocations packed (`DT_RELR`) where the C library can load them.
//!
//! A position-independent executable carries one relocation per pointer in its read-only data
//! (1.2 MB of them for `som`), which the dynamic loader reads, every page of it, at each start.
//! Packed, they take 14 kB, and an idle `som serve` holds about 2.5 MB less (BENCHMARKS.md).
//! glibc loads packed relocations from 2.36 on, and the linker makes such a binary require that
//! version, so an older C library refuses it with a clear message instead of running it wrongly.
//! Packing is asked for only when building for this machine on a glibc that has it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if target == host && target.ends_with("-linux-gnu") && glibc_has_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`, e.g. `glibc 2.36`) is 2.36 or later.
fn glibc_has_packed_relocations() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
