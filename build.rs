//! Builds `sandbox-init`, the freestanding PID 1 every sandbox execs (see
//! `src/init/sandbox-init.c`), and hands its bytes to the crate through `OUT_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/init/sandbox-init.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("sandbox-init");
    // The cc crate picks the C compiler for the target (CC, CC_<target>, cross prefixes).
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler();
    let status = Command::new(compiler.path())
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-tree-loop-distribute-patterns",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-pie",
            "-no-pie",
            "-Os",
            "-Wall",
            "-Werror",
            "-Wl,--build-id=none",
            "-Wl,-z,noexecstack",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building {src} failed");
}
