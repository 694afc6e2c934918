//! Each key combination Flux accepts, and each error, with the key it names.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::*;

const SSH_URL: &str = "ssh://git@example.com/org/repo.git";
const HTTPS_URL: &str = "https://example.com/org/repo.git";
const HTTP_URL: &str = "http://example.com/org/repo.git";

// Bodies start like real keys (the cipher name is what matters); the rest is filler.
const KEY_PLAIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
    QyNTUxOQAAACBfillerfillerfillerfillerfillerfillerfillerfillerfillerAAAA\n\
    -----END OPENSSH PRIVATE KEY-----";
const KEY_ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
    b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABAz/T+DUT\n\
    QyNTUxOQAAACBfillerfillerfillerfillerfillerfillerfillerfillerfillerAAAA\n\
    -----END OPENSSH PRIVATE KEY-----\n";
const KNOWN_HOSTS: &str = "[example.com]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFE3xDMG2otfQJcP0UMLogTF\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const TLS_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

fn read(pairs: &[(&str, &str)], url: &str) -> Result<Credentials, CredentialsError> {
    Credentials::from_secret_data("git-auth", &data(pairs), url)
}

/// Asserts the error names the Secret and `key`, and describes `problem`.
fn assert_key_error(result: Result<Credentials, CredentialsError>, key: &str, problem: &str) {
    let error = result.expect_err("expected an error");
    let message = error.to_string();
    assert_eq!(error.key(), Some(key), "{message}");
    assert!(message.contains("Secret `git-auth`") && message.contains(&format!("`{key}`")), "{message}");
    assert!(message.contains(problem), "{message}");
    assert_eq!(error.reason(), Reason::InvalidConfiguration);
}

#[test]
fn ssh_identity_and_known_hosts() {
    let credentials = read(&[("identity", KEY_PLAIN), ("known_hosts", KNOWN_HOSTS)], SSH_URL).unwrap();
    assert_eq!(credentials.transport(), Transport::Ssh);
    assert_eq!(credentials.secret_name(), Some("git-auth"));
    let Auth::SshKey(key) = credentials.auth() else { panic!("expected an SSH key") };
    assert!(!key.encrypted && key.passphrase.is_none());
    assert!(key.identity.expose().ends_with("-----\n"), "a final newline is added for OpenSSH");
    assert_eq!(key.known_hosts, KNOWN_HOSTS);
}

#[test]
fn ssh_crlf_identity_is_normalised() {
    let crlf = KEY_PLAIN.replace('\n', "\r\n");
    let credentials = read(&[("identity", &crlf), ("known_hosts", KNOWN_HOSTS)], SSH_URL).unwrap();
    let Auth::SshKey(key) = credentials.auth() else { panic!("expected an SSH key") };
    assert!(!key.identity.expose().contains('\r'));
}

#[test]
fn ssh_encrypted_identity_with_passphrase() {
    let pairs = [("identity", KEY_ENCRYPTED), ("known_hosts", KNOWN_HOSTS), ("password", "s3cret\n")];
    let credentials = read(&pairs, SSH_URL).unwrap();
    let Auth::SshKey(key) = credentials.auth() else { panic!("expected an SSH key") };
    assert!(key.encrypted);
    assert_eq!(key.passphrase.as_ref().map(Secret::expose), Some("s3cret"));
}

#[test]
fn ssh_ignores_http_and_tls_keys() {
    let pairs = [
        ("identity", KEY_PLAIN),
        ("known_hosts", KNOWN_HOSTS),
        ("username", "u"),
        ("bearerToken", "t"),
        ("ca.crt", "not a cert"),
    ];
    let credentials = read(&pairs, SSH_URL).unwrap();
    assert!(matches!(credentials.auth(), Auth::SshKey(_)));
    assert!(credentials.tls().ca.is_none());
}

#[test]
fn ssh_errors_name_the_key() {
    assert_key_error(read(&[("known_hosts", KNOWN_HOSTS)], SSH_URL), "identity", "is missing");
    assert_key_error(read(&[("identity", KEY_PLAIN)], SSH_URL), "known_hosts", "is missing");
    assert_key_error(
        read(&[("identity", KEY_PLAIN), ("known_hosts", "")], SSH_URL),
        "known_hosts",
        "is empty",
    );
    assert_key_error(
        read(&[("identity", KEY_PLAIN), ("known_hosts", "# only a comment\n")], SSH_URL),
        "known_hosts",
        "no host key line",
    );
    assert_key_error(
        read(&[("identity", "ssh-ed25519 AAAAC3Nza user@host"), ("known_hosts", KNOWN_HOSTS)], SSH_URL),
        "identity",
        "public key",
    );
    assert_key_error(
        read(&[("identity", "hello"), ("known_hosts", KNOWN_HOSTS)], SSH_URL),
        "identity",
        "PRIVATE KEY",
    );
    assert_key_error(
        read(&[("identity", KEY_ENCRYPTED), ("known_hosts", KNOWN_HOSTS)], SSH_URL),
        "password",
        "is missing",
    );
    let mut not_utf8 = data(&[("known_hosts", KNOWN_HOSTS)]);
    not_utf8.insert("identity".into(), ByteString(vec![0xff, 0xfe]));
    assert_key_error(Credentials::from_secret_data("git-auth", &not_utf8, SSH_URL), "identity", "UTF-8");
}

#[test]
fn legacy_pem_and_pkcs8_encryption_is_detected() {
    assert!(parse::is_encrypted("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"));
    assert!(parse::is_encrypted("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
    assert!(!parse::is_encrypted(TLS_KEY));
    assert!(!parse::is_encrypted(KEY_PLAIN));
    assert!(parse::is_encrypted(KEY_ENCRYPTED));
}

#[test]
fn https_basic_auth() {
    let credentials = read(&[("username", "alice"), ("password", "pw\n")], HTTPS_URL).unwrap();
    let Auth::Basic { username, password } = credentials.auth() else { panic!("expected basic auth") };
    assert_eq!((username.expose(), password.expose()), ("alice", "pw"));
}

#[test]
fn https_username_alone_has_an_empty_password() {
    let credentials = read(&[("username", "ss_token")], HTTPS_URL).unwrap();
    let Auth::Basic { password, .. } = credentials.auth() else { panic!("expected basic auth") };
    assert_eq!(password.expose(), "");
}

#[test]
fn https_bearer_wins_over_basic() {
    let pairs = [("bearerToken", "eyJ.abc.def"), ("username", "alice"), ("password", "pw")];
    let credentials = read(&pairs, HTTPS_URL).unwrap();
    let Auth::Bearer(token) = credentials.auth() else { panic!("expected bearer auth") };
    assert_eq!(token.expose(), "eyJ.abc.def");
}

#[test]
fn https_without_auth_keys_is_anonymous_with_tls() {
    let pairs = [("ca.crt", CERT), ("tls.crt", CERT), ("tls.key", TLS_KEY)];
    let credentials = read(&pairs, HTTPS_URL).unwrap();
    assert!(matches!(credentials.auth(), Auth::Anonymous));
    assert_eq!(credentials.tls().ca.as_deref(), Some(CERT));
    let client = credentials.tls().client.as_ref().expect("client certificate");
    assert_eq!((client.cert.as_str(), client.key.expose()), (CERT, TLS_KEY));
}

#[test]
fn ca_crt_takes_precedence_over_ca_file() {
    let other = CERT.replace("MIIB", "MIIC");
    let credentials = read(&[("ca.crt", CERT), ("caFile", &other)], HTTPS_URL).unwrap();
    assert_eq!(credentials.tls().ca.as_deref(), Some(CERT));
    let credentials = read(&[("ca.crt", ""), ("caFile", &other)], HTTPS_URL).unwrap();
    assert_eq!(credentials.tls().ca.as_deref(), Some(other.as_str()));
}

#[test]
fn plain_http_ignores_tls_keys() {
    let credentials = read(&[("ca.crt", "junk")], HTTP_URL).unwrap();
    assert_eq!(credentials.transport(), Transport::Http);
    assert!(credentials.tls().ca.is_none());
    assert!(matches!(credentials.auth(), Auth::Anonymous));
}

/// Issue 16: a GitProvider sent any Secret's password to an http:// URL.
#[test]
fn plain_http_refuses_credentials_that_would_cross_in_clear() {
    for data in [&[("username", "u"), ("password", "pw-SECRET")][..], &[("bearerToken", "tok-SECRET")][..]] {
        let error = read(data, HTTP_URL).unwrap_err();
        assert!(matches!(error, CredentialsError::CleartextHttp { .. }), "{error}");
        assert!(error.to_string().contains("use an https:// URL"), "{error}");
        assert!(!error.to_string().contains("SECRET"), "a credential in the message: {error}");
    }
}

/// Issue 16: a GitProvider that sets `insecure: true` accepts the risk.
#[test]
fn plain_http_sends_credentials_only_when_the_provider_accepts_it() {
    let secret = data(&[("username", "u"), ("password", "pw")]);
    let credentials = Credentials::from_secret("git-auth", &secret, HTTP_URL, Cleartext::Allow).unwrap();
    assert!(matches!(credentials.auth(), Auth::Basic { .. }));
    let refused = Credentials::from_secret("git-auth", &secret, HTTP_URL, Cleartext::Refuse).unwrap_err();
    assert!(refused.to_string().contains("spec.insecure: true"), "{refused}");
}

#[test]
fn https_errors_name_the_key() {
    assert_key_error(read(&[("password", "pw")], HTTPS_URL), "username", "is missing");
    assert_key_error(read(&[("bearerToken", "")], HTTPS_URL), "bearerToken", "is empty");
    assert_key_error(read(&[("bearerToken", "two words")], HTTPS_URL), "bearerToken", "spaces");
    assert_key_error(read(&[("bearerToken", "a\nb")], HTTPS_URL), "bearerToken", "line break");
    assert_key_error(read(&[("username", "u"), ("password", "a\nb\n")], HTTPS_URL), "password", "line break");
    assert_key_error(read(&[("ca.crt", "junk")], HTTPS_URL), "ca.crt", "BEGIN CERTIFICATE");
    assert_key_error(read(&[("caFile", "junk")], HTTPS_URL), "caFile", "BEGIN CERTIFICATE");
    assert_key_error(read(&[("tls.crt", CERT)], HTTPS_URL), "tls.key", "is missing");
    assert_key_error(read(&[("tls.key", TLS_KEY)], HTTPS_URL), "tls.crt", "is missing");
    assert_key_error(read(&[("tls.crt", "junk"), ("tls.key", TLS_KEY)], HTTPS_URL), "tls.crt", "CERTIFICATE");
    assert_key_error(read(&[("tls.crt", CERT), ("tls.key", "junk")], HTTPS_URL), "tls.key", "PRIVATE KEY");
}

#[test]
fn urls_select_the_transport() {
    assert_eq!(Transport::of_url("SSH://h/r").unwrap(), Transport::Ssh);
    let error = read(&[], "ftp://user:pw@h/r").unwrap_err();
    assert_eq!(error, CredentialsError::UnsupportedUrl { scheme: "ftp".into() });
    assert!(!error.to_string().contains("pw"));
    assert!(matches!(read(&[], "git@github.com:org/repo.git"), Err(CredentialsError::UnsupportedUrl { .. })));
    assert_eq!(Credentials::anonymous(SSH_URL).unwrap_err(), CredentialsError::SecretRequired);
    assert!(matches!(Credentials::anonymous(HTTPS_URL).unwrap().auth(), Auth::Anonymous));
}

#[test]
fn debug_output_and_scrub_never_show_values() {
    let pairs = [("bearerToken", "tok-123456"), ("tls.crt", CERT), ("tls.key", TLS_KEY)];
    let bearer = read(&pairs, HTTPS_URL).unwrap();
    let ssh =
        read(&[("identity", KEY_ENCRYPTED), ("known_hosts", KNOWN_HOSTS), ("password", "pp-98765")], SSH_URL)
            .unwrap();
    let basic = read(&[("username", "ss_user_token"), ("password", "pw-xyz-1")], HTTPS_URL).unwrap();
    for (credentials, values) in [
        (&bearer, vec!["tok-123456", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]),
        (&ssh, vec!["pp-98765", "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABAz/T+DUT"]),
        (&basic, vec!["ss_user_token", "pw-xyz-1"]),
    ] {
        let debug = format!("{credentials:?}");
        let scrubbed = credentials.scrub(&format!("error: {} went wrong", values.join(" and ")));
        for value in values {
            assert!(!debug.contains(value), "{debug}");
            assert!(!scrubbed.contains(value), "{scrubbed}");
        }
        assert!(scrubbed.contains("[redacted]"));
    }
    // A short user name is no secret worth garbling messages for; Debug still hides it.
    let short = read(&[("username", "ro"), ("password", "pw-xyz-1")], HTTPS_URL).unwrap();
    assert_eq!(short.scrub("remote-ro pw-xyz-1"), "remote-ro [redacted]");
    assert!(!format!("{short:?}").contains("\"ro\""));
}
