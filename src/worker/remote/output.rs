//! Parsing git's machine-readable output (pure).
//!
//! In: stdout of `git ls-remote` and `git push --porcelain`. Out: the tip of one
//! ref, and the push status of one ref.

/// The object id `ls-remote` printed for exactly `refname`. ls-remote patterns
/// match ref-name tails, so `refs/heads/x/refs/heads/main` must not count.
pub(super) fn ls_remote_tip(stdout: &str, refname: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let (oid, name) = line.split_once('\t')?;
        (name == refname).then(|| oid.to_owned())
    })
}

/// What `git push --porcelain` reported for one ref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PushStatus {
    /// Created, fast-forwarded, forced, or already equal (flags `*`, ` `, `+`, `=`).
    Updated,
    /// Our expectation of the remote ref was wrong: the lease (`stale info`) or,
    /// defensively, a non-fast-forward refusal.
    Stale,
    /// The server refused the update (`[remote rejected] (reason)`): hooks,
    /// protected branches, or the ref moving between advertisement and update.
    RemoteRejected(String),
    /// Refused for another reason, with git's summary.
    Rejected(String),
}

/// Finds the line `<flag>\t<from>:<to>\t<summary>` whose `<to>` is `refname`.
/// Its presence alone proves git got past the server's ref advertisement.
pub(super) fn push_status(stdout: &str, refname: &str) -> Option<PushStatus> {
    stdout.lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let flag = fields.next()?;
        let (_, to) = fields.next()?.split_once(':')?;
        let summary = fields.next().unwrap_or("").trim().to_owned();
        if to != refname || flag.chars().count() != 1 {
            return None;
        }
        Some(match flag {
            " " | "+" | "*" | "=" | "-" => PushStatus::Updated,
            _ if summary.contains("(stale info)")
                || summary.contains("(fetch first)")
                || summary.contains("(non-fast-forward)") =>
            {
                PushStatus::Stale
            }
            _ if summary.starts_with("[remote rejected]") || summary.starts_with("[remote failure]") => {
                PushStatus::RemoteRejected(summary)
            }
            _ => PushStatus::Rejected(summary),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "refs/heads/main";

    #[test]
    fn ls_remote_matches_the_exact_ref_only() {
        let out = "aaa\trefs/heads/x/refs/heads/main\nbbb\trefs/heads/main\n";
        assert_eq!(ls_remote_tip(out, MAIN).as_deref(), Some("bbb"));
        assert_eq!(ls_remote_tip("", MAIN), None);
        assert_eq!(ls_remote_tip("aaa\trefs/heads/mainline\n", MAIN), None);
    }

    #[test]
    fn porcelain_lines_as_git_prints_them() {
        let line =
            |flag: &str, summary: &str| format!("To ssh://h/r.git\n{flag}\tabc:{MAIN}\t{summary}\nDone\n");
        assert_eq!(push_status(&line("*", "[new branch]"), MAIN), Some(PushStatus::Updated));
        assert_eq!(push_status(&line(" ", "bae8520..56a0f9a"), MAIN), Some(PushStatus::Updated));
        assert_eq!(
            push_status(&line("+", "56a0f9a...f483d43 (forced update)"), MAIN),
            Some(PushStatus::Updated)
        );
        assert_eq!(push_status(&line("=", "[up to date]"), MAIN), Some(PushStatus::Updated));
        assert_eq!(push_status(&line("!", "[rejected] (stale info)"), MAIN), Some(PushStatus::Stale));
        assert_eq!(push_status(&line("!", "[rejected] (fetch first)"), MAIN), Some(PushStatus::Stale));
        assert_eq!(
            push_status(&line("!", "[remote rejected] (pre-receive hook declined)"), MAIN),
            Some(PushStatus::RemoteRejected("[remote rejected] (pre-receive hook declined)".into()))
        );
        assert_eq!(
            push_status(&line("!", "[rejected] (atomic push failed)"), MAIN),
            Some(PushStatus::Rejected("[rejected] (atomic push failed)".into()))
        );
        assert_eq!(push_status(&line("*", "[new branch]"), "refs/heads/other"), None);
        assert_eq!(push_status("error: failed to push some refs\n", MAIN), None);
    }
}
