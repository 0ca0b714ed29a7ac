//! What ops run: the image built from the Dockerfile, the Kubernetes manifests in deploy/k8s/
//! and docker-compose.yml.
//!
//! With podman (scripts/container-bases installs it and makes the local base images; CI runs
//! it from scripts/test), the image is built on those bases and run with host networking on
//! free ports, against stub systems in this process and the RabbitMQ on 127.0.0.1:5672; the
//! Deployment and its ConfigMaps are started with `podman kube play`. Without podman those
//! two tests say why and pass (on CI, where CI=true, they fail instead). The manifests and the
//! compose file are checked everywhere.

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
    let metrics = get(&format!("http://127.0.0.1:{admin}/metrics")).await.unwrap();
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains(r#"qiao_http_requests_total{route="crm-order-to-erp",status="200"} 1"#),
        "the request is counted on /metrics"
    );

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
    let compose = yaml_doc(&file);
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
    // Images that cannot be pulled everywhere can be replaced.
    for (s, var) in [("qiao", "QIAO_IMAGE"), ("rabbitmq", "RABBITMQ_IMAGE"), ("jaeger", "JAEGER_IMAGE")] {
        assert!(services[s]["image"].as_str().unwrap().starts_with(&format!("${{{var}:-")), "{s}: ${{{var}:-...}}");
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
