//! The RequestResponse variant of the corpus: request and response bodies
//! for the benign traffic, as an audit policy at level RequestResponse logs
//! them (`kaudit bench corpus --level request-response`).
//!
//! Each body is the object the request read or wrote (a Pod, a Node, a
//! Lease, a Deployment, ... or a list of them), with the `managedFields`,
//! labels, annotations, spec and status that make real objects 5 to 20 KB:
//! the size is drawn per event from its own random stream, so the events
//! themselves (ids, times, users) are those of the Metadata corpus of the
//! same seed. Watches (ResponseStarted) and deletes keep no body, as the
//! API server logs them; secrets, config maps and token reviews stay at
//! Metadata, as every published policy keeps them (their bodies are
//! credentials). Attacks are left as generated. The content is benign: no
//! privileged container, host namespace, hostPath or credential in a
//! config, so that the catalogue's body rules have nothing to fire on.

use std::fmt::Write as _;

use super::event::{Ev, ObjRef};
use super::rng::Rng;

/// Resources whose bodies no policy logs.
const METADATA_ONLY: &[&str] = &[
    "secrets",
    "configmaps",
    "tokenreviews",
    "subjectaccessreviews",
];

/// Builds the bodies of one event; keeps its buffers between events.
pub struct Bodies {
    rng: Rng,
    request: String,
    response: String,
}

impl Bodies {
    pub fn new(rng: Rng) -> Self {
        Bodies {
            rng,
            request: String::new(),
            response: String::new(),
        }
    }

    /// `ev` at level RequestResponse with its bodies, or `None` when it
    /// stays as it is.
    pub fn dress<'b>(&'b mut self, ev: &Ev<'b>) -> Option<Ev<'b>> {
        let obj = ev.object?;
        if ev.level != "Metadata"
            || ev.request_object.is_some()
            || ev.response_object.is_some()
            || METADATA_ONLY.contains(&obj.resource)
            || obj.sub == "exec"
            || obj.sub == "attach"
            || obj.sub == "portforward"
            || ev.verb == "watch"
            || ev.verb == "delete"
            || ev.verb == "deletecollection"
        {
            return None;
        }
        let target = self.rng.range(5_000, 20_000) as usize;
        let writes = matches!(ev.verb, "create" | "update" | "patch");
        self.request.clear();
        self.response.clear();
        if ev.verb == "list" {
            list(&mut self.response, &obj, target, &mut self.rng);
        } else {
            // A write sends the object and gets it back; a read gets it.
            let half = if writes { target / 2 } else { target };
            object(&mut self.response, &obj, half, &mut self.rng);
            if writes {
                object(&mut self.request, &obj, half, &mut self.rng);
            }
        }
        Some(Ev {
            level: "RequestResponse",
            request_object: (!self.request.is_empty()).then_some(self.request.as_str()),
            response_object: Some(self.response.as_str()),
            ..*ev
        })
    }
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "pods" => ("Pod", "v1"),
        "nodes" => ("Node", "v1"),
        "leases" => ("Lease", "coordination.k8s.io/v1"),
        "endpoints" => ("Endpoints", "v1"),
        "endpointslices" => ("EndpointSlice", "discovery.k8s.io/v1"),
        "events" => ("Event", "v1"),
        "deployments" => ("Deployment", "apps/v1"),
        "replicasets" => ("ReplicaSet", "apps/v1"),
        "services" => ("Service", "v1"),
        "serviceaccounts" => ("ServiceAccount", "v1"),
        "namespaces" => ("Namespace", "v1"),
        _ => ("Object", "v1"),
    }
}

/// A list of objects of `obj`'s kind, about `target` bytes.
fn list(out: &mut String, obj: &ObjRef<'_>, target: usize, rng: &mut Rng) {
    let (kind, api) = kind_of(obj.resource);
    let _ = write!(
        out,
        r#"{{"kind":"{kind}List","apiVersion":"{api}","metadata":{{"resourceVersion":"{}"}},"items":["#,
        rng.range(1_000_000, 9_000_000)
    );
    let n = (target / 4_000).max(1);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        object(out, obj, target / n, rng);
    }
    out.push_str("]}");
}

/// One object of `obj`'s kind, about `target` bytes.
fn object(out: &mut String, obj: &ObjRef<'_>, target: usize, rng: &mut Rng) {
    let start = out.len();
    let (kind, api) = kind_of(obj.resource);
    let name = if obj.name.is_empty() {
        "item"
    } else {
        obj.name
    };
    let ns = if obj.namespace.is_empty() {
        String::new()
    } else {
        format!(r#""namespace":"{}","#, obj.namespace)
    };
    let _ = write!(
        out,
        r#"{{"kind":"{kind}","apiVersion":"{api}","metadata":{{"name":"{name}",{ns}"uid":"{:08x}-5c1e-4b7a-9f3d-{:012x}","resourceVersion":"{}","generation":{},"creationTimestamp":"2026-10-01T08:00:00Z","labels":{{"app.kubernetes.io/name":"{name}","app.kubernetes.io/part-of":"shop","pod-template-hash":"7d9f8c6b5"}},"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{{\"apiVersion\":\"{api}\",\"kind\":\"{kind}\"}}\n"}},"managedFields":["#,
        rng.next_u64() as u32,
        rng.next_u64() & 0xffff_ffff_ffff,
        rng.range(1_000_000, 9_000_000),
        rng.range(1, 40),
    );
    // managedFields: what makes real objects large.
    let mut first = true;
    // Room left for the spec and status written after them.
    let reserve = match obj.resource {
        "pods" | "deployments" | "replicasets" => 1_600,
        "nodes" => 900,
        _ => 200,
    };
    while out.len() - start < target.saturating_sub(reserve) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(
            out,
            r#"{{"manager":"{}","operation":"Update","apiVersion":"{api}","time":"2026-11-0{}T09:{:02}:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app.kubernetes.io/name":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"app\"}}":{{".":{{}},"f:image":{{}},"f:imagePullPolicy":{{}},"f:name":{{}},"f:ports":{{".":{{}},"k:{{\"containerPort\":8080,\"protocol\":\"TCP\"}}":{{".":{{}},"f:containerPort":{{}},"f:protocol":{{}}}}}},"f:resources":{{".":{{}},"f:limits":{{".":{{}},"f:cpu":{{}},"f:memory":{{}}}}}}}}}}}},"f:status":{{"f:conditions":{{"k:{{\"type\":\"Ready\"}}":{{".":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}}}}}}}}}}"#,
            rng.pick(&[
                "kube-controller-manager",
                "kubelet",
                "kubectl-client-side-apply",
                "helm",
                "argocd-controller"
            ]),
            rng.range(1, 9),
            rng.below(60),
        );
    }
    out.push_str("]},");
    spec_and_status(out, obj.resource, name, rng);
    out.push('}');
}

fn spec_and_status(out: &mut String, resource: &str, name: &str, rng: &mut Rng) {
    match resource {
        "pods" | "deployments" | "replicasets" => {
            let pod = format!(
                r#"{{"containers":[{{"name":"app","image":"registry.example.com/shop/{name}:1.{}.{}","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"env":[{{"name":"LOG_LEVEL","value":"info"}},{{"name":"POD_IP","valueFrom":{{"fieldRef":{{"fieldPath":"status.podIP"}}}}}}],"resources":{{"limits":{{"cpu":"500m","memory":"512Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"readinessProbe":{{"httpGet":{{"path":"/readyz","port":8080}},"periodSeconds":10}},"securityContext":{{"allowPrivilegeEscalation":false,"runAsNonRoot":true,"capabilities":{{"drop":["ALL"]}}}}}}],"serviceAccountName":"{name}","nodeName":"node-{:02}","restartPolicy":"Always","terminationGracePeriodSeconds":30}}"#,
                rng.range(1, 30),
                rng.below(10),
                rng.below(48),
            );
            if resource == "pods" {
                let _ = write!(
                    out,
                    r#""spec":{pod},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"2026-11-02T10:00:00Z"}}],"podIP":"10.244.{}.{}","startTime":"2026-11-02T09:59:00Z"}}"#,
                    rng.below(48),
                    rng.range(2, 250),
                );
            } else {
                let _ = write!(
                    out,
                    r#""spec":{{"replicas":3,"selector":{{"matchLabels":{{"app.kubernetes.io/name":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app.kubernetes.io/name":"{name}"}}}},"spec":{pod}}}}},"status":{{"replicas":3,"readyReplicas":3,"availableReplicas":3}}"#
                );
            }
        }
        "nodes" => {
            let _ = write!(
                out,
                r#""spec":{{"podCIDR":"10.244.{}.0/24","providerID":"aws:///eu-west-1a/i-0{:015x}"}},"status":{{"capacity":{{"cpu":"8","memory":"32Gi","pods":"110"}},"allocatable":{{"cpu":"7910m","memory":"30Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady"}},{{"type":"MemoryPressure","status":"False"}},{{"type":"DiskPressure","status":"False"}}],"addresses":[{{"type":"InternalIP","address":"10.0.{}.{}"}}],"nodeInfo":{{"kubeletVersion":"v1.31.2","containerRuntimeVersion":"containerd://1.7.22","osImage":"Ubuntu 24.04 LTS"}}}}"#,
                rng.below(48),
                rng.next_u64() & 0xfff_ffff_ffff_ffff,
                rng.below(4),
                rng.range(10, 250),
            );
        }
        "leases" => {
            let _ = write!(
                out,
                r#""spec":{{"holderIdentity":"{name}","leaseDurationSeconds":40,"renewTime":"2026-11-03T09:00:{:02}.000000Z"}}"#,
                rng.below(60)
            );
        }
        _ => {
            let _ = write!(
                out,
                r#""spec":{{"ports":[{{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}}]}},"status":{{}}"#
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::event::{Groups, Stage, Status, User};

    fn ev<'a>(verb: &'a str, resource: &'a str) -> Ev<'a> {
        Ev {
            level: "Metadata",
            id: Rng::new(1).uuid(),
            stage: Stage::ResponseComplete,
            uri: "/api/v1/namespaces/shop/pods/web",
            verb,
            user: User {
                username: "system:node:node-01",
                uid: None,
                groups: Groups::List(&["system:nodes"]),
                extra: crate::bench::event::Extra::None,
            },
            impersonated: None,
            source_ip: "10.0.0.1",
            user_agent: "kubelet/v1.31.2",
            object: Some(ObjRef {
                resource,
                namespace: "shop",
                name: "web",
                ..ObjRef::default()
            }),
            status: Status::ok(200),
            request_object: None,
            response_object: None,
            received: 0,
            stage_time: 0,
            decision: "allow",
            reason: "",
            annotation: None,
        }
    }

    #[test]
    fn bodies_are_json_objects_of_the_promised_size() {
        let mut b = Bodies::new(Rng::new(3));
        for (verb, resource) in [
            ("get", "pods"),
            ("list", "pods"),
            ("update", "leases"),
            ("patch", "nodes"),
            ("create", "deployments"),
            ("get", "services"),
        ] {
            for _ in 0..20 {
                let e = ev(verb, resource);
                let dressed = b.dress(&e).unwrap();
                assert_eq!(dressed.level, "RequestResponse");
                let mut size = 0;
                for body in [dressed.request_object, dressed.response_object]
                    .into_iter()
                    .flatten()
                {
                    let v: serde_json::Value = serde_json::from_str(body).unwrap();
                    assert!(v.is_object(), "{verb} {resource}");
                    size += body.len();
                }
                assert!(
                    (4_000..=24_000).contains(&size),
                    "{verb} {resource}: {size}"
                );
                assert_eq!(
                    dressed.request_object.is_some(),
                    matches!(verb, "create" | "update" | "patch")
                );
            }
        }
        for (verb, resource) in [
            ("get", "secrets"),
            ("watch", "pods"),
            ("delete", "pods"),
            ("list", "configmaps"),
        ] {
            assert!(b.dress(&ev(verb, resource)).is_none(), "{verb} {resource}");
        }
    }
}
