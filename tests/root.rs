//! The private root and the privileges left to the plugin, as root: what the plugin can
//! and cannot see or change. Each denial is a command run inside the sandbox.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;

#[test]
fn host_secrets_and_homes_are_not_visible() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let before = HostState::take();
    let script = format!(
        "for p in /etc/shadow /etc/gshadow /etc/ssh /etc/ssl/private /root /home {home}; do \
           if [ -e $p ]; then echo VISIBLE $p; fi; done; echo done"
    );
    let o = run(&["--", "sh", "-c", &script]);
    before.assert_unchanged();
    assert_eq!(stdout(&o), "done\n", "{}", stderr(&o));
    // The same files exist on the host, so the check above means something.
    assert!(std::path::Path::new("/etc/shadow").exists());
}

#[test]
fn usr_is_read_only_and_cannot_be_remounted() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = run(&[
        "--",
        "sh",
        "-c",
        "touch /usr/sandbox-probe 2>&1; echo rc=$?",
    ]);
    assert!(
        stdout(&o).contains("Read-only file system"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("rc=1"), "{}", stdout(&o));
    for cmd in [
        "mount -o remount,rw /usr",
        "mount -o remount,rw,bind /usr",
        "mount -o remount,rw /",
        "mount -t tmpfs none /mnt",
    ] {
        let o = run(&["--", "sh", "-c", &format!("{cmd} 2>&1; echo rc=$?")]);
        let out = stdout(&o);
        assert!(
            !out.contains("rc=0"),
            "`{cmd}` succeeded inside the sandbox: {out}"
        );
    }
    let o = run(&[
        "--",
        "sh",
        "-c",
        "touch /usr/sandbox-probe 2>/dev/null; echo rc=$?",
    ]);
    assert_eq!(stdout(&o), "rc=1\n");
    assert!(!std::path::Path::new("/usr/sandbox-probe").exists());
    before.assert_unchanged();
}

#[test]
fn tmp_is_empty_private_and_size_limited() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host_file = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let before = HostState::take();
    let o = run(&[
        "--",
        "sh",
        "-c",
        "ls -A /tmp; echo inside > /tmp/written-inside; cat /tmp/written-inside; \
         head -c 80M /dev/zero > /tmp/big 2>/dev/null; echo fill=$?",
    ]);
    before.assert_unchanged();
    assert_eq!(stdout(&o), "inside\nfill=1\n", "{}", stderr(&o));
    assert!(host_file.path().exists());
    assert!(!std::path::Path::new("/tmp/written-inside").exists());
}

#[test]
fn program_outside_the_mounts_is_reachable_read_only() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let prog = dir.path().join("plugin.sh");
    std::fs::write(
        &prog,
        "#!/bin/sh\necho from-plugin; echo x >> \"$0\" 2>/dev/null || echo ro\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = HostState::take();
    let o = run(&["--", prog.to_str().unwrap()]);
    before.assert_unchanged();
    assert_eq!(stdout(&o), "from-plugin\nro\n", "{}", stderr(&o));
    // Only the program itself is shown, not its directory.
    let other = dir.path().join("secret");
    std::fs::write(&other, "s").unwrap();
    let o = run(&["--", "sh", "-c", &format!("cat {} 2>&1", other.display())]);
    assert!(stdout(&o).contains("No such file"), "{}", stdout(&o));
}

#[test]
fn cli_binds_and_tmpfs_apply_in_order() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(dir.path().join("f"), "host-data\n").unwrap();
    // Root inside is an unprivileged host id: a shared directory must let it write.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = dir.path().to_str().unwrap();
    let before = HostState::take();
    let o = run(&[
        "--tmpfs", "/data", "--ro-bind", d, "/data/ro", "--bind", d, "/data/rw", "--", "sh", "-c",
        "cat /data/ro/f; echo a > /data/ro/n 2>/dev/null || echo ro-refused; echo b > /data/rw/n && echo rw-ok; \
         mount -o remount,rw,bind /data/ro 2>/dev/null || echo remount-refused",
    ]);
    before.assert_unchanged();
    assert_eq!(
        stdout(&o),
        "host-data\nro-refused\nrw-ok\nremount-refused\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n")).unwrap(),
        "b\n"
    );
}

#[test]
fn bad_mount_entries_name_the_entry_and_start_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = run(&["--ro-bind", "/no/such/src", "/x", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("ro-bind /no/such/src -> /x") && stderr(&o).contains("No such file"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--bind", "/tmp/../etc", "/x", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("'..'"), "{}", stderr(&o));
    // A mount point below a read-only bind cannot be created: the failing step names it.
    let o = run(&["--tmpfs", "/usr/lib/sandbox-x", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("step 'mount' (tmpfs /usr/lib/sandbox-x)"),
        "{}",
        stderr(&o)
    );
    before.assert_unchanged();
}

/// The capability sets and no_new_privs of the plugin, from /proc/self/status.
fn status_fields(profile: Option<&str>) -> String {
    let mut args = vec![];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend(["--", "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"]);
    stdout(&run(&args))
}

#[test]
fn plugin_has_no_capabilities_and_no_new_privs() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = status_fields(None);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set} not empty:\n{out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("caps.toml");
    std::fs::write(
        &p,
        "extends = \"default\"\nkeep_capabilities = [\"CAP_NET_BIND_SERVICE\"]\n",
    )
    .unwrap();
    let out = status_fields(Some(p.to_str().unwrap()));
    // CAP_NET_BIND_SERVICE is capability 10: bit 0x400.
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000400")),
            "{set}:\n{out}"
        );
    }
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    std::fs::write(&p, "keep_capabilities = [\"CAP_NOT_A_THING\"]\n").unwrap();
    let o = run(&["--profile", p.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not a capability name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_init_cannot_be_ptraced_or_read() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // PID 1 is a copy of the host process: its memory must stay out of reach.
    let o = run(&["--", "sh", "-c", "head -c 16 /proc/1/mem >/dev/null 2>&1; echo mem=$?; cat /proc/1/environ >/dev/null 2>&1; echo env=$?"]);
    assert_eq!(stdout(&o), "mem=1\nenv=1\n", "{}", stderr(&o));
}

#[test]
fn plugin_runs_as_the_profiles_uid_and_gid() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("user.toml");
    std::fs::write(
        &p,
        "extends = \"default\"\n[user]\nuid = 65534\ngid = 65534\n",
    )
    .unwrap();
    let before = HostState::take();
    let o = run(&[
        "--profile",
        p.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "id -u; id -g; grep -E '^(Groups|CapEff|CapPrm|CapBnd|CapAmb)' /proc/self/status; \
         touch /tmp/mine && echo tmp-ok; python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 80))' 2>/dev/null || echo port80-refused",
    ]);
    before.assert_unchanged();
    let out = stdout(&o);
    assert!(
        out.starts_with("65534\n65534\nGroups:\t \n"),
        "{out}{}",
        stderr(&o)
    );
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert!(out.contains(&format!("{set}:\t0000000000000000")), "{out}");
    }
    assert!(out.contains("tmp-ok\nport80-refused\n"), "{out}");
    // A kept capability survives the uid change (ambient set) and works.
    std::fs::write(
        &p,
        "extends = \"default\"\nkeep_capabilities = [\"CAP_NET_BIND_SERVICE\"]\n[user]\nuid = 65534\ngid = 65534\n",
    )
    .unwrap();
    let o = run(&[
        "--profile",
        p.to_str().unwrap(),
        "--",
        "python3",
        "-c",
        "import os, socket; socket.socket().bind(('127.0.0.1', 80)); print(os.getuid(), 'bound')",
    ]);
    assert_eq!(stdout(&o), "65534 bound\n", "{}", stderr(&o));
}
