//! The deployment files agree with the server: the Kubernetes manifests
//! parse, their probes, ports and environment match what wagate serves, and
//! the Dockerfile runs it as a non-root user with the store on a volume.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use serde_yaml_ng::Value;
use wagate::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<Value> {
    manifests_in("deploy/k8s")
}

fn manifests_in(folder: &str) -> Vec<Value> {
    let dir = root().join(folder);
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = Value::deserialize(document)
                    .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
                documents.push(value);
            }
        }
    }
    documents
}

fn kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} manifest"))
}

fn port_named(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// The configuration the container runs with: defaults plus its environment.
fn container_config(container: &Value) -> Config {
    let mut args = vec!["wagate".to_owned()];
    for entry in container["env"].as_sequence().unwrap() {
        let name = entry["name"].as_str().unwrap();
        if !entry["valueFrom"].is_null() {
            // From a Secret: a placeholder that parses stands in for it.
            args.push(format!(
                "--{}",
                name.trim_start_matches("WAGATE_")
                    .to_lowercase()
                    .replace('_', "-")
            ));
            args.push("from-a-secret".to_owned());
            continue;
        }
        let flag = name
            .strip_prefix("WAGATE_")
            .unwrap_or_else(|| panic!("{name} is not a wagate variable"))
            .to_lowercase()
            .replace('_', "-");
        args.push(format!("--{flag}"));
        args.push(entry["value"].as_str().unwrap().to_owned());
    }
    Config::try_parse_from(&args).unwrap_or_else(|e| panic!("the manifest's env is refused: {e}"))
}

#[test]
fn statefulset_probes_ports_and_env_match_the_server() {
    let documents = manifests();
    let set = kind(&documents, "StatefulSet");
    let pod = &set["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let config = container_config(container);
    let defaults = Config::try_parse_from(["wagate"]).unwrap();

    // Same ports as the defaults, but reachable from outside the pod.
    assert_eq!(config.listen.port(), defaults.listen.port());
    assert!(config.listen.ip().is_unspecified());
    assert_eq!(config.metrics_listen.port(), defaults.metrics_listen.port());
    assert!(config.metrics_listen.ip().is_unspecified());
    let grpc = port_named(container, "grpc");
    let metrics = port_named(container, "metrics");
    assert_eq!(grpc, u64::from(config.listen.port()));
    assert_eq!(metrics, u64::from(config.metrics_listen.port()));

    // gRPC health probes: readiness on the overall status, liveness on the
    // service that stays SERVING while draining.
    let readiness = &container["readinessProbe"]["grpc"];
    assert_eq!(readiness["port"].as_u64(), Some(grpc));
    assert!(
        readiness["service"].is_null(),
        "readiness uses the overall status"
    );
    for probe in ["livenessProbe", "startupProbe"] {
        let probe = &container[probe]["grpc"];
        assert_eq!(probe["port"].as_u64(), Some(grpc));
        assert_eq!(probe["service"].as_str(), Some(wagate::server::LIVENESS));
    }

    // Prometheus finds the metrics port.
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(metrics.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // The store lives on the claimed volume.
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), config.data_dir.to_str());
    let claim = &set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], mount["name"]);
    assert_eq!(
        set["spec"]["replicas"].as_u64(),
        Some(1),
        "sled is single-process"
    );

    // Kubernetes waits for the drain and the in-flight grace before SIGKILL.
    let termination = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    assert!(termination > config.drain_delay + config.shutdown_grace);

    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(security["runAsUser"].as_u64(), Some(0));
}

#[test]
fn service_speaks_grpc_to_the_container_ports() {
    let documents = manifests();
    let service = kind(&documents, "Service");
    let set = kind(&documents, "StatefulSet");
    assert_eq!(
        service["spec"]["selector"], set["spec"]["selector"]["matchLabels"],
        "the Service selects the StatefulSet's pods"
    );
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    let grpc = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .unwrap();
    assert_eq!(grpc["appProtocol"].as_str(), Some("grpc"));
    assert_eq!(grpc["targetPort"].as_str(), Some("grpc"));
    let defaults = Config::try_parse_from(["wagate"]).unwrap();
    assert_eq!(
        grpc["port"].as_u64(),
        Some(u64::from(defaults.listen.port()))
    );
    let metrics = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .unwrap();
    assert_eq!(metrics["targetPort"].as_str(), Some("metrics"));
}

#[test]
fn dockerfile_builds_in_stages_and_runs_non_root_with_a_data_volume() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(froms[0].contains(" AS build"));
    assert!(
        froms.last().unwrap().contains("distroless") || froms.last().unwrap().contains("slim"),
        "a small runtime image"
    );
    let user = instructions
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(!matches!(user, "root" | "0" | "0:0"), "runs as {user}");
    assert!(text.contains("WAGATE_DATA_DIR=/data"));
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("VOLUME") && l.contains("/data"))
    );
    let defaults = Config::try_parse_from(["wagate"]).unwrap();
    let expose = instructions
        .iter()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    for port in [defaults.listen.port(), defaults.metrics_listen.port()] {
        assert!(
            expose.split_whitespace().any(|p| p == port.to_string()),
            "{port} exposed"
        );
    }
    assert!(
        text.contains("WAGATE_LISTEN=0.0.0.0:"),
        "listens beyond loopback"
    );
}

/// The build stage of the Dockerfile, as Docker would run it: its WORKDIR,
/// what it copies from the context, and its `cargo` command.
struct BuildStage {
    copies: Vec<(Vec<String>, String)>,
    cargo: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let mut copies = Vec::new();
    let mut cargo = None;
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages += 1;
            if stages > 1 {
                break;
            }
        } else if let Some(args) = line.strip_prefix("COPY ") {
            assert!(!args.starts_with("--"), "unsupported COPY flag: {line}");
            let mut parts: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
            let dest = parts.pop().expect("COPY has a destination");
            copies.push((parts, dest));
        } else if let Some(command) = line.strip_prefix("RUN cargo ") {
            assert!(cargo.is_none(), "one cargo command in the build stage");
            cargo = Some(command.split_whitespace().map(str::to_owned).collect());
        } else if let Some(dir) = line.strip_prefix("WORKDIR ") {
            assert_eq!(
                dir, "/src",
                "the test assembles the context relative to /src"
            );
        }
    }
    BuildStage {
        copies,
        cargo: cargo.expect("the build stage runs cargo"),
    }
}

/// `.dockerignore` patterns. Only plain paths are used (and honoured here);
/// a glob would need Docker's matcher, so it fails this test instead of
/// being silently misread.
fn docker_ignored() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|pattern| {
            assert!(
                !pattern.contains(['*', '?', '[', '!']),
                "glob {pattern:?} in .dockerignore: teach this test Docker's matcher"
            );
            pattern.trim_matches('/').to_owned()
        })
        .collect()
}

fn copy_context(from: &Path, to: &Path, relative: &str, ignored: &[String]) {
    if ignored
        .iter()
        .any(|p| relative == p || relative.starts_with(&format!("{p}/")))
    {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            copy_context(
                &entry.path(),
                &to.join(&name),
                &format!("{relative}/{name}"),
                ignored,
            );
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("COPY {relative}: {e}"));
    }
}

/// Builds the binary from exactly the files the Dockerfile copies, with the
/// Dockerfile's own cargo command: a context that misses a file cargo needs
/// fails here, not first in someone's image build. (No container runtime is
/// needed; the base image's toolchain is stood in for by this one.)
#[test]
fn the_docker_build_context_builds_the_binary() {
    let stage = build_stage(&std::fs::read_to_string(root().join("Dockerfile")).unwrap());
    let ignored = docker_ignored();
    let context = tempfile::tempdir().unwrap();
    for (sources, dest) in &stage.copies {
        let dest_dir = context.path().join(dest.trim_start_matches("./"));
        for source in sources {
            let target = if dest.ends_with('/') {
                dest_dir.join(source)
            } else {
                assert_eq!(
                    sources.len(),
                    1,
                    "several sources need a directory destination"
                );
                dest_dir.clone()
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            copy_context(&root().join(source), &target, source, &ignored);
        }
    }
    // Release builds share one target directory across runs, outside the
    // context, so only the first run pays for compiling the dependencies.
    let target_dir = root().join("target/docker-context");
    let output = std::process::Command::new(env!("CARGO"))
        .args(&stage.cargo)
        .current_dir(context.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo {} failed in the Docker context:\n{}",
        stage.cargo.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(target_dir.join("release/wagate").is_file());
}

#[test]
fn the_postgresql_deployment_runs_three_replicas_one_disruption_at_a_time() {
    let documents = manifests_in("deploy/k8s/postgres");
    let deployment = kind(&documents, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &deployment["spec"]["template"]["metadata"]["labels"],
        labels
    );
    let budget = kind(&documents, "PodDisruptionBudget");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(budget["spec"]["maxUnavailable"].as_u64(), Some(1));
    let service = kind(&documents, "Service");
    assert_eq!(&service["spec"]["selector"], labels);

    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let config = container_config(container);
    // The URL (with its password) is a file from a Secret, not an env value.
    let file = config.database_url_file.expect("the database URL is set");
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the URL file is mounted");
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("wagate-database")
    );
    assert_eq!(
        file.file_name().and_then(|n| n.to_str()),
        Some("url"),
        "the Secret's key"
    );
    assert_eq!(
        container["volumeMounts"].as_sequence().unwrap().len(),
        1,
        "no local state"
    );
    let grpc = port_named(container, "grpc");
    assert_eq!(grpc, u64::from(config.listen.port()));
    assert!(container["readinessProbe"]["grpc"]["service"].is_null());
    assert_eq!(
        container["livenessProbe"]["grpc"]["service"].as_str(),
        Some(wagate::server::LIVENESS)
    );
    let termination = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    assert!(termination > config.drain_delay + config.shutdown_grace);
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
}

/// The sled StatefulSet and the PostgreSQL Deployment, with their folders.
fn workloads() -> Vec<(Vec<Value>, Value)> {
    let sled = manifests();
    let postgres = manifests_in("deploy/k8s/postgres");
    let set = kind(&sled, "StatefulSet").clone();
    let deployment = kind(&postgres, "Deployment").clone();
    vec![(sled, set), (postgres, deployment)]
}

#[test]
fn workloads_run_under_the_restricted_pod_security_standard() {
    let sled = manifests();
    let namespace = kind(&sled, "Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("restricted")
    );
    for (_, workload) in workloads() {
        assert_eq!(
            workload["metadata"]["namespace"],
            namespace["metadata"]["name"]
        );
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
        assert_eq!(
            container["image"].as_str(),
            Some(format!("wagate:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "the image is pinned to this version"
        );
    }
}

#[test]
fn readiness_leaves_within_the_drain_delay_and_the_webhook_is_reachable() {
    for (documents, workload) in workloads() {
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        let config = container_config(container);
        let readiness = &container["readinessProbe"];
        let threshold = readiness["failureThreshold"].as_u64().unwrap();
        let period = readiness["periodSeconds"].as_u64().unwrap();
        assert!(threshold >= 2, "one missed probe does not take the pod out");
        assert!(
            Duration::from_secs(period * threshold) < config.drain_delay,
            "endpoints drop the pod before the drain delay ends"
        );

        // The webhook receiver listens beyond the pod, on its named port,
        // and the Service routes to it.
        assert!(config.cloud.webhook_listen.ip().is_unspecified());
        let webhook = port_named(container, "webhook");
        assert_eq!(webhook, u64::from(config.cloud.webhook_listen.port()));
        let service = documents
            .iter()
            .find(|d| d["kind"].as_str() == Some("Service") && d["metadata"]["name"] == "wagate")
            .expect("the wagate Service");
        let port = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some("webhook"))
            .expect("the Service has the webhook port");
        assert_eq!(port["targetPort"].as_str(), Some("webhook"));
        let policy = kind(&documents, "NetworkPolicy");
        let allowed: Vec<&str> = policy["spec"]["ingress"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|p| p["port"].as_str())
            .collect();
        assert_eq!(allowed, ["grpc", "metrics", "webhook"]);
    }
    let sled = manifests();
    let ingress = kind(&sled, "Ingress");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"].as_str(), Some("/webhook"));
    assert_eq!(
        path["backend"]["service"]["port"]["name"].as_str(),
        Some("webhook")
    );
}

#[test]
fn the_statefulset_has_a_headless_service_and_a_disruption_budget() {
    let documents = manifests();
    let set = kind(&documents, "StatefulSet");
    let governing = documents
        .iter()
        .find(|d| d["metadata"]["name"] == set["spec"]["serviceName"])
        .expect("the StatefulSet's serviceName names a Service");
    assert_eq!(governing["kind"].as_str(), Some("Service"));
    assert_eq!(governing["spec"]["clusterIP"].as_str(), Some("None"));
    let budget = kind(&documents, "PodDisruptionBudget");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        set["spec"]["selector"]["matchLabels"]
    );
    let monitor: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/k8s/prometheus-operator/servicemonitor.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
}

/// kubernetes-validate (the API's schemas, strict) and checkov (best
/// practice; each skipped rule says why in its annotation) over every
/// manifest. scripts/test.sh installs both into .venv-k8s.
#[test]
fn manifests_pass_the_kubernetes_schemas_and_checkov() {
    let tools = std::env::var_os("WAGATE_K8S_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-k8s/bin"));
    assert!(
        tools.join("checkov").exists(),
        "{} has no checkov: run scripts/test.sh (it installs tests/k8s/requirements.txt)",
        tools.display()
    );
    let core: Vec<std::path::PathBuf> = ["deploy/k8s", "deploy/k8s/postgres"]
        .iter()
        .flat_map(|folder| std::fs::read_dir(root().join(folder)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(core.len() >= 6, "{core:?}");
    let validated = std::process::Command::new(tools.join("kubernetes-validate"))
        .arg("--strict")
        .args(&core)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&validated.stdout);
    assert!(
        validated.status.success() && !report.contains("ERROR") && !report.contains("WARN"),
        "kubernetes-validate:\n{report}{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let checked = std::process::Command::new(tools.join("checkov"))
        .args(["--framework", "kubernetes", "--compact", "--quiet", "-d"])
        .arg(root().join("deploy/k8s"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success() && report.contains("Failed checks: 0"),
        "checkov:\n{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
