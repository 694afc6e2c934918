//! Who a commit names as its author (pure): the field manager that made
//! the change, for a commit of one object's change by a known manager;
//! otherwise the operator, which is the committer of every commit.
//!
//! A manager name is any string a client chose (`kubectl-client-side-apply`,
//! `helm`, `Go-http-client`), so it is made a valid git identity here:
//! nothing that would break the commit header (`<`, `>`, newlines, NUL),
//! and an email of the same name at the made-up domain `gitops-reverser`,
//! which says where it came from and reaches no one.

use super::repo::Identity;

/// The domain of the email of a manager's identity.
pub const EMAIL_DOMAIN: &str = "gitops-reverser";
/// Most characters of a name kept.
const MAX_NAME_CHARS: usize = 128;

/// The identity of field manager `manager`; None if nothing of it is left.
pub fn of_manager(manager: &str) -> Option<Identity> {
    let kept: String = manager
        .chars()
        .filter(|c| !matches!(c, '<' | '>'))
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NAME_CHARS)
        .collect();
    let name = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return None;
    }
    let local: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') { c } else { '-' })
        .collect();
    let local = local.trim_matches(['.', '-']);
    let local = if local.is_empty() { "manager" } else { local };
    Some(Identity { name, email: format!("{local}@{EMAIL_DOMAIN}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::repo::{CommitSpec, FileChange, LocalRepo};

    #[test]
    fn a_manager_becomes_a_valid_identity() {
        let cases = [
            ("kubectl-client-side-apply", Some(("kubectl-client-side-apply", "kubectl-client-side-apply"))),
            ("kube-controller-manager", Some(("kube-controller-manager", "kube-controller-manager"))),
            ("Go-http-client", Some(("Go-http-client", "Go-http-client"))),
            ("evil <root@example.com>\nx", Some(("evil root@example.com x", "evil-root-example.com-x"))),
            ("  spaced\tout  ", Some(("spaced out", "spaced-out"))),
            ("ünïcode", Some(("ünïcode", "n-code"))),
            ("<>", None),
            (" \n ", None),
            ("...", Some(("...", "manager"))),
        ];
        for (manager, expected) in cases {
            let got = of_manager(manager);
            let expected = expected.map(|(name, local)| Identity {
                name: name.to_owned(),
                email: format!("{local}@gitops-reverser"),
            });
            assert_eq!(got, expected, "{manager:?}");
        }
        assert_eq!(of_manager(&"m".repeat(500)).unwrap().name.len(), MAX_NAME_CHARS);
    }

    /// Whatever the manager is called, the commit writer (which refuses
    /// identities that would break the header) takes it.
    #[test]
    fn the_commit_writer_accepts_every_manager_identity() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalRepo::open_or_init(dir.path()).unwrap();
        let operator = Identity { name: "gitops-reverser".into(), email: "noreply@example.com".into() };
        for manager in ["kubectl", "a\0b", "x<y>z", "\u{7f}del", "tab\there", "ünï"] {
            let author = of_manager(manager).unwrap();
            let spec = CommitSpec {
                message: "m",
                author: &author,
                committer: &operator,
                time: None,
                allow_empty: false,
                signer: None,
            };
            let change = FileChange::Write { path: "f".into(), content: manager.as_bytes().to_vec() };
            repo.commit(None, &[change], &spec).unwrap_or_else(|e| panic!("{manager:?}: {e}"));
        }
    }
}
