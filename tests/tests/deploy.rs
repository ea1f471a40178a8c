//! The deployment files in `deploy/` hold together: the Kubernetes
//! manifests parse and refer to each other correctly (labels, ports, probe
//! paths, mounts), the ConfigMap's config passes the real `check-config`
//! with the Secret's keys as secret files, and the Dockerfile runs what the
//! manifests mount, as a non-root user. Nothing is built or pulled: no
//! registry is reachable from the tests.

use std::path::{Path, PathBuf};

use mcp_delegate_tests::host::run_to_exit;
use mcp_delegate_tests::paths;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    paths::workspace_root().join("deploy")
}

/// Every YAML document of every manifest, as JSON values.
fn manifests() -> Vec<Value> {
    let mut documents = Vec::new();
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            assert!(
                value["apiVersion"].is_string() && value["kind"].is_string(),
                "{}: a document without apiVersion and kind",
                file.display()
            );
            documents.push(value);
        }
    }
    documents
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("selector labels");
    !selector.is_empty() && selector.iter().all(|(key, value)| labels[key] == *value)
}

#[test]
fn the_manifests_refer_to_each_other_and_to_what_the_server_serves() {
    let documents = manifests();
    let deployment = of_kind(&documents, "Deployment");
    let service = of_kind(&documents, "Service");
    let config_map = of_kind(&documents, "ConfigMap");
    let secret = of_kind(&documents, "Secret");
    let budget = of_kind(&documents, "PodDisruptionBudget");

    let spec = &deployment["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(spec["replicas"].as_u64().unwrap_or(0) >= 2, "replicas");

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let ports = container["ports"].as_array().expect("ports");
    let port_named = |name: &str| {
        ports
            .iter()
            .find(|port| port["name"] == name)
            .and_then(|port| port["containerPort"].as_u64())
    };
    assert_eq!(port_named("http"), Some(3000));
    assert_eq!(port_named("metrics"), Some(9464));
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }
    for port in service["spec"]["ports"].as_array().expect("service ports") {
        let target = port["targetPort"].as_str().expect("named target port");
        assert!(port_named(target).is_some(), "service targets {target}");
    }
    let resources = &container["resources"];
    assert!(
        resources["requests"]["memory"].is_string() && resources["limits"]["memory"].is_string()
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );

    // The mounts: the ConfigMap at the config's directory, the Secret at
    // the secrets directory, both by the names the other manifests carry.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mount_of = |volume_field: &str, name: &Value| -> Option<String> {
        let volume = volumes
            .iter()
            .find(|v| v[volume_field]["name"] == *name || v[volume_field]["secretName"] == *name)?;
        container["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == volume["name"])
            .and_then(|m| m["mountPath"].as_str().map(str::to_owned))
    };
    assert_eq!(
        mount_of("configMap", &config_map["metadata"]["name"]).as_deref(),
        Some("/etc/mcp-delegate")
    );
    assert_eq!(
        mount_of("secret", &secret["metadata"]["name"]).as_deref(),
        Some("/run/secrets")
    );
}

/// The Secret's keys as files in a directory, as Kubernetes mounts them.
fn secret_files(secret: &Value, leave_out: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (key, value) in secret["stringData"].as_object().expect("stringData") {
        if Some(key.as_str()) != leave_out {
            std::fs::write(dir.path().join(key), value.as_str().expect("string value"))
                .expect("secret file");
        }
    }
    dir
}

fn check_config(config: &Path, secrets: &Path) -> (i32, String, String) {
    run_to_exit(&[
        "check-config",
        config.to_str().expect("utf-8 path"),
        "--plugin-dir",
        paths::build_dir().to_str().expect("utf-8 path"),
        "--secrets-dir",
        secrets.to_str().expect("utf-8 path"),
        "--bind",
        "0.0.0.0",
    ])
}

#[test]
fn the_config_map_passes_check_config_with_the_secret_mounted() {
    let documents = manifests();
    let config_map = of_kind(&documents, "ConfigMap");
    let secret = of_kind(&documents, "Secret");
    let text = config_map["data"]["config.json"]
        .as_str()
        .expect("config.json in the ConfigMap");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, text).expect("config file");

    let secrets = secret_files(secret, None);
    let (code, stdout, stderr) = check_config(&config, secrets.path());
    assert_eq!(
        code, 0,
        "check-config refused the ConfigMap's config:\n{stdout}\n{stderr}"
    );
    // Not even a warning (an unknown key is one: it would be ignored).
    let warnings: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| line.starts_with("warning"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");

    // Each secret the config names comes from the Secret: without one of
    // them, startup would stop.
    for key in secret["stringData"].as_object().expect("stringData").keys() {
        let partial = secret_files(secret, Some(key));
        let (code, stdout, stderr) = check_config(&config, partial.path());
        assert_ne!(code, 0, "check-config passed without the secret {key}");
        assert!(
            format!("{stdout}{stderr}").contains(key.as_str()),
            "the refusal names the missing secret {key}: {stdout}{stderr}"
        );
    }
}

#[test]
fn the_image_runs_what_the_manifests_mount_as_a_non_root_user() {
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("deploy/Dockerfile");
    // Instructions, with continuation lines joined and comments dropped.
    let joined = dockerfile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = joined
        .lines()
        .filter_map(|line| line.trim().split_once(' '))
        .collect();
    let all = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(instruction, _)| instruction.eq_ignore_ascii_case(name))
            .map(|(_, rest)| rest.trim())
            .collect()
    };
    assert!(all("FROM").len() >= 2, "a multi-stage build");
    let user = all("USER");
    let last_user = user.last().expect("a USER instruction");
    assert!(
        !last_user.starts_with("root") && !last_user.starts_with("0"),
        "runs as {last_user}"
    );
    let exposed: Vec<&str> = all("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .collect();
    assert_eq!(exposed, ["3000", "9464"]);

    let entrypoint: Vec<String> =
        serde_json::from_str(all("ENTRYPOINT").last().expect("ENTRYPOINT")).expect("exec form");
    let flag = |name: &str| {
        entrypoint
            .iter()
            .position(|arg| arg == name)
            .and_then(|at| entrypoint.get(at + 1))
            .map(String::as_str)
    };
    assert_eq!(flag("--config"), Some("/etc/mcp-delegate/config.json"));
    assert_eq!(flag("--port"), Some("3000"));
    assert_eq!(flag("--bind"), Some("0.0.0.0"));
    assert_eq!(flag("--metrics-bind"), Some("0.0.0.0:9464"));
    // No --secrets-dir: the default, /run/secrets, is where the Secret is.
    assert_eq!(flag("--secrets-dir"), None);

    // The plugin library lands beside the binary (the default plugin
    // directory is the executable's).
    let binary = Path::new(&entrypoint[0]);
    let copies = all("COPY");
    let plugin = copies
        .iter()
        .find(|copy| copy.contains("libmcp_delegate_postgresql.so"))
        .expect("the PostgreSQL plugin is copied");
    let destination = plugin.split_whitespace().last().expect("destination");
    assert_eq!(
        Path::new(destination.trim_end_matches('/')),
        binary.parent().expect("binary directory")
    );
}

/// `deploy/pgbouncer/`: the Kubernetes example holds the same
/// `pgbouncer.ini` the tests run PgBouncer with, its Service reaches the
/// port that file listens on, and the mounts put the file and the user
/// list where the file and the image expect them.
#[test]
fn the_pgbouncer_example_holds_the_tested_settings_and_its_parts_fit() {
    let dir = deploy_dir().join("pgbouncer");
    let ini = std::fs::read_to_string(dir.join("pgbouncer.ini")).expect("pgbouncer.ini");
    let setting = |key: &str| -> Option<String> {
        ini.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(name, _)| name.trim() == key)
            .map(|(_, value)| value.trim().to_owned())
    };
    assert_eq!(setting("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(setting("auth_type").as_deref(), Some("scram-sha-256"));
    // What the tests run (every other [pgbouncer] key is taken from here).
    let tested = mcp_delegate_tests::pgbouncer::deployed_settings();
    assert!(tested.contains("pool_mode = transaction"), "{tested}");
    assert!(tested.contains("ignore_startup_parameters"), "{tested}");

    let text = std::fs::read_to_string(dir.join("kubernetes.yaml")).expect("kubernetes.yaml");
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML document"))
        .collect();
    let config_map = of_kind(&documents, "ConfigMap");
    assert_eq!(
        config_map["data"]["pgbouncer.ini"].as_str(),
        Some(ini.as_str()),
        "the ConfigMap must hold deploy/pgbouncer/pgbouncer.ini unchanged"
    );
    let deployment = of_kind(&documents, "Deployment");
    let service = of_kind(&documents, "Service");
    let secret = of_kind(&documents, "Secret");
    let pod = &deployment["spec"]["template"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert!(selects(
        &service["spec"]["selector"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let container = &pod["spec"]["containers"][0];
    let listen: u64 = setting("listen_port")
        .and_then(|port| port.parse().ok())
        .expect("listen_port");
    assert_eq!(container["ports"][0]["containerPort"], listen);
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let mounted_at = |volume: &Value| -> String {
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("volume is mounted");
        match mount["subPath"].as_str() {
            Some(_) => mount["mountPath"].as_str().unwrap_or_default().to_owned(),
            None => format!("{}/", mount["mountPath"].as_str().unwrap_or_default()),
        }
    };
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    assert_eq!(mounted_at(config_volume), "/etc/pgbouncer/pgbouncer.ini");
    let users_volume = volumes
        .iter()
        .find(|v| v["secret"]["secretName"] == secret["metadata"]["name"])
        .expect("the Secret is a volume");
    let auth_file = setting("auth_file").expect("auth_file");
    let users_key = secret["stringData"]
        .as_object()
        .and_then(|data| data.keys().next().cloned())
        .expect("a key in the Secret");
    assert_eq!(
        format!("{}{users_key}", mounted_at(users_volume)),
        auth_file
    );

    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("apt-get install -y --no-install-recommends pgbouncer"));
    assert!(dockerfile.contains("COPY pgbouncer.ini /etc/pgbouncer/pgbouncer.ini"));
    assert!(dockerfile.contains(&format!("EXPOSE {listen}")));
    assert!(dockerfile.lines().any(|l| l.trim() == "USER postgres"));
}
