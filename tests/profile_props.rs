//! Property tests of the profile loader: arbitrary input gives a profile or a typed error
//! with a position inside the input, never a panic.

use proptest::prelude::*;
use sandbox_runner::{Profile, ProfileError};

fn check(text: &str) {
    match Profile::from_toml_str(text, "p.toml") {
        Ok(_) => {}
        Err(ProfileError::Parse {
            line,
            column,
            message,
            ..
        }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line} of {text:?}"
            );
            assert!(column >= 1, "{column}");
            assert!(!message.is_empty());
        }
        Err(ProfileError::Invalid { message, .. }) => assert!(!message.is_empty()),
        // `extends` naming a file that does not exist.
        Err(ProfileError::Read { path, .. }) => assert!(text.contains("extends"), "{path:?}"),
        Err(e) => panic!("unexpected error kind for {text:?}: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        check(&text);
    }

    #[test]
    fn schema_shaped_input_never_panics(
        key in prop::sample::select(vec![
            "hostname", "stdin", "kill_grace", "cwd", "new_session", "pass_fds",
            "private_root", "detach", "keep_capabilities", "extends", "bogus",
        ]),
        value in prop_oneof![
            Just("\"sandbox\"".to_string()),
            Just("true".to_string()),
            Just("[3, 4]".to_string()),
            Just("[\"CAP_CHOWN\"]".to_string()),
            Just("\"2s\"".to_string()),
            Just("\"default\"".to_string()),
            "-?[0-9]{1,20}",
            "\"[a-zA-Z0-9/ .=-]{0,30}\"",
        ],
        table in prop::sample::select(vec!["", "[namespaces]\n", "[env]\n", "[env.set]\n", "[sockets]\n"]),
    ) {
        check(&format!("{table}{key} = {value}\n"));
    }

    #[test]
    fn mount_entries_never_panic(
        kind in prop::sample::select(vec!["ro-bind", "bind", "tmpfs", "proc", "dev", "dir", "symlink", "mirror", "nfs"]),
        field in prop::sample::select(vec!["src", "dst", "path", "size", "mode", "optional", "pts", "other"]),
        value in "\"[a-zA-Z0-9/.]{0,20}\"",
    ) {
        check(&format!("[[mount]]\ntype = \"{kind}\"\n{field} = {value}\n"));
    }
}
