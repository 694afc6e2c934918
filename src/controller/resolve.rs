//! Provider resolution (pure): what a GitTarget's providerRef resolves to,
//! whether its branch is allowed, and the problems a user must fix.

use kube::api::DynamicObject;

use std::sync::Arc;

use crate::api::{GitProvider, GitTargetSpec, Reason, SigningFormat};
use crate::status::Problem;
use crate::worker::core::TargetPolicy;
use crate::worker::message::template::Template;
use crate::worker::policy::PushPolicy;
use crate::worker::signing::Format;

/// URL, credentials Secret and write policy, whichever kind supplied them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    /// "GitProvider x" or "GitRepository x", for messages.
    pub describe: String,
    pub url: String,
    pub secret: Option<String>,
    pub allowed_branches: Vec<String>,
    pub push: PushPolicy,
    /// The provider accepts sending credentials over http://.
    pub insecure: bool,
    /// The Secret with the commit signing key, and the format if set.
    pub signing: Option<SigningRef>,
}

/// Where a provider's commit signing key is (`spec.signingKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningRef {
    pub secret: String,
    pub format: Option<Format>,
}

pub fn from_git_provider(provider: &GitProvider) -> ProviderConfig {
    ProviderConfig {
        describe: format!("GitProvider {:?}", provider.metadata.name.as_deref().unwrap_or_default()),
        url: provider.spec.url.clone(),
        secret: Some(provider.spec.secret_ref.name.clone()),
        allowed_branches: provider.spec.allowed_branches.clone(),
        push: PushPolicy::from_spec(provider.spec.push.as_ref()),
        insecure: provider.spec.insecure,
        signing: provider.spec.signing_key.as_ref().map(|key| SigningRef {
            secret: key.secret_ref.name.clone(),
            format: key.format.map(|format| match format {
                SigningFormat::Ssh => Format::Ssh,
                SigningFormat::Openpgp => Format::OpenPgp,
            }),
        }),
    }
}

/// How a target's commits are written: its own message template, else its
/// provider's (`provider` names it), parsed now so that a bad one is a
/// condition naming the field, never a failed commit; and its prune policy.
pub fn commit_policy(
    spec: &GitTargetSpec,
    provider_template: Option<&str>,
    provider: &str,
) -> Result<TargetPolicy, Problem> {
    let own = spec.commit.as_ref().and_then(|c| c.message_template.as_deref());
    let (text, field) = match own {
        Some(text) => (Some(text), "spec.commit.messageTemplate of this GitTarget".to_owned()),
        None => (provider_template, format!("spec.commit.messageTemplate of {provider}")),
    };
    let template = text.map(Template::parse).transpose().map_err(|error| {
        Problem::new(
            Reason::InvalidConfiguration,
            format!("{field} {error}; fix it, or remove it for the default messages"),
        )
    })?;
    Ok(TargetPolicy { template: template.map(Arc::new), prune: spec.prune })
}

/// Reads Flux's `spec.url` and `spec.secretRef.name`. Flux has no branch
/// allow-list or push batching, so the defaults apply.
pub fn from_flux_git_repository(repository: &DynamicObject) -> Result<ProviderConfig, Problem> {
    let name = repository.metadata.name.as_deref().unwrap_or_default();
    let spec = repository.data.get("spec");
    let url = spec.and_then(|s| s.get("url")).and_then(|u| u.as_str()).filter(|u| !u.is_empty());
    let Some(url) = url else {
        return Err(Problem::new(
            Reason::InvalidConfiguration,
            format!("Flux GitRepository {name:?} has no spec.url"),
        ));
    };
    let secret = spec
        .and_then(|s| s.get("secretRef"))
        .and_then(|r| r.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned);
    Ok(ProviderConfig {
        describe: format!("GitRepository {name:?}"),
        url: url.to_owned(),
        secret,
        allowed_branches: Vec::new(),
        push: PushPolicy::default(),
        // Flux's GitRepository has no such switch: credentials need https.
        insecure: false,
        // Flux signs in ImageUpdateAutomation, not in the GitRepository.
        signing: None,
    })
}

/// The URL rules every provider kind obeys (no credentials in it, no user
/// or host that reads as an option, a scheme we can push to), so a Flux
/// GitRepository is held to what the GitProvider schema enforces. The
/// message names the provider but never quotes its URL, which may hold a
/// password.
pub fn check_url(provider: &ProviderConfig) -> Result<(), Problem> {
    crate::worker::remote::check_url(&provider.url).map_err(|reason| {
        Problem::new(
            Reason::InvalidConfiguration,
            format!("{} has a URL this operator refuses: {reason}", provider.describe),
        )
    })
}

/// Where the credentials and commits may go: only to a host in
/// `allowed_hosts` when the operator was given any. (Over http:// a
/// password or token goes only with the provider's `insecure: true`; the
/// credentials layer refuses it otherwise.)
pub fn check_host(provider: &ProviderConfig, allowed_hosts: &[String]) -> Result<(), Problem> {
    if allowed_hosts.is_empty() {
        return Ok(());
    }
    let host = url_host(&provider.url).unwrap_or_default().to_ascii_lowercase();
    if allowed_hosts.iter().any(|pattern| glob_matches(&pattern.to_ascii_lowercase(), &host)) {
        return Ok(());
    }
    Err(Problem::new(
        Reason::InvalidConfiguration,
        format!(
            "the host {host:?} of {} is not one this operator may write to (its --allowed-git-hosts); \
             use an allowed host, or ask the cluster's administrators to allow it",
            provider.describe
        ),
    ))
}

/// The host of `scheme://[user@]host[:port]/path`, without brackets for IPv6.
fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map(|(host, _)| host),
        None => host_port.split(':').next(),
    }
}

/// Checks the branch against `allowedBranches` globs, where `*` matches
/// within one `/`-separated segment and `**` matches across segments.
pub fn check_branch(branch: &str, provider: &ProviderConfig) -> Result<(), Problem> {
    if provider.allowed_branches.is_empty()
        || provider.allowed_branches.iter().any(|p| glob_matches(p, branch))
    {
        return Ok(());
    }
    Err(Problem::new(
        Reason::BranchNotAllowed,
        format!(
            "branch {branch:?} is not in allowedBranches {:?} of {}; change spec.branch or the allow-list",
            provider.allowed_branches, provider.describe
        ),
    ))
}

/// `*` matches within a path segment, `**` across segments. Runs the
/// pattern as a set of positions over the text (no backtracking), so a
/// hostile pattern costs at most pattern × text steps, never exponential.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    glob_run(pattern, text).0
}

/// [`glob_matches`], and the steps it took: one per (pattern position,
/// text byte) looked at, so the tests can show the bound.
fn glob_run(pattern: &str, text: &str) -> (bool, usize) {
    #[derive(Clone, Copy)]
    enum Token {
        Byte(u8),
        Star,
        AnyDepth,
    }
    let bytes = pattern.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match &bytes[i..] {
            [b'*', b'*', ..] => {
                tokens.push(Token::AnyDepth);
                i += 2;
            }
            [b'*', ..] => {
                tokens.push(Token::Star);
                i += 1;
            }
            [byte, ..] => {
                tokens.push(Token::Byte(*byte));
                i += 1;
            }
            [] => unreachable!("i < len"),
        }
    }
    let mut steps = 0;
    // at[k]: the first k tokens can match the text read so far.
    let mut at = vec![false; tokens.len() + 1];
    let mut next = vec![false; tokens.len() + 1];
    let close = |at: &mut [bool]| {
        for k in 0..tokens.len() {
            if at[k] && matches!(tokens[k], Token::Star | Token::AnyDepth) {
                at[k + 1] = true;
            }
        }
    };
    at[0] = true;
    close(&mut at);
    for &c in text.as_bytes() {
        next.fill(false);
        let mut alive = false;
        for (k, token) in tokens.iter().enumerate() {
            steps += 1;
            if !at[k] {
                continue;
            }
            match token {
                Token::Byte(b) if *b == c => next[k + 1] = true,
                Token::Star if c != b'/' => next[k] = true,
                Token::AnyDepth => next[k] = true,
                _ => continue,
            }
            alive = true;
        }
        if !alive {
            return (false, steps);
        }
        close(&mut next);
        std::mem::swap(&mut at, &mut next);
    }
    (at[tokens.len()], steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(allowed: &[&str]) -> ProviderConfig {
        ProviderConfig {
            describe: "GitProvider \"p\"".into(),
            url: "ssh://h/r".into(),
            secret: None,
            allowed_branches: allowed.iter().map(|s| s.to_string()).collect(),
            push: PushPolicy::default(),
            insecure: false,
            signing: None,
        }
    }

    fn at(url: &str) -> ProviderConfig {
        ProviderConfig { url: url.into(), ..provider(&[]) }
    }

    #[test]
    fn allowed_git_hosts_take_effect_only_when_set() {
        let hosts = ["*.example.com".to_owned(), "git.internal".to_owned()];
        for url in ["ssh://git@GIT.example.com:2222/r", "https://a.b.example.com/r", "https://git.internal/r"]
        {
            assert!(check_host(&at(url), &hosts).is_ok(), "{url}");
        }
        for url in ["ssh://git@evil.com/r", "https://example.com.evil.com/r", "https://git.internal.evil/r"] {
            let refused = check_host(&at(url), &hosts).unwrap_err();
            assert!(refused.message.contains("--allowed-git-hosts"), "{url}: {refused:?}");
        }
        assert!(check_host(&at("ssh://git@anywhere.org/r"), &[]).is_ok());
    }

    /// One table for both kinds: a Flux GitRepository's URL obeys the
    /// rules the GitProvider schema and the remote layer hold.
    #[test]
    fn provider_urls_follow_one_set_of_rules_whatever_their_kind() {
        let flux = |url: &str| {
            let repo: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "flux-system", "namespace": "ns"},
                "spec": {"url": url, "secretRef": {"name": "flux-key"}}
            }))
            .unwrap();
            from_flux_git_repository(&repo).unwrap()
        };
        let cases = [
            ("ssh://git@h/r.git", None),
            ("https://h/r.git", None),
            ("http://h/r.git", None),
            ("ssh://git:s3cret@h/r.git", Some("password")),
            ("https://u:s3cret@h/r.git", Some("password")),
            ("http://u:s3cret@h/r.git", Some("password")),
            ("https://s3cret@h/r.git", Some("user information")),
            ("ssh://-oProxyCommand=s3cret@h/r", Some("starting with `-`")),
            ("ssh://-oProxyCommand=s3cret/r", Some("no valid host")),
            ("https://-s3cret/r", Some("no valid host")),
            ("git@h:s3cret.git", Some("unsupported")),
            ("file:///s3cret", Some("unsupported")),
        ];
        for (url, refused) in cases {
            for provider in [at(url), flux(url)] {
                match (check_url(&provider), refused) {
                    (Ok(()), None) => {}
                    (Err(problem), Some(why)) => {
                        assert_eq!(problem.reason, Reason::InvalidConfiguration);
                        assert!(problem.message.contains(why), "{url}: {}", problem.message);
                        assert!(problem.message.contains(&provider.describe), "{}", problem.message);
                        assert!(!problem.message.contains("s3cret"), "URL echoed: {}", problem.message);
                    }
                    (result, _) => panic!("{url} ({}): {result:?}", provider.describe),
                }
            }
        }
    }

    #[test]
    fn hosts_are_read_past_user_port_and_brackets() {
        assert_eq!(url_host("ssh://git@h.example:22/r"), Some("h.example"));
        assert_eq!(url_host("https://[::1]:8443/r"), Some("::1"));
        assert_eq!(url_host("https://h"), Some("h"));
        assert_eq!(url_host("h/r"), None);
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        assert!(glob_matches("main", "main"));
        assert!(glob_matches("release/*", "release/1.0"));
        assert!(!glob_matches("release/*", "release/1.0/hotfix"));
        assert!(glob_matches("release/**", "release/1.0/hotfix"));
        assert!(glob_matches("audit-*", "audit-prod"));
        assert!(!glob_matches("audit-*", "main"));
    }

    #[test]
    fn stars_match_empty_runs_and_patterns_anchor_both_ends() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("**", "a/b/c"));
        assert!(!glob_matches("*", "a/b"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(!glob_matches("a*b*c", "aXbYcZ"));
        assert!(glob_matches("**/x", "a/b/x"));
        assert!(!glob_matches("release", "release/1"));
    }

    /// Issue 16: a backtracking matcher pinned the controller on every
    /// replica with this pattern; it is now bounded by pattern × text.
    #[test]
    fn a_pathological_pattern_is_answered_at_once() {
        let pattern = format!("{}b", "**a".repeat(40));
        let text = "a".repeat(250);
        let started = std::time::Instant::now();
        assert!(!glob_matches(&pattern, &text));
        assert!(glob_matches(&pattern, &format!("{text}b")));
        // Exponential backtracking would take longer than the age of the universe.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    /// The obvious backtracking matcher, as the reference on short inputs.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        match pattern {
            [] => text.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            [b'*', rest @ ..] => (0..=text.len())
                .take_while(|&i| i == 0 || text[i - 1] != b'/')
                .any(|i| reference(rest, &text[i..])),
            [c, rest @ ..] => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    /// Issue 16, acceptance 2 (the property): on 5,000 seeded random cases
    /// the matcher agrees with backtracking, and on 2,000 long ones (names
    /// up to 255 bytes, patterns up to 255) it never takes more than one
    /// step per (pattern byte, name byte): linear in the name. The time of
    /// the worst pattern on a 255-byte name is in `cargo bench --bench route`.
    #[test]
    fn matching_agrees_with_backtracking_and_stays_linear() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..5_000 {
            let pattern: Vec<u8> = (0..next(12)).map(|_| b"ab/*"[next(4)]).collect();
            let text: Vec<u8> = (0..next(12)).map(|_| b"ab/"[next(3)]).collect();
            let (p, t) = (String::from_utf8(pattern).unwrap(), String::from_utf8(text).unwrap());
            assert_eq!(
                glob_matches(&p, &t),
                reference(p.as_bytes(), t.as_bytes()),
                "case {case}: {p:?} on {t:?}"
            );
        }
        let mut worst_ratio = 0.0_f64;
        for _ in 0..2_000 {
            let pattern: String = (0..1 + next(255)).map(|_| ["a", "*", "**", "/"][next(4)]).collect();
            let text: String = (0..1 + next(255)).map(|_| ['a', 'b', '/'][next(3)]).collect();
            let (_, steps) = glob_run(&pattern, &text);
            assert!(
                steps <= pattern.len() * text.len(),
                "{steps} steps for {} × {}",
                pattern.len(),
                text.len()
            );
            worst_ratio = worst_ratio.max(steps as f64 / (pattern.len() * text.len()) as f64);
        }
        let worst = format!("{}b", "**a".repeat(84));
        let (matched, steps) = glob_run(&worst, &"a".repeat(255));
        assert!(!matched);
        assert!(steps <= worst.len() * 255, "{steps}");
        println!("steps / (pattern × name) at most {worst_ratio:.2}; the worst pattern: {steps} steps");
    }

    #[test]
    fn a_branch_outside_the_allow_list_is_refused_with_a_fix() {
        assert!(check_branch("anything", &provider(&[])).is_ok());
        assert!(check_branch("audit/x", &provider(&["main", "audit/*"])).is_ok());
        let problem = check_branch("dev", &provider(&["main"])).unwrap_err();
        assert_eq!(problem.reason, Reason::BranchNotAllowed);
        assert!(
            problem.message.contains("\"dev\"") && problem.message.contains("allowedBranches"),
            "{}",
            problem.message
        );
    }

    fn target_spec(template: Option<&str>, prune: &str) -> GitTargetSpec {
        let mut spec = serde_json::json!({"providerRef": {"name": "p"}, "baseFolder": "f", "prune": prune});
        if let Some(template) = template {
            spec["commit"] = serde_json::json!({"messageTemplate": template});
        }
        serde_json::from_value(spec).unwrap()
    }

    /// A bad template is a condition that names the field and how to fix
    /// it, whoever set it; a target's own template replaces its provider's.
    #[test]
    fn commit_policies_are_parsed_once_and_bad_templates_are_problems() {
        let provider = "GitProvider \"p\"";
        let rendered =
            |policy: &TargetPolicy| policy.template.as_ref().map(|t| t.render(|f| Some(f.name().to_owned())));
        let own =
            commit_policy(&target_spec(Some("{{ .Kind }}"), "Never"), Some("{{ .Name }}"), provider).unwrap();
        assert_eq!((rendered(&own).as_deref(), own.prune), (Some("Kind"), crate::api::Prune::Never));
        let inherited = commit_policy(&target_spec(None, "Always"), Some("{{ .Name }}"), provider).unwrap();
        assert_eq!(rendered(&inherited).as_deref(), Some("Name"));
        assert_eq!(
            commit_policy(&target_spec(None, "Always"), None, provider).unwrap(),
            TargetPolicy::default()
        );

        let problem = commit_policy(&target_spec(Some("{{ .kind }}"), "Always"), None, provider).unwrap_err();
        assert_eq!(problem.reason, Reason::InvalidConfiguration);
        for says in
            ["spec.commit.messageTemplate of this GitTarget", "unknown field {{ .kind }}", ".Kind", "fix it"]
        {
            assert!(problem.message.contains(says), "{says:?} in {}", problem.message);
        }
        let problem = commit_policy(&target_spec(None, "Always"), Some("{{ .Kind"), provider).unwrap_err();
        assert!(
            problem.message.starts_with("spec.commit.messageTemplate of GitProvider \"p\" opens an action"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn flux_repositories_give_url_and_secret() {
        let repo: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": "ns"},
            "spec": {"url": "ssh://git@h/r.git", "secretRef": {"name": "flux-key"}, "interval": "1m"}
        }))
        .unwrap();
        let config = from_flux_git_repository(&repo).unwrap();
        assert_eq!(config.url, "ssh://git@h/r.git");
        assert_eq!(config.secret.as_deref(), Some("flux-key"));
        let mut no_url = repo.clone();
        no_url.data["spec"].as_object_mut().unwrap().remove("url");
        assert_eq!(from_flux_git_repository(&no_url).unwrap_err().reason, Reason::InvalidConfiguration);
    }
}
