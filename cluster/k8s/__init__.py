"""KubeRay manifests: render them for an experiment, validate them offline (CRD schemas, core
Kubernetes schemas, the KubeRay controller's rules)."""
