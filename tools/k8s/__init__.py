"""Kubernetes manifests from the mesh topology: `python -m tools.k8s generate|check|...`.

`mesh/topology.yaml` is the single source of truth (DESIGN.md §7, §10). Everything under `k8s/`
that depends on it is generated: one kustomize directory per service (`k8s/services/<name>/`),
the edge (`k8s/edge/`), the Envoy ConfigMaps (rendered by `suuupra_runtime.mesh.envoy` with
`KubernetesAddressing`), the PostgreSQL roles/databases and the broker/database NetworkPolicies
in the components. `check` fails when `k8s/` differs from what the topology generates (a service
without manifests or the reverse, a NetworkPolicy whose callers differ from the topology).
Hand-written (static): `k8s/base/`, the other files of `k8s/components/*`, `k8s/overlays/*`;
none of them depends on the service list.

`secrets` prints one PostgreSQL credential Secret per service with a fresh random password
(`python -m tools.k8s secrets | kubectl create -f -`), so no password lives in git.
`streams` runs inside the cluster (the `nats-streams` Job) and creates or updates one JetStream
stream per topology stream, replicated across the NATS cluster.

Modules: `layout` (names, labels, in-pod ports), `workloads` (pods, Deployments, Services,
Certificates, HPA, PDB), `policies` (NetworkPolicies), `storage` (CloudNativePG), `streams`
(JetStream), `tree` (render/compare/write k8s/), `audit` and `crds` (checks over rendered
manifests, used by the tests).
"""
