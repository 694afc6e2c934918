//! The `GIT_ASKPASS` script of one sandbox: it answers git's user name and
//! password prompts only when they name the provider's own origin.
//!
//! In: the provider's origin (`scheme://host[:port]`, as written in its URL)
//! and the user name, if the Secret has one. Out: the script's text, with
//! every prompt it answers baked in as a single-quoted shell word.
//!
//! git builds the prompt in `credential.c` (`credential_ask_one`):
//! `Username for '<scheme>://<host>': `, then, once it has a user name,
//! `Password for '<scheme>://<user>@<host>': ` (never a path: we leave
//! `credential.useHttpPath` off). Since `credential.sanitizePrompt` (git
//! 2.39.6 and 2.48.1, on by default) user and host are percent-encoded
//! (`credential_format`); older git prints them as they are
//! (`credential_describe`). Both spellings are accepted, nothing else: a
//! prompt for another host, port or scheme gets no answer, and git fails.

/// What `strbuf_add_percentencode` escapes besides control and non-ASCII
/// bytes (git's `strbuf.c`, `URL_UNSAFE_CHARS`).
const URL_UNSAFE: &[u8] = b" <>\"%{}|\\^`:?#[]@!$&'()*+,;=";

/// The script for `origin`; without a user name it refuses every prompt.
pub(super) fn script(origin: &str, username: Option<&str>) -> String {
    let (scheme, host) = origin.split_once("://").unwrap_or(("", origin));
    let spellings =
        [(host.to_owned(), username.map(str::to_owned)), (encode_host(host), username.map(encode_user))];
    let mut users = Vec::new();
    let mut passwords = Vec::new();
    if username.is_some() {
        for (host, user) in spellings {
            users.push(format!("Username for '{scheme}://{host}': "));
            passwords.push(match user.filter(|u| !u.is_empty()) {
                Some(user) => format!("Password for '{scheme}://{user}@{host}': "),
                None => format!("Password for '{scheme}://{host}': "),
            });
        }
    }
    let arm = |prompts: &[String], file: &str| -> String {
        let mut prompts: Vec<String> = prompts.iter().map(|p| shell_word(p)).collect();
        prompts.dedup();
        if prompts.is_empty() {
            String::new()
        } else {
            format!("{}) file=\"$dir/{file}\" ;;\n", prompts.join("|"))
        }
    };
    format!(
        "#!/bin/sh\n\
         # git asks \"Username for '<origin>': \" and \"Password for '<origin with user>': \".\n\
         # Answer only this provider's origin, from the 0600 files beside this script;\n\
         # refuse any other prompt, so git fails instead of sending them elsewhere.\n\
         dir=${{0%/*}}\n\
         case \"$1\" in\n\
         {}{}*) exit 1 ;;\n\
         esac\n\
         [ -f \"$file\" ] || exit 1\n\
         IFS= read -r value < \"$file\" # status 1 at EOF without a newline: the value is still read\n\
         printf '%s\\n' \"$value\"\n",
        arm(&users, "username"),
        arm(&passwords, "password"),
    )
}

/// `credential_format`'s spelling of a user name (`STRBUF_ENCODE_SLASH`).
fn encode_user(user: &str) -> String {
    percent_encode(user, |b| b == b'/' || URL_UNSAFE.contains(&b))
}

/// `credential_format`'s spelling of `host[:port]` (`STRBUF_ENCODE_HOST_AND_PORT`).
fn encode_host(host: &str) -> String {
    percent_encode(host, |b| !b.is_ascii_alphanumeric() && !b"-.:[]".contains(&b))
}

fn percent_encode(text: &str, escape: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b <= 0x1f || b >= 0x7f || escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// `text` as one single-quoted shell word: literal, even inside a `case` pattern.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    /// Runs the script for `origin` and `user` (password `pw`) as git would; its answer.
    fn ask(origin: &str, user: Option<&str>, prompt: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("askpass");
        std::fs::write(&path, script(origin, user)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(user) = user {
            std::fs::write(dir.path().join("username"), user).unwrap();
        }
        std::fs::write(dir.path().join("password"), "pw\n").unwrap();
        let output = Command::new(&path).arg(prompt).env_clear().output().unwrap();
        output.status.success().then(|| String::from_utf8(output.stdout).unwrap())
    }

    #[test]
    fn prompts_for_the_own_origin_are_answered_in_both_spellings() {
        let origin = "https://127.0.0.1:8443";
        assert_eq!(
            ask(origin, Some("rw"), "Username for 'https://127.0.0.1:8443': ").as_deref(),
            Some("rw\n")
        );
        assert_eq!(
            ask(origin, Some("rw"), "Password for 'https://rw@127.0.0.1:8443': ").as_deref(),
            Some("pw\n")
        );
        // Sanitized (newer git) and raw (older git) spellings of an odd user and host.
        let (origin, user) = ("https://git_host:1", "a'b@c/*");
        for prompt in [
            "Username for 'https://git_host:1': ",
            "Username for 'https://git%5Fhost:1': ",
            "Password for 'https://a'b@c/*@git_host:1': ",
            "Password for 'https://a%27b%40c%2F%2A@git%5Fhost:1': ",
        ] {
            assert!(ask(origin, Some(user), prompt).is_some(), "{prompt}");
        }
    }

    #[test]
    fn prompts_for_any_other_origin_are_refused() {
        let origin = "https://127.0.0.1:8443";
        for prompt in [
            "Username for 'https://localhost:8443': ",
            "Username for 'https://127.0.0.1:8444': ",
            "Username for 'https://127.0.0.1': ",
            "Username for 'http://127.0.0.1:8443': ",
            "Username for 'https://127.0.0.1:8443.evil.example': ",
            "Username for 'https://127.0.0.1:8443/other.git': ",
            "Password for 'https://rw@localhost:8443': ",
            "Password for 'https://rw@evil@127.0.0.1:8443': ",
            "Password for 'https://127.0.0.1:8443': ",
            "Username: ",
            "Password: ",
            "Enter passphrase for key 'x': ",
            "",
        ] {
            assert_eq!(ask(origin, Some("rw"), prompt), None, "{prompt}");
        }
        // Without a user name (bearer, anonymous, ssh) nothing is answered.
        assert_eq!(ask(origin, None, "Username for 'https://127.0.0.1:8443': "), None);
    }

    #[test]
    fn a_quote_in_a_user_name_cannot_break_out_of_its_word() {
        let text = script("https://h", Some("x' ) exit 0 ;; '"));
        assert_eq!(
            ask("https://h", Some("x' ) exit 0 ;; '"), "Username for 'https://other': "),
            None,
            "{text}"
        );
    }
}
