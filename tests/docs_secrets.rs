//! Acceptance 6 of issue 17: docs/encrypted-secrets.md is a walkthrough
//! that works. Its examples fit together (the Kustomization reads the
//! GitTarget's folder with the Secret the shell commands make), the real
//! API server accepts every YAML block (the operator's CRDs, Flux's
//! Kustomization CRD from kustomize-controller), and followed for real,
//! its commands (age-keygen, kubectl, sops, git) do what the page says:
//! the operator writes a Secret that `sops --decrypt`, with the key read
//! back from the `sops-age` Secret, turns into the live data, also after
//! `kubectl kustomize` as Flux builds the folder; a missing `recipientsFrom`
//! source and a target without encryption show the conditions the page
//! names; the signing key in the GitProvider's status verifies the commits.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use support::fixtures::{self, Access};
use support::git::{Auth, GitClient};
use support::operator::Operator;
use support::{TestNamespace, wait_for};

const PAGE: &str = "docs/encrypted-secrets.md";
/// The public key the page's examples use; the walkthrough puts its own in.
const EXAMPLE_KEY: &str = "age12ygnj245djkrndx8gcpk96fg0gjallnj4peg25rt2f5e9aqcpcss9t8pca";
/// The namespaces the page uses: the mirrored one and Flux's.
const SHOP: &str = "shop";
const FLUX: &str = "flux-system";
const WAIT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "s3cr3t-from-the-docs-walkthrough";
const WITHHELD: &str = "Secrets were not written because no encryption is configured";

fn page() -> String {
    std::fs::read_to_string(support::repo_root().join(PAGE)).expect("read the page")
}

/// The bodies of the page's ```LANG blocks.
fn blocks(page: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    page.split(&fence).skip(1).map(|rest| rest.split("\n```").next().unwrap().to_owned()).collect()
}

/// The page's YAML examples, each document sorted by what it is.
struct Examples {
    target: Value,
    rule: Value,
    /// The `spec:` fragment that takes the recipients from a ConfigMap.
    recipients_from: Value,
    configmap: Value,
    kustomization: Value,
    /// The excerpt of a written file.
    file: Value,
    /// The `followSopsConfig` fragment.
    follow: Value,
    /// The `.sops.yaml` example, as text.
    sops_config: String,
}

impl Examples {
    fn read(page: &str) -> Self {
        let mut found: [Option<Value>; 8] = Default::default();
        let mut sops_config = None;
        for block in blocks(page, "yaml") {
            for text in block.split("\n---\n") {
                let doc: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
                let slot = match (doc["kind"].as_str(), doc.get("sops").is_some()) {
                    (Some("GitTarget"), _) => 0,
                    (Some("WatchRule"), _) => 1,
                    (None, _) if doc["spec"]["encryption"]["followSopsConfig"] == true => 6,
                    (None, _) if doc.get("spec").is_some() => 2,
                    (None, _) if doc.get("creation_rules").is_some() => {
                        sops_config = Some(text.to_owned());
                        7
                    }
                    (Some("ConfigMap"), _) => 3,
                    (Some("Kustomization"), _) => 4,
                    (Some("Secret"), true) => 5,
                    _ => panic!("an example the test does not know:\n{text}"),
                };
                assert!(found[slot].replace(doc).is_none(), "a second example like this one:\n{text}");
            }
        }
        let [target, rule, recipients_from, configmap, kustomization, file, follow, _] =
            found.map(|doc| doc.expect("the page lost an example"));
        let sops_config = sops_config.expect("the page lost its .sops.yaml");
        Self { target, rule, recipients_from, configmap, kustomization, file, follow, sops_config }
    }

    /// The GitTarget with the `followSopsConfig` fragment in place of its encryption.
    fn target_following(&self) -> Value {
        let mut target = self.target.clone();
        target["spec"]["encryption"] = self.follow["spec"]["encryption"].clone();
        target
    }

    /// The GitTarget with the fragment's fields in place of its own.
    fn target_with_recipients_from(&self) -> Value {
        let mut target = self.target.clone();
        for (field, value) in self.recipients_from["spec"].as_object().unwrap() {
            target["spec"][field] = value.clone();
        }
        target
    }
}

/// The page's shell blocks, by what they do; each block is one of them.
struct Commands {
    keygen: String,
    flux_secret: String,
    decrypt: String,
    status: String,
    verify: String,
}

impl Commands {
    fn read(page: &str) -> Self {
        let mut found: [Option<String>; 5] = Default::default();
        for block in blocks(page, "sh") {
            let slot = if block.contains("age-keygen -o") {
                0
            } else if block.contains("create secret generic sops-age") {
                1
            } else if block.contains("sops --decrypt") {
                2
            } else if block.contains("{.status.signingKey}") {
                3
            } else if block.contains("verify-commit") {
                4
            } else {
                panic!("a shell block the test does not run:\n{block}")
            };
            assert!(found[slot].replace(block.clone()).is_none(), "a second block like this one:\n{block}");
        }
        let [keygen, flux_secret, decrypt, status, verify] =
            found.map(|block| block.expect("the page lost a shell block"));
        Self { keygen, flux_secret, decrypt, status, verify }
    }
}

/// `manifest` with the page's namespaces replaced by the test's.
fn in_namespaces(mut manifest: Value, shop: &str, flux: &str) -> Value {
    let namespace = match manifest["metadata"]["namespace"].as_str() {
        Some(SHOP) => shop,
        Some(FLUX) => flux,
        other => panic!("an example in namespace {other:?}"),
    };
    manifest["metadata"]["namespace"] = json!(namespace);
    manifest
}

/// `manifest` with the page's example key replaced by `key`.
fn with_key(manifest: &Value, key: &str) -> Value {
    let text = manifest.to_string();
    assert!(text.contains(EXAMPLE_KEY), "no example key in {text}");
    serde_json::from_str(&text.replace(EXAMPLE_KEY, key)).unwrap()
}

fn resource_of(manifest: &Value) -> ApiResource {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", manifest["apiVersion"].as_str().unwrap()),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, manifest["kind"].as_str().unwrap()))
}

/// Server-side apply as a dry run with strict field validation.
async fn dry_run(client: &kube::Client, manifest: &Value) -> Result<DynamicObject, kube::Error> {
    let ns = manifest["metadata"]["namespace"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource_of(manifest));
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let params = PatchParams::apply("docs-secrets").dry_run().validation_strict();
    api.patch(name, &params, &Patch::Apply(manifest)).await
}

/// Runs a shell block of the page as a reader would: bash, the env's
/// kubectl, sops and age-keygen first on PATH, `home` as HOME, nothing else
/// of ours in the environment. Each `(from, to)` must occur in the block.
fn sh(block: &str, substitutions: &[(&str, &str)], dir: &Path, home: &Path) -> Output {
    let env = support::env();
    let mut script = block.to_owned();
    for (from, to) in substitutions {
        assert!(script.contains(from), "{from:?} is not in the block:\n{block}");
        script = script.replace(from, to);
    }
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir)
        .env_clear()
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", env.var("GITENV_BIN")))
        .env("HOME", home)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run bash")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The top-level keys of a YAML document, in the order it has them.
fn top_level_keys(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter(|line| !line.starts_with([' ', '-', '#']) && line.contains(':'))
        .map(|line| line.split(':').next().unwrap())
        .collect()
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

/// A fresh ed25519 key pair from ssh-keygen: (private key file, public line).
fn ssh_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitops-reverser", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    ok("ssh-keygen", made);
    let private = std::fs::read_to_string(&file).unwrap();
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap().trim_end().to_owned();
    (private, public)
}

/// The GitTarget's Ready condition as (status, reason, message).
async fn ready(client: &kube::Client, ns: &str, target: &str) -> Option<(String, String, String)> {
    fixtures::condition(client, ns, target, "Ready").await
}

/// The examples agree with each other and with what the operator writes,
/// before anything runs.
#[test]
fn the_examples_fit_together() {
    let page = page();
    let ex = Examples::read(&page);
    let commands = Commands::read(&page);

    // The example key is one age-keygen makes, in the inline list and the ConfigMap.
    let spec = &ex.target["spec"];
    assert_eq!(spec["encryption"]["provider"], "sops");
    assert_eq!(spec["encryption"]["age"]["recipients"], json!([EXAMPLE_KEY]));
    age::x25519::Recipient::from_str(EXAMPLE_KEY).expect("the example key is an age X25519 recipient");
    let source = &ex.recipients_from["spec"]["encryption"]["age"]["recipientsFrom"][0];
    assert_eq!(source["kind"], "ConfigMap");
    assert_eq!(source["name"], ex.configmap["metadata"]["name"]);
    let file =
        ex.configmap["data"][source["key"].as_str().unwrap()].as_str().expect("the key is in the ConfigMap");
    let listed: Vec<&str> = gitops_reverser::api::recipients_in_file(file).collect();
    assert_eq!(listed, [EXAMPLE_KEY], "the ConfigMap lists {listed:?}");
    assert_eq!(ex.configmap["metadata"]["namespace"], ex.target["metadata"]["namespace"]);

    // The .sops.yaml gives the example target's Secrets the example key, as the operator reads it.
    let rules = gitops_reverser::sops::rules::CreationRules::parse(ex.sops_config.as_bytes())
        .expect("the .sops.yaml example parses")
        .expect("it has creation rules");
    let folder = spec["baseFolder"].as_str().unwrap();
    let sealed_path = format!("{folder}/shop/core/secrets/db.sops.yaml");
    let recipients = rules.recipients_for(&sealed_path).expect("a rule matches the target's Secrets");
    assert_eq!(recipients.to_strings(), [EXAMPLE_KEY]);
    assert!(rules.recipients_for("clusters/test/shop/core/secrets/db.sops.yaml").is_err(), "only prod's");

    // The rule sends Secrets to the target, in its namespace.
    assert_eq!(ex.rule["metadata"]["namespace"], ex.target["metadata"]["namespace"]);
    assert_eq!(ex.rule["spec"]["sinkRef"]["name"], ex.target["metadata"]["name"]);
    assert_eq!(ex.rule["spec"]["rules"][0]["resources"], json!(["secrets"]));
    assert_eq!(spec["layout"], "kustomize", "Flux needs the kustomization.yaml (or makes one)");

    // Flux reads the target's folder, with the Secret the command makes:
    // in the Kustomization's namespace, its key ending in `.agekey`.
    let kustomization = &ex.kustomization;
    assert_eq!(kustomization["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
    assert_eq!(kustomization["spec"]["path"].as_str().unwrap().trim_start_matches("./"), spec["baseFolder"]);
    let decryption = &kustomization["spec"]["decryption"];
    assert_eq!(decryption["provider"], "sops");
    let secret = decryption["secretRef"]["name"].as_str().unwrap();
    assert_eq!(secret, "sops-age");
    let flux_ns = kustomization["metadata"]["namespace"].as_str().unwrap();
    assert!(
        commands.flux_secret.contains(&format!("generic {secret} --namespace={flux_ns}")),
        "{}",
        commands.flux_secret
    );
    assert!(commands.flux_secret.contains("--from-file=age.agekey="), "{}", commands.flux_secret);

    // The file the page decrypts is where the operator writes the excerpt's Secret.
    let name = ex.file["metadata"]["name"].as_str().unwrap();
    let path = format!(
        "{}/{}/core/secrets/{name}.sops.yaml",
        spec["baseFolder"].as_str().unwrap(),
        ex.file["metadata"]["namespace"].as_str().unwrap()
    );
    assert!(commands.decrypt.contains(&path), "the page decrypts another file than {path}");
    assert_eq!(ex.file["metadata"]["namespace"], ex.target["metadata"]["namespace"]);

    // The excerpt says what the operator writes.
    let sops = &ex.file["sops"];
    assert_eq!(sops["encrypted_regex"], gitops_reverser::sops::ENCRYPTED_REGEX);
    assert_eq!(sops["version"], gitops_reverser::sops::SOPS_VERSION);
    assert_eq!(sops["age"][0]["recipient"], EXAMPLE_KEY);
    for (key, value) in ex.file["data"].as_object().unwrap() {
        assert!(value.as_str().unwrap().starts_with("ENC[AES256_GCM,data:"), "data.{key}: {value}");
    }
    let digest = ex.file["metadata"]["annotations"][gitops_reverser::sops::DIGEST_ANNOTATION].as_str();
    assert!(digest.is_some_and(|d| d.starts_with(gitops_reverser::sops::DIGEST_PREFIX)), "{digest:?}");
    assert!(page.contains(&format!("`encrypted_regex: {}`", gitops_reverser::sops::ENCRYPTED_REGEX)));
    assert!(page.contains(&format!("`{}`", gitops_reverser::sops::DIGEST_ANNOTATION)));
    assert!(page.contains(WITHHELD), "the page no longer quotes the condition message");
}

/// Every YAML block, in the test's namespaces, passes the API server's
/// validation (dry run, strict): GitTargets, rule and ConfigMap with the
/// operator's CRDs, the Kustomization with Flux's. What the page says the
/// API server rejects, it rejects.
#[tokio::test]
async fn the_api_server_accepts_every_example() {
    let client = support::env().client().await;
    fixtures::install_crds(&client).await;
    let shop = TestNamespace::create(&client, "docs-secrets").await;
    let flux = TestNamespace::create(&client, "docs-flux").await;
    let ex = Examples::read(&page());
    let manifests = [
        &ex.target,
        &ex.target_with_recipients_from(),
        &ex.target_following(),
        &ex.rule,
        &ex.configmap,
        &ex.kustomization,
    ];
    for manifest in manifests {
        let manifest = in_namespaces(manifest.clone(), &shop.name, &flux.name);
        let accepted = dry_run(&client, &manifest)
            .await
            .unwrap_or_else(|e| panic!("the API server rejects an example: {e}\n{manifest:#}"));
        if manifest["kind"] == "Kustomization" {
            let spec = &accepted.data["spec"];
            assert_eq!(spec["decryption"], manifest["spec"]["decryption"], "the CRD dropped a field: {spec}");
        }
    }

    // What does not look like an X25519 public key: one character short,
    // and a post-quantum key of age-keygen -pq.
    let home = tempfile::tempdir().unwrap();
    ok("age-keygen -pq", sh("age-keygen -pq -o pq.agekey 2>/dev/null", &[], home.path(), home.path()));
    let pq = ok("age-keygen -y", sh("age-keygen -y pq.agekey", &[], home.path(), home.path()));
    assert!(pq.starts_with("age1pq1"), "{pq}");
    for bad in [pq.trim(), &EXAMPLE_KEY[..EXAMPLE_KEY.len() - 1]] {
        let target = in_namespaces(with_key(&ex.target, bad), &shop.name, &flux.name);
        let refused =
            dry_run(&client, &target).await.expect_err("a GitTarget with a recipient that is no age key");
        assert!(refused.to_string().contains("recipients"), "{refused}");
    }
}

/// The walkthrough, followed for real.
#[tokio::test(flavor = "multi_thread")]
async fn the_walkthrough_works() {
    let env = support::env();
    let client = env.client().await;
    fixtures::install_crds(&client).await;
    let page = page();
    let ex = Examples::read(&page);
    let commands = Commands::read(&page);
    let shop = TestNamespace::create(&client, "docs-secrets").await;
    let flux = TestNamespace::create(&client, "docs-flux").await;
    let (ns, flux_ns) = (shop.name.as_str(), flux.name.as_str());
    let shop_flag = format!("--namespace={ns}");
    let flux_flag = format!("--namespace={flux_ns}");
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    // 1. The key pair, by the page's commands.
    let out = sh(&commands.keygen, &[], home, home);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let public = ok("the key pair commands", out).trim().to_owned();
    age::x25519::Recipient::from_str(&public).unwrap_or_else(|e| panic!("{e}: {public:?}"));
    assert!(stderr.contains(&format!("Public key: {public}")), "{stderr}");

    // 3. Flux's Secret (it may come first), read back as kustomize-controller reads it.
    ok(
        "kubectl create secret",
        sh(&commands.flux_secret, &[("--namespace=flux-system", &flux_flag)], home, home),
    );
    let sops_age: Api<Secret> = Api::namespaced(client.clone(), flux_ns);
    let flux_key = sops_age.get("sops-age").await.unwrap().data.unwrap().remove("age.agekey").unwrap().0;
    let flux_key = String::from_utf8(flux_key).unwrap();
    let identity: age::x25519::Identity =
        flux_key.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).unwrap().parse().unwrap();
    assert_eq!(identity.to_public().to_string(), public);

    // A GitProvider `git` (the page's providerRef) that signs, and a Secret `db`.
    assert_eq!(ex.target["spec"]["providerRef"], json!({"name": "git"}));
    let repo = env.new_repo("docs-secrets");
    fixtures::git_secret(&client, env, ns, "git", &Access::Ssh { read_only: false }).await;
    let (signing_private, signing_public) = ssh_key_pair();
    let signing = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing", "namespace": ns},
                         "stringData": {"identity": signing_private}});
    fixtures::apply(&client, ns, signing).await;
    let provider = json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
        "metadata": {"name": "git", "namespace": ns},
        "spec": {"url": repo.ssh_url, "secretRef": {"name": "git"}, "push": {"interval": "1s"},
                 "signingKey": {"secretRef": {"name": "signing"}, "format": "ssh"}}});
    fixtures::apply(&client, ns, provider).await;
    let secret_name = ex.file["metadata"]["name"].as_str().unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name, "namespace": ns}, "stringData": {"password": PASSWORD}});
    secrets.patch(secret_name, &PatchParams::apply("docs-secrets"), &Patch::Apply(&secret)).await.unwrap();

    // 2. The page's GitTarget, its recipients from the page's ConfigMap, which
    // does not exist yet; its rule; and a second target without encryption.
    let target_name = ex.target["metadata"]["name"].as_str().unwrap();
    let target = in_namespaces(ex.target_with_recipients_from(), ns, flux_ns);
    assert!(target["spec"]["encryption"]["age"].get("recipients").is_none(), "{target}");
    fixtures::apply(&client, ns, target).await;
    fixtures::apply(&client, ns, in_namespaces(ex.rule.clone(), ns, flux_ns)).await;
    fixtures::target(&client, ns, "plain", json!({"name": "git"}), "main", "clusters/plain").await;
    fixtures::watch_rule(&client, ns, "plain", "plain", json!([{"resources": ["secrets"]}])).await;
    let operator = Operator::start(env, ns);
    let git = GitClient::new(Auth::ssh_rw(env));

    // A missing recipientsFrom source: Ready=False, InvalidConfiguration, naming the field.
    let (_, _, message) = wait_for("the target to report its missing recipients", WAIT, || async {
        ready(&client, ns, target_name)
            .await
            .filter(|(status, reason, _)| status == "False" && reason == "InvalidConfiguration")
    })
    .await;
    assert!(message.contains("recipientsFrom"), "{message}");
    // Without encryption: Ready, and the Secret counted as not written.
    let (_, _, message) = wait_for("the plain target to count the Secret it withholds", WAIT, || async {
        ready(&client, ns, "plain")
            .await
            .filter(|(status, _, message)| status == "True" && message.contains(WITHHELD))
    })
    .await;
    assert!(message.contains(&format!("1 {WITHHELD}")), "{message}");

    // The ConfigMap, first with a typo that only the key's checksum shows
    // (the API server cannot tell), then right: the target catches up.
    let typo = format!("{}{}", &public[..public.len() - 1], if public.ends_with('q') { 'p' } else { 'q' });
    fixtures::apply(&client, ns, in_namespaces(with_key(&ex.configmap, &typo), ns, flux_ns)).await;
    wait_for("the target to report the recipient with a typo", WAIT, || async {
        ready(&client, ns, target_name).await.filter(|(status, reason, message)| {
            status == "False"
                && reason == "InvalidConfiguration"
                && message.contains("recipientsFrom[0]")
                && !message.contains("not found")
        })
    })
    .await;
    // Nothing of the Secret written meanwhile.
    let early = git.read_branch(&repo.ssh_url, "main").map(|v| v.files).unwrap_or_default();
    assert!(!early.keys().any(|p| p.contains("/secrets/")), "written while misconfigured: {early:?}");
    fixtures::apply(&client, ns, in_namespaces(with_key(&ex.configmap, &public), ns, flux_ns)).await;
    let folder = ex.target["spec"]["baseFolder"].as_str().unwrap();
    let page_path = format!("{folder}/{SHOP}/core/secrets/{secret_name}.sops.yaml");
    let path = format!("{folder}/{ns}/core/secrets/{secret_name}.sops.yaml");
    let view = wait_for("the sealed Secret on the branch", WAIT, || async {
        git.read_branch(&repo.ssh_url, "main").filter(|v| v.files.contains_key(&path))
    })
    .await;
    let sealed: Vec<&String> = view.files.keys().filter(|p| p.ends_with(".sops.yaml")).collect();
    assert_eq!(sealed, [&path], "only the selected Secret, not the operator's credentials");
    assert!(!view.files.keys().any(|p| p.starts_with("clusters/plain/") && p.contains("/secrets/")));
    let kustomization = &view.files[&format!("{folder}/kustomization.yaml")];
    let relative = path.strip_prefix(&format!("{folder}/")).unwrap();
    assert!(kustomization.contains(&format!("- \"{relative}\"")), "{kustomization}");
    wait_for("the target to be Ready", WAIT, || async {
        ready(&client, ns, target_name).await.filter(|(status, _, _)| status == "True")
    })
    .await;

    // The file is shaped as the page's excerpt, its fields in the same order.
    let file: Value = serde_saphyr::from_str(&view.files[&path]).unwrap();
    let excerpt = blocks(&page, "yaml").into_iter().find(|b| b.contains("\nsops:\n")).unwrap();
    assert_eq!(top_level_keys(&view.files[&path]), top_level_keys(&excerpt));
    assert_eq!(keys(&file), keys(&ex.file));
    assert_eq!(keys(&file["metadata"]), keys(&ex.file["metadata"]));
    assert_eq!(keys(&file["data"]), keys(&ex.file["data"]));
    assert_eq!(keys(&file["sops"]), keys(&ex.file["sops"]));
    assert_eq!(keys(&file["sops"]["age"][0]), keys(&ex.file["sops"]["age"][0]));
    assert_eq!(file["sops"]["age"][0]["recipient"], public.as_str());
    assert_eq!(file["sops"]["encrypted_regex"], ex.file["sops"]["encrypted_regex"]);
    assert_eq!(file["type"], ex.file["type"]);
    assert!(file["data"]["password"].as_str().unwrap().starts_with("ENC[AES256_GCM,data:"), "{file}");
    let live = secrets.get(secret_name).await.unwrap();
    let live_data: serde_json::Map<String, Value> =
        live.data.unwrap().into_iter().map(|(k, v)| (k, Value::String(base64_of(&v.0)))).collect();
    let live_data = Value::Object(live_data);

    // 4. By hand, in a clone: the page's sops command with the key file.
    let scratch = git.workdir("docs-secrets");
    let clone = scratch.join(format!("clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&clone);
    git.ok(&scratch, &["clone", "--quiet", "--branch", "main", &repo.ssh_url, clone.to_str().unwrap()]);
    let decrypted =
        ok("the page's sops --decrypt", sh(&commands.decrypt, &[(&page_path, &path)], &clone, home));
    let decrypted: Value = serde_saphyr::from_str(&decrypted).unwrap();
    assert_eq!(decrypted["data"], live_data, "decrypted by hand: {decrypted}");
    assert_eq!(decrypted["metadata"]["name"], secret_name);

    // As Flux does it: kustomize builds the Kustomization's path, each
    // Secret goes to sops as JSON with the keys of the sops-age Secret.
    // Without the MAC check, as kustomize-controller decrypts (its
    // checkSopsMac is off: kustomize sorts the fields, so the MAC, taken
    // over the values in file order, would not match for anyone's file).
    let kustomization_path = ex.kustomization["spec"]["path"].as_str().unwrap();
    let built =
        Command::new(env.kubectl()).arg("kustomize").arg(clone.join(kustomization_path)).output().unwrap();
    let built = ok("kubectl kustomize", built);
    let mut decrypted_by_flux = 0;
    for doc in built.split("\n---\n") {
        let resource: Value = serde_saphyr::from_str(doc).unwrap();
        if resource.get("sops").is_none() {
            continue;
        }
        let input = home.join("resource.json");
        std::fs::write(&input, serde_json::to_vec(&resource).unwrap()).unwrap();
        let out = Command::new(Path::new(env.var("GITENV_BIN")).join("sops"))
            .args(["--decrypt", "--ignore-mac", "--input-type", "json", "--output-type", "json"])
            .arg(&input)
            .current_dir(home)
            .env_clear()
            .env("HOME", home)
            .env("SOPS_AGE_KEY", &flux_key)
            .output()
            .unwrap();
        let out: Value = serde_json::from_str(&ok("sops --decrypt of the built Secret", out)).unwrap();
        assert_eq!(out["data"], live_data, "as Flux decrypts it: {out}");
        assert_eq!(out["metadata"]["namespace"], ns);
        decrypted_by_flux += 1;
    }
    assert_eq!(decrypted_by_flux, 1, "kustomize built:\n{built}");

    // The signing key: the status the page reads, and the commits verify with it.
    let providers: Api<gitops_reverser::api::GitProvider> = Api::namespaced(client.clone(), ns);
    wait_for("the GitProvider's signing key in its status", WAIT, || async {
        providers.get("git").await.ok()?.status?.signing_key
    })
    .await;
    let status = ok(
        "the page's kubectl get gitprovider",
        sh(&commands.status, &[("--namespace=shop", &shop_flag)], &clone, home),
    );
    let status: Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(status["publicKey"], signing_public.as_str());
    assert_eq!(status["format"], "ssh");
    assert!(status["fingerprint"].as_str().unwrap().starts_with("SHA256:"), "{status}");
    let out = sh(&commands.verify, &[("--namespace=shop", &shop_flag)], &clone, home);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ok("the page's git verify-commit", out);
    assert!(said.contains("Good \"git\" signature for gitops-reverser@configbutler.ai"), "{said}");

    // Nothing of the Secret in the history.
    let history = git.ok(&clone, &["log", "--all", "-p", "--format=%B"]);
    assert!(!history.contains(PASSWORD) && !history.contains(&base64_of(PASSWORD.as_bytes())));
    drop(operator);
}
