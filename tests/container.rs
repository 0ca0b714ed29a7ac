//! What ops run: the image built from the Dockerfile, the Kubernetes manifests in deploy/k8s/
//! and docker-compose.yml.
//!
//! With podman (scripts/container-bases installs it and makes the local base images; CI runs
//! it from scripts/test), the image is built on those bases and run with host networking on
//! free ports, against stub systems in this process and the RabbitMQ on 127.0.0.1:5672; the
//! Deployment and its ConfigMaps are started with `podman kube play`; docker-compose.yml runs
//! whole under podman-compose with deploy/compose/host-network.yml, on free ports and a broker
//! of its own (RabbitMQ and a trace backend built from deploy/compose/ on the local bases).
//! Without podman those three tests say why and pass (on CI, where CI=true, they fail
//! instead). The manifests and the compose file are checked everywhere.

mod common;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use qiao::config::SystemKind;
use serde_json::{Value, json};

const BUILDER_BASE: &str = "localhost/qiao-base-builder:bookworm";
const RUNTIME_BASE: &str = "localhost/qiao-base-runtime:bookworm";
/// The uid and gid the Dockerfile runs Qiao as, and the Deployment's runAsUser.
const QIAO_UID: u32 = 10001;

// ------------------------------------------------------------------------------------------
// The image, run as a container
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_the_shipped_routes_as_a_non_root_user_and_stops_on_sigterm() {
    let Some(podman) = Podman::available() else { return };
    let image = podman.image();
    let stubs = Stubs::start().await;
    let prefix = unique_prefix("container");
    let _queues = Queues(prefix.clone()); // dropped after the container
    let mut env = container_env(&stubs, &prefix);

    let (container, port, admin) = start_container(&podman, &image, &mut env).await;

    // /healthz answers, and the image's HEALTHCHECK (bash, no curl) says so too.
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/healthz")).await.unwrap().status, 200);
    let health = podman.output(&["healthcheck", "run", &container.name]);
    assert!(health.status.success(), "the image's HEALTHCHECK failed: {}", text_of(&health));

    // Not root: inside (`id`) and as the kernel sees the process from outside.
    assert_eq!(podman.ok(&["exec", &container.name, "id", "-u"]).trim(), QIAO_UID.to_string());
    assert_eq!(podman.ok(&["exec", &container.name, "id", "-g"]).trim(), QIAO_UID.to_string());
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &container.name]);
    assert_eq!(process_uids(pid.trim()), [QIAO_UID; 4], "real, effective, saved and fs uid of qiao");

    // The README's CRM order goes through the container to the ERP stub.
    let reply = request(
        "POST",
        &format!("http://127.0.0.1:{port}/crm/orders/801J000000k3QpRIAU"),
        &[("content-type", "application/json")],
        example("crm-order.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["Result"]["ResponseStatus"]["IsSuccess"], true);
    let got = stubs.get(SystemKind::Erp).state.received();
    assert_eq!(got.len(), 1, "one Kingdee sales order at the ERP stub");
    assert_eq!(got[0].body["formid"], "SAL_SaleOrder");
    // Counted when the request is logged, after the answer is out: on a busy machine a moment
    // after the client has it.
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    eventually(Duration::from_secs(10), "the request counted on /metrics", || {
        let metrics = metrics.clone();
        async move {
            get(&metrics).await.is_ok_and(|r| {
                String::from_utf8_lossy(&r.body)
                    .contains(r#"qiao_http_requests_total{route="crm-order-to-erp",status="200"} 1"#)
            })
        }
    })
    .await;

    // The image logs JSON (QIAO_LOG_FORMAT=json), one object per line, to stderr.
    let logs = podman.logs(&container.name);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "qiao logged nothing");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }

    // SIGTERM (the image's STOPSIGNAL) reaches qiao as PID 1, which stops gracefully, in time.
    let started = Instant::now();
    podman.ok(&["stop", "--time", "30", &container.name]);
    let took = started.elapsed();
    let exit = podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", &container.name]);
    assert_eq!(exit.trim(), "0", "exit code after SIGTERM; logs:\n{}", podman.logs(&container.name));
    assert!(took < Duration::from_secs(20), "SIGTERM took {took:?}: killed at the timeout instead?");
    eprintln!("container stopped {took:.1?} after SIGTERM");
}

/// The environment of a Qiao container: the stubs, the shared broker under a prefix of the
/// test's own. The listen addresses are added by `start_container`.
fn container_env(stubs: &Stubs, prefix: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = stubs.env().into_iter().filter(|(k, _)| k != "AMQP_PREFIX").collect();
    env.push(("AMQP_PREFIX".into(), prefix.into()));
    env.push(("AMQP_URL".into(), AMQP_URL.into()));
    env
}

/// Runs the image (its default command, `run`) on free ports and waits until it is ready.
/// A port taken by someone else between picking and binding: qiao exits saying so, and it
/// is started again on other ports.
async fn start_container<'a>(
    podman: &'a Podman,
    image: &str,
    env: &mut Vec<(String, String)>,
) -> (Removed<'a>, u16, u16) {
    for _ in 0..4 {
        let (port, admin) = (free_port(), free_port());
        env.retain(|(k, _)| k != "QIAO_LISTEN" && k != "QIAO_ADMIN_LISTEN");
        env.push(("QIAO_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("QIAO_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")));
        let name = unique_name("qiao-test");
        let mut args =
            vec!["run", "-d", "--name", name.as_str(), "--network", "host", "--label", "qiao-test=container"];
        let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for p in &pairs {
            args.extend(["-e", p.as_str()]);
        }
        args.push(image);
        let container = Removed::container(podman, &name);
        podman.ok(&args);
        match wait_ready(podman, &name, admin).await {
            Ok(()) => return (container, port, admin),
            Err(logs) if logs.contains("cannot listen") => continue,
            Err(logs) => panic!("the qiao container did not become ready:\n{logs}"),
        }
    }
    panic!("no free ports for the qiao container in 4 tries");
}

/// Waits for /readyz 200 on `admin`; `Err` with the logs when the container stopped first.
async fn wait_ready(podman: &Podman, container: &str, admin: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = get(&format!("http://127.0.0.1:{admin}/readyz")).await
            && r.status == 200
        {
            return Ok(());
        }
        let running = podman.output(&["inspect", "--format", "{{.State.Running}}", container]);
        if String::from_utf8_lossy(&running.stdout).trim() != "true" {
            return Err(podman.logs(container));
        }
        assert!(Instant::now() < deadline, "not ready within 60 s:\n{}", podman.logs(container));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Real, effective, saved and filesystem uid of a process, from /proc.
fn process_uids(pid: &str) -> [u32; 4] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    let ids: Vec<u32> = line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
    [ids[0], ids[1], ids[2], ids[3]]
}

/// What the shipped routes declare on the shared broker under a prefix, deleted when this
/// is dropped, failed test or not. Made before the container or pod, so dropped after it: a
/// running Qiao would declare it all again.
struct Queues(String);

impl Drop for Queues {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let mut queues = vec![format!("{prefix}.wms.stockout")];
        let consumed = format!("{prefix}.mes.production-completed");
        queues.extend((1..5).map(|n| format!("{consumed}.retry.{n}")));
        queues.extend([format!("{consumed}.retry.circuit"), format!("{consumed}.dlq"), consumed]);
        // Drop cannot await, and may run on the test's runtime: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let amqp = Amqp::connect(AMQP_URL).await;
                amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
            });
        })
        .join();
    }
}

// ------------------------------------------------------------------------------------------
// The Deployment and its ConfigMaps, under `podman kube play`
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_play_runs_the_deployment_on_the_configmaps_and_its_probes_answer() {
    let Some(podman) = Podman::available() else { return };
    let image = podman.image();
    let stubs = Stubs::start().await;
    let prefix = unique_prefix("kube");
    let _queues = Queues(prefix.clone()); // dropped after the pod
    let id = unique_name("t");
    let configmaps = yaml_docs(&k8s("configmap.yaml"));
    let deployment = yaml_doc(&k8s("deployment.yaml"));

    for _ in 0..4 {
        let (port, admin) = (free_port(), free_port());
        let mut env = container_env(&stubs, &prefix);
        env.push(("QIAO_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("QIAO_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")));
        let (docs, deployment) = kube_overlay(&configmaps, &deployment, &id, &image, &env, port, admin);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qiao.yaml");
        let text: Vec<String> = docs.iter().map(|d| serde_json::to_string_pretty(d).unwrap()).collect();
        std::fs::write(&file, text.join("\n---\n")).unwrap();

        let _pod = Removed::kube(&podman, &id);
        let played = podman.output(&["kube", "play", &file.display().to_string()]);
        assert!(played.status.success(), "podman kube play failed: {}", text_of(&played));
        let ids = String::from_utf8_lossy(&played.stdout).to_string();
        let Some(ctr) = section(&ids, "Container:") else { panic!("no container in kube play's output:\n{ids}") };

        match probes_answer(&podman, &ctr, &deployment).await {
            Err(logs) if logs.contains("cannot listen") => continue,
            Err(logs) => panic!("the pod's probes did not answer:\n{logs}"),
            Ok(()) => {}
        }

        // The routes are the ConfigMap's, not the image's copy: the test left one out.
        let ready = get(&format!("http://127.0.0.1:{admin}/readyz")).await.unwrap().json();
        let in_configmap = count_routes(&docs[0]);
        assert!(in_configmap < count_routes(&configmaps[0]), "the test's ConfigMap has a route less");
        assert_eq!(ready["routes"], in_configmap, "{ready}");
        let detail = ready["checks"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(&format!("{in_configmap} routes from /etc/qiao/routes, hash ")), "{ready}");

        // The Deployment's securityContext holds: not root, read-only root filesystem.
        let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &ctr]);
        assert_eq!(process_uids(pid.trim()), [QIAO_UID; 4]);
        let ro = podman.ok(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", &ctr]);
        assert_eq!(ro.trim(), "true", "readOnlyRootFilesystem");
        let write = podman.output(&["exec", &ctr, "bash", "-c", "echo x > /etc/qiao/x"]);
        assert!(!write.status.success(), "the root filesystem is writable");
        podman.ok(&["exec", &ctr, "bash", "-c", "echo x > /tmp/x"]); // the emptyDir is not

        // And it serves: the README's CRM order through the pod.
        let reply = request(
            "POST",
            &format!("http://127.0.0.1:{port}/crm/orders/801J000000k3QpRIAU"),
            &[("content-type", "application/json")],
            example("crm-order.json"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        return;
    }
    panic!("no free ports for the pod in 4 tries");
}

/// How many routes the files of a ConfigMap declare.
fn count_routes(configmap: &Value) -> usize {
    let files = configmap["data"].as_object().unwrap().values();
    let docs = files.map(|text| serde_saphyr::from_str::<Value>(text.as_str().unwrap()).unwrap());
    docs.map(|d| d["routes"].as_object().map_or(0, |r| r.len())).sum()
}

/// The test's copy of the manifests: names of its own, one replica on the host's network (no
/// pod network here) on free ports, the test's image, stubs and broker prefix instead of the
/// Secret and the cluster's URLs, and one route file left out of the ConfigMap.
/// Returns the documents to play (ConfigMaps first) and the Deployment with its ports, which
/// name the ports of its probes.
fn kube_overlay(
    configmaps: &[Value],
    deployment: &Value,
    id: &str,
    image: &str,
    env: &[(String, String)],
    port: u16,
    admin: u16,
) -> (Vec<Value>, Value) {
    let rename = |name: &str| format!("{name}-{id}");
    let mut docs: Vec<Value> = configmaps.to_vec();
    for cm in &mut docs {
        let name = rename(cm["metadata"]["name"].as_str().unwrap());
        cm["metadata"]["name"] = name.into();
    }
    let left_out = docs[0]["data"].as_object_mut().unwrap().remove("erp-webapi-passthrough.yaml");
    assert!(left_out.is_some(), "the proxy route is in the ConfigMap");

    let mut d = deployment.clone();
    d["metadata"]["name"] = format!("qiao-test-{id}").into();
    d["spec"]["replicas"] = 1.into();
    let spec = &mut d["spec"]["template"]["spec"];
    spec["hostNetwork"] = true.into();
    for v in spec["volumes"].as_array_mut().unwrap() {
        if let Some(name) = v["configMap"]["name"].as_str() {
            v["configMap"]["name"] = rename(name).into();
        }
    }
    let c = &mut spec["containers"][0];
    c["image"] = image.into();
    c["imagePullPolicy"] = "Never".into();
    c.as_object_mut().unwrap().remove("envFrom");
    let mut vars: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect();
    vars.remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    vars.extend(env.iter().cloned());
    c["env"] = vars.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    for p in c["ports"].as_array_mut().unwrap() {
        let n = match p["name"].as_str() {
            Some("http") => port,
            Some("admin") => admin,
            other => panic!("unexpected port {other:?}"),
        };
        p["containerPort"] = n.into();
    }
    // With the host's network the ports only document what listens where, and podman 4.3
    // refuses them ("PortMappings can only be used with Bridge or slirp4netns networking").
    let mut played = d.clone();
    let c = &mut played["spec"]["template"]["spec"]["containers"][0];
    c.as_object_mut().unwrap().remove("ports");
    // The kubelet makes the mount point of schemas/ inside the read-only routes volume
    // (Kubernetes 1.10 and later); podman leaves it to runc, which cannot ("mkdir
    // .../etc/qiao/routes/schemas: read-only file system"). So the routes volume is mounted
    // writable here; the root filesystem stays read-only.
    for m in c["volumeMounts"].as_array_mut().unwrap() {
        if m["mountPath"] == "/etc/qiao/routes" {
            m.as_object_mut().unwrap().remove("readOnly");
        }
    }
    docs.push(played);
    (docs, d)
}

/// Every probe of the Deployment's container, asked as the kubelet would: its path on its
/// (named) port, until 200. `Err` with the logs when the container stopped first.
async fn probes_answer(podman: &Podman, ctr: &str, deployment: &Value) -> Result<(), String> {
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get_ = &c[probe]["httpGet"];
        let path = get_["path"].as_str().unwrap_or_else(|| panic!("{probe} has an httpGet path"));
        let port = resolve_port(c, &get_["port"]);
        let url = format!("http://127.0.0.1:{port}{path}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = get(&url).await
                && r.status == 200
            {
                break;
            }
            let running = podman.output(&["inspect", "--format", "{{.State.Running}}", ctr]);
            if String::from_utf8_lossy(&running.stdout).trim() != "true" {
                return Err(podman.logs(ctr));
            }
            assert!(Instant::now() < deadline, "{probe} {url} did not answer 200 within 60 s:\n{}", podman.logs(ctr));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The line after `title` in `podman kube play`'s output (`Pod:\n<id>\nContainer:\n<id>`).
fn section(output: &str, title: &str) -> Option<String> {
    let mut lines = output.lines().map(str::trim);
    lines.by_ref().find(|l| *l == title)?;
    lines.next().filter(|l| !l.is_empty()).map(str::to_string)
}

// ------------------------------------------------------------------------------------------
// The manifests, checked without a cluster
// ------------------------------------------------------------------------------------------

#[test]
fn the_configmaps_hold_exactly_the_shipped_routes() {
    let docs = yaml_docs(&k8s("configmap.yaml"));
    assert_eq!(docs.len(), 2);
    let expect = |doc: &Value, name: &str, dir: &Path, pick: &dyn Fn(&str) -> bool| {
        assert_eq!(doc["kind"], "ConfigMap");
        assert_eq!(doc["metadata"]["name"], name);
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let file = e.file_name().to_string_lossy().to_string();
            if e.file_type().unwrap().is_file() && pick(&file) {
                files.insert(file, std::fs::read_to_string(e.path()).unwrap());
            }
        }
        let data: BTreeMap<String, String> = doc["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let hint = "run scripts/k8s-configmap > deploy/k8s/configmap.yaml";
        assert_eq!(data.keys().collect::<Vec<_>>(), files.keys().collect::<Vec<_>>(), "{name}: {hint}");
        for (file, text) in &files {
            assert!(data[file] == *text, "{name}: {file} differs from {}: {hint}", dir.join(file).display());
        }
    };
    expect(&docs[0], "qiao-routes", &routes_dir(), &|f| f.ends_with(".yaml") || f.ends_with(".yml"));
    expect(&docs[1], "qiao-schemas", &routes_dir().join("schemas"), &|_| true);

    // And the file is what the script prints, byte for byte.
    let out = Command::new(repo().join("scripts/k8s-configmap")).output().expect("bash runs the script");
    assert!(out.status.success(), "{}", text_of(&out));
    let committed = std::fs::read(k8s("configmap.yaml")).unwrap();
    assert!(
        out.stdout == committed,
        "deploy/k8s/configmap.yaml is stale: run scripts/k8s-configmap > deploy/k8s/configmap.yaml"
    );
}

#[test]
fn the_deployment_service_hpa_and_pdb_fit_together() {
    let d = yaml_doc(&k8s("deployment.yaml"));
    assert_eq!((d["apiVersion"].as_str(), d["kind"].as_str()), (Some("apps/v1"), Some("Deployment")));
    let name = d["metadata"]["name"].as_str().unwrap();
    let selector = labels(&d["spec"]["selector"]["matchLabels"]);
    let pod_labels = labels(&d["spec"]["template"]["metadata"]["labels"]);
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "selector ⊆ pod labels"
    );
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // Probes on the admin listener: liveness /healthz, readiness /readyz.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(resolve_port(c, &c[probe]["httpGet"]["port"]), 9090, "{probe} on the admin port");
    }
    let env: BTreeMap<&str, &str> =
        c["env"].as_array().unwrap().iter().filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?))).collect();
    assert_eq!(env.get("QIAO_LISTEN"), Some(&"0.0.0.0:8080"), "listens where the http port says");
    assert_eq!(env.get("QIAO_ADMIN_LISTEN"), Some(&"0.0.0.0:9090"), "admin where the admin port says");
    assert_eq!(resolve_port(c, &json!("http")), 8080);
    for var in ["ERP_URL", "CRM_URL", "OA_URL", "WMS_URL", "MES_URL", "AMQP_PREFIX"] {
        assert!(env.contains_key(var), "{var} is set (routes/systems.yaml reads it)");
    }
    assert!(
        c["envFrom"].as_array().unwrap().iter().any(|e| e["secretRef"]["name"].is_string()),
        "AMQP_URL and credentials come from a Secret"
    );

    // Resources, so that the HPA's CPU utilisation has a denominator.
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].is_string(), "resources.{kind}.{r}");
        }
    }

    // Non-root (the image's uid), read-only root filesystem, no privileges.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], QIAO_UID);
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.lines().any(|l| l.trim() == format!("USER {QIAO_UID}:{QIAO_UID}")), "the Dockerfile's USER");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));

    // Time to stop: the preStop pause, then Qiao's drain, grace period and shutdown timeout.
    let server = yaml_doc(&routes_dir().join("qiao.yaml"))["server"].clone();
    let grace = server["drain_seconds"].as_u64().unwrap()
        + server["grace_period_seconds"].as_u64().unwrap()
        + server["graceful_shutdown_timeout_seconds"].as_u64().unwrap();
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1].as_str().unwrap().parse().unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(termination > pre_stop + grace, "terminationGracePeriodSeconds {termination} ≤ {pre_stop} + {grace}");

    // Every volume mounted, every ConfigMap it names generated.
    let configmaps: Vec<String> =
        yaml_docs(&k8s("configmap.yaml")).iter().map(|d| d["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let volumes = pod["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap_or_else(|| panic!("volume {}", m["name"]));
        if let Some(cm) = v["configMap"]["name"].as_str() {
            assert!(configmaps.iter().any(|n| n == cm), "ConfigMap {cm} is in configmap.yaml");
        }
    }
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(mounts.contains(&"/etc/qiao/routes") && mounts.contains(&"/etc/qiao/routes/schemas"));
    assert!(mounts.contains(&"/tmp"), "a writable /tmp beside the read-only root");

    // The Service reaches the pods, on ports they have.
    let s = yaml_doc(&k8s("service.yaml"));
    assert_eq!(s["kind"], "Service");
    let s_sel = labels(&s["spec"]["selector"]);
    assert!(!s_sel.is_empty() && s_sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "Service selector");
    for p in s["spec"]["ports"].as_array().unwrap() {
        resolve_port(c, &p["targetPort"]);
    }

    // The HPA scales this Deployment on CPU.
    let h = yaml_doc(&k8s("hpa.yaml"));
    assert_eq!(
        (h["apiVersion"].as_str(), h["kind"].as_str()),
        (Some("autoscaling/v2"), Some("HorizontalPodAutoscaler"))
    );
    let target = &h["spec"]["scaleTargetRef"];
    assert_eq!((target["apiVersion"].as_str(), target["kind"].as_str()), (Some("apps/v1"), Some("Deployment")));
    assert_eq!(target["name"], name);
    let (min, max) = (h["spec"]["minReplicas"].as_u64().unwrap(), h["spec"]["maxReplicas"].as_u64().unwrap());
    assert!((1..=max).contains(&min), "1 ≤ minReplicas {min} ≤ maxReplicas {max}");
    let metrics = h["spec"]["metrics"].as_array().unwrap();
    assert!(!metrics.is_empty());
    for m in metrics {
        assert_eq!(m["type"], "Resource");
        let r = &m["resource"];
        assert!(r["name"] == "cpu" || r["name"] == "memory");
        assert!(["Utilization", "AverageValue"].contains(&r["target"]["type"].as_str().unwrap()));
        if r["target"]["type"] == "Utilization" {
            let pct = r["target"]["averageUtilization"].as_u64().unwrap();
            assert!((1..=100).contains(&pct));
        }
    }

    // The PDB covers the same pods and lets a drain take one at the HPA's minimum.
    let p = yaml_doc(&k8s("pdb.yaml"));
    assert_eq!((p["apiVersion"].as_str(), p["kind"].as_str()), (Some("policy/v1"), Some("PodDisruptionBudget")));
    assert_eq!(labels(&p["spec"]["selector"]["matchLabels"]), selector);
    match (p["spec"]["minAvailable"].as_u64(), p["spec"]["maxUnavailable"].as_u64()) {
        (Some(n), None) => assert!(n < min, "minAvailable {n} would block every drain at {min} replicas"),
        (None, Some(n)) => assert!(n >= 1),
        other => panic!("exactly one of minAvailable and maxUnavailable, as a number: {other:?}"),
    }

    // kustomization.yaml lists every manifest.
    let k = yaml_doc(&k8s("kustomization.yaml"));
    let mut listed: Vec<&str> = k["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut files: Vec<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort_unstable();
    assert_eq!(listed, files);
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml
// ------------------------------------------------------------------------------------------

#[test]
fn the_compose_file_wires_qiao_to_the_broker_the_stubs_and_the_trace_backend() {
    let file = repo().join("docker-compose.yml");
    // As compose reads it with no variable set: every ${NAME:-default} is its default.
    let compose = with_defaults(&std::fs::read_to_string(&file).unwrap());
    let services = compose["services"].as_object().unwrap();
    let qiao = &services["qiao"];
    let env = qiao["environment"].as_object().unwrap();
    let var = |name: &str| env.get(name).and_then(Value::as_str).unwrap_or_else(|| panic!("qiao's {name}"));

    // Each system URL points at a stub service running that stub on that port.
    for kind in ["erp", "crm", "oa", "wms", "mes"] {
        let url = var(&format!("{}_URL", kind.to_uppercase()));
        let (host, port) = url.strip_prefix("http://").and_then(|h| h.split_once(':')).expect("http://host:port");
        let stub = &services[host];
        let cmd: Vec<&str> = stub["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(&cmd[..2], ["stub", kind], "{host} runs the {kind} stub");
        let listen = cmd.iter().position(|a| *a == "--listen").map(|i| cmd[i + 1]).unwrap();
        assert_eq!(listen, format!("0.0.0.0:{port}"), "{host} listens where {kind}_URL points");
        assert_eq!(stub["image"], qiao["image"], "the stubs are the qiao image");
    }
    assert!(var("AMQP_URL").contains("@rabbitmq:5672/"), "the broker service");
    assert!(!var("AMQP_PREFIX").is_empty());
    let otlp = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    let collector = otlp.strip_prefix("http://").and_then(|h| h.split(':').next()).unwrap();
    assert_eq!(services[collector]["environment"]["COLLECTOR_OTLP_ENABLED"], "true", "{collector} takes OTLP");
    let wms = services["wms"]["environment"]["STUB_AMQP_URL"].as_str().unwrap();
    assert_eq!(wms, var("AMQP_URL"), "the WMS stub reads the broker Qiao publishes to");

    // Start order: every dependency exists, and health-gated ones have a health check.
    for (name, service) in services {
        if let Some(deps) = service["depends_on"].as_object() {
            for (dep, how) in deps {
                assert!(services.contains_key(dep), "{name} depends on a missing {dep}");
                if how["condition"] == "service_healthy" {
                    assert!(services[dep]["healthcheck"]["test"].is_array(), "{dep} has a health check");
                }
            }
        }
    }
    for s in ["rabbitmq", "erp", "crm", "oa", "wms", "mes"] {
        assert_eq!(qiao["depends_on"][s]["condition"], "service_healthy", "qiao waits for {s}");
    }
    // Images that cannot be pulled everywhere can be replaced (in the file as written).
    let raw = yaml_doc(&file);
    for (s, var) in [("qiao", "QIAO_IMAGE"), ("rabbitmq", "RABBITMQ_IMAGE"), ("jaeger", "JAEGER_IMAGE")] {
        let image = raw["services"][s]["image"].as_str().unwrap();
        assert!(image.starts_with(&format!("${{{var}:-")), "{s}: ${{{var}:-...}}");
    }

    // And docker-compose itself accepts it.
    match Command::new("docker-compose").args(["-f", &file.display().to_string(), "config", "-q"]).output() {
        Ok(out) => assert!(out.status.success(), "docker-compose config -q: {}", text_of(&out)),
        Err(e) => {
            assert!(!on_ci(), "CI=true, yet docker-compose cannot run: {e}");
            eprintln!(
                "SKIPPED docker-compose config -q: docker-compose cannot run ({e}); scripts/container-bases installs it"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml on the host's network (deploy/compose/host-network.yml), under
// podman-compose
// ------------------------------------------------------------------------------------------

/// Every listener of the host-network stack, by the variable that moves it.
const PORT_VARS: [&str; 14] = [
    "QIAO_PORT",
    "QIAO_ADMIN_PORT",
    "ERP_PORT",
    "CRM_PORT",
    "OA_PORT",
    "WMS_PORT",
    "MES_PORT",
    "RABBITMQ_PORT",
    "RABBITMQ_MANAGEMENT_PORT",
    "RABBITMQ_DIST_PORT",
    "RABBITMQ_EPMD_PORT",
    "OTLP_HTTP_PORT",
    "OTLP_GRPC_PORT",
    "TRACE_UI_PORT",
];

/// The ports the two files fall back to: none may remain once every variable is set.
const DEFAULT_PORTS: [u16; 20] = [
    8080, 9090, 9101, 9102, 9103, 9104, 9105, 5672, 5682, 15672, 15682, 25672, 25682, 4369, 4379, 4317, 4318, 16686,
    14268, 6831,
];

#[test]
fn the_host_network_override_puts_every_service_on_the_host_and_every_port_in_a_variable() {
    let Some(podman_compose) = podman_compose() else { return };
    // Every variable set to a value of its own, each a port no default uses.
    let ports: BTreeMap<&str, u16> = PORT_VARS.iter().enumerate().map(|(i, v)| (*v, 41001 + i as u16)).collect();
    let mut cmd = Command::new(&podman_compose);
    cmd.args(["-p", "qiao-config-check"]).args(compose_files()).arg("config").current_dir(repo());
    for (var, port) in &ports {
        cmd.env(var, port.to_string());
    }
    cmd.env("BIND_ADDRESS", "127.0.0.9").env("RABBITMQ_NODENAME", "qiaocheck@localhost");
    let out = cmd.output().expect("podman-compose runs");
    assert!(out.status.success(), "podman-compose config: {}", text_of(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let config: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));

    let services = config["services"].as_object().unwrap();
    assert_eq!(services.len(), 8, "{text}");
    for (name, s) in services {
        assert_eq!(s["network_mode"], "host", "{name} is on the host's network");
        assert!(s.get("ports").is_none(), "{name} publishes no ports (there is nothing to publish from)");
    }
    // Nothing listens on all interfaces or on a fixed port: every number is a variable's.
    let mut strings = Vec::new();
    collect_strings(&config["services"], &mut strings);
    for s in &strings {
        assert!(!s.contains("0.0.0.0"), "a fixed address: {s}");
        for n in s.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u16>().ok()) {
            assert!(!DEFAULT_PORTS.contains(&n), "a fixed port {n} in {s:?}");
        }
    }
    for (var, port) in &ports {
        assert!(strings.iter().any(|s| s.contains(&port.to_string())), "{var} is used");
    }
    let qiao = &services["qiao"]["environment"];
    assert_eq!(qiao["QIAO_LISTEN"], format!("127.0.0.9:{}", ports["QIAO_PORT"]));
    assert_eq!(qiao["ERP_URL"], format!("http://127.0.0.1:{}", ports["ERP_PORT"]));
    assert_eq!(qiao["AMQP_URL"], format!("amqp://qiao:qiao@127.0.0.1:{}/%2f", ports["RABBITMQ_PORT"]));
    let erp = &services["erp"];
    assert_eq!(erp["command"][3], format!("127.0.0.9:{}", ports["ERP_PORT"]));
    assert_eq!(erp["healthcheck"]["test"][3], format!("exec 3<>/dev/tcp/127.0.0.1/{}", ports["ERP_PORT"]));
    let rabbit = &services["rabbitmq"]["environment"];
    assert_eq!(rabbit["RABBITMQ_NODENAME"], "qiaocheck@localhost");
    assert_eq!(rabbit["ERL_EPMD_PORT"], ports["RABBITMQ_EPMD_PORT"].to_string());
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_brings_the_stack_up_on_the_host_network_in_order_and_the_readme_tour_works() {
    let Some(podman) = Podman::available() else { return };
    let started = Instant::now();
    let qiao_image = podman.image();
    let rabbitmq_image = podman.cached_image("deploy/compose/rabbitmq", "localhost/qiao-compose-rabbitmq");
    let recorder_image = podman.cached_image("deploy/compose/otlp-recorder", "localhost/qiao-compose-otlp-recorder");
    eprintln!("images ready in {:.1?}", started.elapsed());

    // Free ports for every listener, all different; a broker node and project of the test's own.
    let mut ports: BTreeMap<&str, u16> = BTreeMap::new();
    for var in PORT_VARS {
        let port = std::iter::repeat_with(free_port).find(|p| !ports.values().any(|q| q == p)).unwrap();
        ports.insert(var, port);
    }
    let project = unique_name("qiao-test-compose");
    let mut env: Vec<(String, String)> = ports.iter().map(|(k, p)| (k.to_string(), p.to_string())).collect();
    env.extend([
        ("QIAO_IMAGE".into(), qiao_image),
        ("RABBITMQ_IMAGE".into(), rabbitmq_image),
        ("JAEGER_IMAGE".into(), recorder_image),
        ("RABBITMQ_NODENAME".into(), format!("qiaocompose{}@localhost", ports["RABBITMQ_PORT"])),
        ("BIND_ADDRESS".into(), "127.0.0.1".into()),
    ]);
    let mut stack = Compose { podman: &podman, project: project.clone(), env, down: false };
    let at = |var: &str, path: &str| format!("http://127.0.0.1:{}{path}", ports[var]);

    // Up, in depends_on order, health checks run by the helper (podman 4.3 and no systemd here).
    let up_started = Instant::now();
    let up = stack.up();
    assert!(up.status.success(), "deploy/compose/podman-up failed:\n{}\n{}", text_of(&up), stack.logs());
    eprintln!("stack up in {:.1?}", up_started.elapsed());
    let names = stack.containers();
    let services = ["qiao", "rabbitmq", "jaeger", "erp", "crm", "oa", "wms", "mes"];
    for s in services {
        let name = names.get(s).unwrap_or_else(|| panic!("no container for {s}: {names:?}"));
        assert_eq!(podman.ok(&["inspect", "--format", "{{.State.Status}}", name]).trim(), "running", "{s}");
    }

    // depends_on: service_healthy held: RabbitMQ passed its health check before Qiao and the
    // WMS stub started, and so did each stub before Qiao.
    let state = |s: &str| -> Value {
        serde_json::from_str(&podman.ok(&["inspect", "--format", "{{json .State}}", &names[s]])).unwrap()
    };
    let qiao_started = timestamp(state("qiao")["StartedAt"].as_str().unwrap());
    let wms_started = timestamp(state("wms")["StartedAt"].as_str().unwrap());
    let first_healthy = |s: &str| -> chrono::DateTime<chrono::FixedOffset> {
        let st = state(s);
        let health = if st["Health"].is_object() { &st["Health"] } else { &st["Healthcheck"] };
        let passes: Vec<_> = health["Log"].as_array().into_iter().flatten().filter(|e| e["ExitCode"] == 0).collect();
        passes
            .iter()
            .map(|e| timestamp(e["End"].as_str().unwrap()))
            .min()
            .unwrap_or_else(|| panic!("{s} never passed its health check: {st}"))
    };
    let rabbit_healthy = first_healthy("rabbitmq");
    assert!(
        rabbit_healthy < qiao_started,
        "qiao started {qiao_started}, before rabbitmq was healthy ({rabbit_healthy})"
    );
    assert!(rabbit_healthy < wms_started, "wms started {wms_started}, before rabbitmq was healthy ({rabbit_healthy})");
    for s in ["erp", "crm", "oa", "wms", "mes"] {
        let healthy = first_healthy(s);
        assert!(healthy < qiao_started, "qiao started {qiao_started}, before {s} was healthy ({healthy})");
    }
    assert!(first_healthy("qiao") > qiao_started, "qiao's own health check passed (podman-up --wait)");
    eventually(Duration::from_secs(30), "qiao /readyz 200", || async {
        get(&at("QIAO_ADMIN_PORT", "/readyz")).await.is_ok_and(|r| r.status == 200)
    })
    .await;

    // The README's tour. A won CRM order: 200 with the ERP's answer, a Kingdee sales order at
    // the ERP stub. The sender's trace context names the trace to look for.
    let trace = uuid::Uuid::now_v7().simple().to_string();
    let traceparent = format!("00-{trace}-{}-01", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    let reply = request(
        "POST",
        &at("QIAO_PORT", "/crm/orders/801J000000k3QpRIAU"),
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "crm-801J000000k3QpRIAU"),
            ("traceparent", &traceparent),
        ],
        example("crm-order.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}\n{}", String::from_utf8_lossy(&reply.body), stack.logs());
    assert_eq!(reply.header("x-qiao-message-id"), Some("crm-801J000000k3QpRIAU"));
    let answer = reply.json();
    assert_eq!(answer["Result"]["ResponseStatus"]["IsSuccess"], true, "{answer}");
    let number = answer["Result"]["ResponseStatus"]["SuccessEntitys"][0]["Number"].as_str().unwrap_or_default();
    assert!(number.starts_with("XSDD"), "a sales order number: {answer}");
    let at_erp = get(&at("ERP_PORT", "/_stub/requests?last=1")).await.unwrap().json();
    let order = &at_erp[0];
    assert!(order["path"].as_str().unwrap().ends_with("DynamicFormService.Save.common.kdsvc"), "{order}");
    assert_eq!(order["body"]["formid"], "SAL_SaleOrder", "{order}");
    assert!(!order["body"]["data"]["Model"]["FSaleOrderEntry"].as_array().unwrap().is_empty(), "{order}");

    // An audited delivery notice goes out over AMQP through the compose broker: 202 once the
    // broker confirmed it; the WMS stub reads it from qiao.wms.stockout.
    let trace2 = uuid::Uuid::now_v7().simple().to_string();
    let traceparent2 = format!("00-{trace2}-{}-01", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    let notice: Value = serde_json::from_slice(&example("erp-delivery-notice.json")).unwrap();
    let reply = request(
        "POST",
        &at("QIAO_PORT", "/erp/delivery-notices"),
        &[("content-type", "application/json"), ("traceparent", &traceparent2)],
        example("erp-delivery-notice.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let id = reply.header("x-qiao-message-id").expect("a message id").to_string();
    let wms_url = at("WMS_PORT", "/_stub/requests?path=amqp:");
    eventually(Duration::from_secs(20), "the stockout order at the WMS stub, from the queue", || {
        let (url, id) = (wms_url.clone(), id.clone());
        async move {
            get(&url)
                .await
                .is_ok_and(|r| r.json().as_array().is_some_and(|l| l.iter().any(|m| m["message_id"] == id.as_str())))
        }
    })
    .await;
    let got = get(&wms_url).await.unwrap().json();
    let msg = got.as_array().unwrap().iter().find(|m| m["message_id"] == id.as_str()).unwrap();
    assert_eq!(msg["path"], "amqp:qiao.wms.stockout", "{msg}");
    assert_eq!(msg["body"]["deliveryOrder"]["deliveryOrderCode"], notice["Model"]["FBillNo"], "{msg}");
    let carried = msg["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(carried.contains(&trace2), "the trace context travels in the message: {msg}");
    // The queue is the compose broker's, and the WMS stub consumes it there (the management
    // API's queue statistics come every 5 s).
    let auth = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "qiao:qiao"));
    let queue_url = at("RABBITMQ_MANAGEMENT_PORT", "/api/queues/%2f/qiao.wms.stockout");
    let consumers = || {
        let (url, auth) = (queue_url.clone(), auth.clone());
        async move {
            let r = request("GET", &url, &[("authorization", &auth)], vec![]).await.unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()["consumers"].as_u64().unwrap_or_default()
        }
    };
    eventually(Duration::from_secs(20), "the WMS stub consuming qiao.wms.stockout on the compose broker", || async {
        consumers().await >= 1
    })
    .await;

    // Both traces reach the trace backend, asked through Jaeger's query API.
    for (t, kind) in [(&trace, "server"), (&trace2, "producer")] {
        let url = at("TRACE_UI_PORT", &format!("/api/traces/{t}"));
        eventually(Duration::from_secs(30), &format!("trace {t} at the trace backend"), || {
            let url = url.clone();
            async move { get(&url).await.is_ok_and(|r| r.status == 200) }
        })
        .await;
        let found = get(&url).await.unwrap().json();
        let data = &found["data"][0];
        let services: Vec<&str> =
            data["processes"].as_object().unwrap().values().filter_map(|p| p["serviceName"].as_str()).collect();
        assert!(services.contains(&"qiao"), "{found}");
        let kinds: Vec<&str> = data["spans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["tags"].as_array().unwrap().iter())
            .filter(|t| t["key"] == "span.kind")
            .filter_map(|t| t["value"].as_str())
            .collect();
        assert!(kinds.contains(&kind), "a {kind} span in {found}");
    }

    // What is not OTLP gets a 4xx that says why, and the recorder keeps serving.
    let otlp = at("OTLP_HTTP_PORT", "/v1/traces");
    let bad =
        request("POST", &otlp, &[("content-type", "application/x-protobuf")], b"\x0a\x03abc".to_vec()).await.unwrap();
    assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
    assert!(bad.json()["error"].is_string());
    let json = request("POST", &otlp, &[("content-type", "application/json")], b"{}".to_vec()).await.unwrap();
    assert_eq!(json.status, 400, "OTLP/JSON is refused, not taken as protobuf");
    let unknown = get(&at("TRACE_UI_PORT", "/api/traces/0123456789abcdef0123456789abcdef")).await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(get(&at("TRACE_UI_PORT", "/api/traces")).await.unwrap().status, 400, "no service named");
    let services = get(&at("TRACE_UI_PORT", "/api/services")).await.unwrap().json();
    assert_eq!(services["data"], json!(["qiao"]));

    // Down: every container stopped and removed, every port free again.
    let down_started = Instant::now();
    let down = stack.down();
    assert!(down.status.success(), "podman-compose down: {}", text_of(&down));
    eprintln!("stack down in {:.1?}", down_started.elapsed());
    let left = podman.ok(&["ps", "-a", "--quiet", "--filter", &format!("label=io.podman.compose.project={project}")]);
    assert!(left.trim().is_empty(), "containers left after down: {left}");
    for (var, port) in &ports {
        eventually(Duration::from_secs(10), &format!("{var} {port} closed after down"), || async move {
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err()
        })
        .await;
    }
    eprintln!("compose test took {:.1?}", started.elapsed());
}

fn timestamp(text: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("not a time ({e}): {text}"))
}

fn compose_files() -> [&'static str; 4] {
    ["-f", "docker-compose.yml", "-f", "deploy/compose/host-network.yml"]
}

/// podman-compose as scripts/container-bases installs it; `None`, saying why, where it is not
/// there (on CI, where scripts/test runs that script, a failure).
fn podman_compose() -> Option<PathBuf> {
    let path = cache_dir().join("podman-compose/bin/podman-compose");
    if path.exists() {
        return Some(path);
    }
    assert!(!on_ci(), "CI=true, yet {} is missing (scripts/container-bases installs it)", path.display());
    eprintln!("SKIPPED: {} is missing; scripts/container-bases installs it", path.display());
    None
}

/// A compose project of the test's own: taken down when dropped, failed test or not.
struct Compose<'a> {
    podman: &'a Podman,
    project: String,
    env: Vec<(String, String)>,
    down: bool,
}

impl Compose<'_> {
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(repo()).env("CONTAINERS_CONF", &self.podman.conf).envs(self.env.iter().cloned());
        cmd
    }

    /// deploy/compose/podman-up with podman-compose's Python (it has PyYAML).
    fn up(&self) -> Output {
        let venv = cache_dir().join("podman-compose/bin");
        let mut cmd = self.command(&venv.join("python"));
        cmd.arg(repo().join("deploy/compose/podman-up")).args(["-p", &self.project]).args(compose_files());
        cmd.arg("--wait").env("PODMAN_COMPOSE", venv.join("podman-compose"));
        cmd.output().expect("podman-up runs")
    }

    fn down(&mut self) -> Output {
        self.down = true;
        let pc = cache_dir().join("podman-compose/bin/podman-compose");
        self.command(&pc)
            .args(["-p", &self.project])
            .args(compose_files())
            .arg("down")
            .output()
            .expect("podman-compose runs")
    }

    /// service -> container, from the labels podman-compose sets.
    fn containers(&self) -> BTreeMap<String, String> {
        let filter = format!("label=io.podman.compose.project={}", self.project);
        let fmt = r#"{{.Names}} {{index .Labels "com.docker.compose.service"}}"#;
        let out = self.podman.ok(&["ps", "-a", "--filter", &filter, "--format", fmt]);
        out.lines().filter_map(|l| l.split_once(' ')).map(|(n, s)| (s.to_string(), n.to_string())).collect()
    }

    /// Every container's state and last log lines, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (service, name) in self.containers() {
            let status = self.podman.output(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", &name]);
            let logs = self.podman.logs(&name);
            let tail: Vec<&str> = logs.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            all +=
                &format!("--- {service} ({}):\n{}\n", String::from_utf8_lossy(&status.stdout).trim(), tail.join("\n"));
        }
        all
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.down();
        }
        // Whatever down left behind (it failed, or a container outlived it).
        let filter = format!("label=io.podman.compose.project={}", self.project);
        let left = self.podman.output(&["ps", "-a", "--quiet", "--filter", &filter]);
        for id in String::from_utf8_lossy(&left.stdout).split_whitespace() {
            self.podman.output(&["rm", "--force", "--time", "0", id]);
        }
    }
}

/// A compose file's YAML with each `${NAME:-default}` replaced by its default and each
/// `${NAME}` by nothing: what compose reads when no variable is set.
fn with_defaults(text: &str) -> Value {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closing brace") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("QIAO_CONTAINER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qiao-container"))
}

fn k8s(file: &str) -> PathBuf {
    repo().join("deploy/k8s").join(file)
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

fn text_of(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// podman with this machine's containers.conf (scripts/container-bases writes it).
struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// `None`, saying why, where containers cannot run at all; on CI that is a failure.
    fn available() -> Option<Podman> {
        let skip = |why: String| {
            assert!(!on_ci(), "CI=true, yet containers cannot run here: {why}");
            eprintln!("SKIPPED: {why}");
            None
        };
        if !Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return skip(
                "podman is not installed (scripts/container-bases installs it; scripts/test runs that on CI)".into(),
            );
        }
        // The base images and containers.conf: made once, then only checked (it takes a lock).
        let started = Instant::now();
        let bases = Command::new(repo().join("scripts/container-bases")).output().expect("the script runs");
        assert!(bases.status.success(), "scripts/container-bases failed:\n{}", text_of(&bases));
        eprintln!("base images ready in {:.1?}", started.elapsed());
        let conf = std::env::var_os("CONTAINERS_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("containers.conf"));
        let podman = Podman { conf };
        let probe = podman.output(&["run", "--rm", "--network", "host", RUNTIME_BASE, "true"]);
        if !probe.status.success() {
            return skip(format!("podman cannot run a container here: {}", text_of(&probe)));
        }
        Some(podman)
    }

    /// The image built from the Dockerfile on the local bases. One build at a time (a lock):
    /// tests running side by side wait, then find every layer in the cache. The tag is this
    /// checkout's own, so that other worktrees on the machine do not retag it under us.
    fn image(&self) -> String {
        let mut h = DefaultHasher::new();
        repo().hash(&mut h);
        let tag = format!("localhost/qiao-test:{:016x}", h.finish());
        let started = Instant::now();
        let out = Command::new("flock")
            .arg(cache_dir().join("image-build.lock"))
            .args(["podman", "build", "--format", "docker", "--network", "host"])
            .args(["--build-arg", &format!("BUILDER_IMAGE={BUILDER_BASE}")])
            .args(["--build-arg", &format!("RUNTIME_IMAGE={RUNTIME_BASE}")])
            .args(["-t", &tag, "-f", "Dockerfile", "."])
            .current_dir(repo())
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("flock and podman run");
        if !out.status.success() {
            let all = text_of(&out);
            let tail: Vec<&str> = all.lines().rev().take(80).collect();
            panic!("podman build failed:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        eprintln!("image {tag} built in {:.1?}", started.elapsed());
        tag
    }

    /// An image built from `dir` (a Containerfile on the local runtime base), tagged by the
    /// content of its files and the base's id: built once per machine and change, then found.
    fn cached_image(&self, dir: &str, name: &str) -> String {
        let base = self.ok(&["image", "inspect", "--format", "{{.Id}}", RUNTIME_BASE]);
        let mut h = DefaultHasher::new();
        base.trim().hash(&mut h);
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(repo().join(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        for f in &files {
            f.file_name().hash(&mut h);
            std::fs::read(f).unwrap().hash(&mut h);
        }
        let tag = format!("{name}:{:016x}", h.finish());
        if self.output(&["image", "exists", &tag]).status.success() {
            return tag;
        }
        let started = Instant::now();
        // One build at a time; a test that waited finds the image made.
        let out = Command::new("flock")
            .arg(cache_dir().join("image-build.lock"))
            .args(["sh", "-c", r#"podman image exists "$0" || podman build --network host --build-arg RUNTIME_IMAGE="$1" -t "$0" "$2""#])
            .args([tag.as_str(), RUNTIME_BASE, dir])
            .current_dir(repo())
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("flock and podman run");
        assert!(out.status.success(), "podman build {dir} failed:\n{}", text_of(&out));
        eprintln!("image {tag} built in {:.1?}", started.elapsed());
        tag
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("podman").args(args).env("CONTAINERS_CONF", &self.conf).output().expect("podman runs")
    }

    /// Runs podman, panics with its output when it fails; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "podman {} failed: {}", args.join(" "), text_of(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn logs(&self, container: &str) -> String {
        text_of(&self.output(&["logs", container]))
    }
}

/// Removes what a test started, even when it fails: a container, or the pods played from
/// the test's Deployment and the volumes podman made for its ConfigMaps.
struct Removed<'a> {
    podman: &'a Podman,
    name: String,
    kube: bool,
}

impl<'a> Removed<'a> {
    fn container(podman: &'a Podman, name: &str) -> Removed<'a> {
        Removed { podman, name: name.into(), kube: false }
    }

    /// For the id `kube_overlay` gave the Deployment and the ConfigMaps.
    fn kube(podman: &'a Podman, id: &str) -> Removed<'a> {
        Removed { podman, name: id.into(), kube: true }
    }
}

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        if !self.kube {
            self.podman.output(&["rm", "--force", "--time", "0", &self.name]);
            return;
        }
        let filter = format!("name=qiao-test-{}", self.name);
        let pods = self.podman.output(&["pod", "ps", "--quiet", "--filter", &filter]);
        for pod in String::from_utf8_lossy(&pods.stdout).split_whitespace() {
            self.podman.output(&["pod", "rm", "--force", "--time", "0", pod]);
        }
        for cm in ["qiao-routes", "qiao-schemas"] {
            self.podman.output(&["volume", "rm", "--force", &format!("{cm}-{}", self.name)]);
        }
    }
}
