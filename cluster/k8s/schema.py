"""Schema checks for Kubernetes objects, offline.

KubeRay kinds (``ray.io/v1`` RayCluster, RayJob) are checked against the CRDs shipped in
``crds/`` (a copy of KubeRay's ``ray-operator/config/crd/bases``), turned into JSON Schema the
way the API server reads them: ``x-kubernetes-int-or-string``, ``nullable``, defaults (a field
with a default is never missing), and unknown fields rejected (``kubectl --validate=strict``)
except under ``x-kubernetes-preserve-unknown-fields``. Core kinds go through the
``kubernetes-validate`` package's strict schemas; so does the ``metadata`` of custom objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CRD_DIR = Path(__file__).parent / "crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
RAY_GROUP = "ray.io"
DEFAULT_KUBERNETES_VERSION = "1.32"
MAX_ERRORS_PER_OBJECT = 20

_COPIED_KEYS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
                "minProperties", "maxProperties")


@dataclass(frozen=True)
class SchemaError:
    """One schema violation: dotted field path (``spec.workerGroupSpecs[0].template``) and message."""

    field: str
    message: str


def field_path(parts: Any) -> str:
    """``["spec", "workerGroupSpecs", 0, "x"]`` -> ``spec.workerGroupSpecs[0].x``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def openapi_to_jsonschema(node: dict) -> dict:
    """Convert one CRD ``openAPIV3Schema`` node (recursively) to strict JSON Schema."""
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    out: dict[str, Any] = {k: node[k] for k in _COPIED_KEYS if k in node}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "items" in node:
        out["items"] = openapi_to_jsonschema(node["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [openapi_to_jsonschema(n) for n in node[key]]
    props = node.get("properties")
    if props is not None:
        out["properties"] = {k: openapi_to_jsonschema(v) for k, v in props.items()}
        required = [r for r in node.get("required", []) if "default" not in props.get(r, {})]
        if required:
            out["required"] = required
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = openapi_to_jsonschema(node["additionalProperties"])
    elif props is not None and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def crd_schema(kind: str, version: str = "v1") -> dict:
    """JSON Schema of a KubeRay kind at ``ray.io/<version>``."""
    import yaml

    if kind not in CRD_FILES:
        raise KeyError(f"no KubeRay CRD for kind {kind!r} (known: {', '.join(CRD_FILES)})")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=loader)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # checked by check_metadata
            return schema
    raise KeyError(f"KubeRay CRD {kind} has no version {version!r}")


@lru_cache(maxsize=None)
def _validator(kind: str, version: str):
    import jsonschema

    return jsonschema.Draft202012Validator(crd_schema(kind, version))


def _errors_from(validator, obj: dict, prefix: tuple = ()) -> list[SchemaError]:
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [SchemaError(field_path(prefix + tuple(e.absolute_path)), _message(e))
            for e in errors[:MAX_ERRORS_PER_OBJECT]]


def _message(error) -> str:
    if error.validator == "additionalProperties" and error.validator_value is False:
        return f"unknown field(s): {error.message.split('(')[-1].rstrip(')')}"
    return error.message if len(error.message) < 300 else error.message[:297] + "..."


def check_custom(obj: dict, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[SchemaError]:
    """Schema errors of a ``ray.io`` object (RayCluster, RayJob)."""
    version = str(obj.get("apiVersion", "")).split("/", 1)[-1]
    kind = str(obj.get("kind", ""))
    try:
        validator = _validator(kind, version)
    except KeyError as exc:
        return [SchemaError("kind" if kind not in CRD_FILES else "apiVersion", str(exc.args[0]))]
    return _errors_from(validator, obj) + check_metadata(obj.get("metadata"), kubernetes_version)


@lru_cache(maxsize=None)
def _core_validator(schema_file: str, kubernetes_version: str):
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    version = _schema_version(kubernetes_version)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = utils.schema_contents(f"{folder}/{schema_file}", version)
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _schema_version(kubernetes_version: str) -> str:
    from kubernetes_validate import utils

    wanted = utils.major_minor(kubernetes_version.lstrip("v"))
    candidates = [v for v in utils.all_versions()
                  if tuple(map(int, utils.major_minor(v).split("."))) <= tuple(map(int, wanted.split(".")))]
    if not candidates:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}")
    return candidates[-1]


def check_metadata(metadata: Any, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[SchemaError]:
    """``metadata`` against the core ``ObjectMeta`` schema."""
    if metadata is None:
        return [SchemaError("metadata", "metadata is required")]
    return _errors_from(_core_validator("objectmeta-meta-v1.json", kubernetes_version), metadata,
                        ("metadata",))


def check_core(obj: dict, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[SchemaError]:
    """Schema errors of a core Kubernetes object (Secret, PersistentVolumeClaim, NetworkPolicy, ...)."""
    import re

    api_version = str(obj.get("apiVersion", ""))
    kind = str(obj.get("kind", ""))
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    name = f"{kind.lower()}-{group_version}.json"
    try:
        validator = _core_validator(name, kubernetes_version)
    except (FileNotFoundError, OSError):
        return [SchemaError("kind", f"no Kubernetes {kubernetes_version} schema for "
                                    f"{api_version} {kind}")]
    return _errors_from(validator, obj)


def check_object(obj: dict, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[SchemaError]:
    """Schema errors of any object: KubeRay CRD schemas for ``ray.io``, core schemas otherwise."""
    if not isinstance(obj, dict):
        return [SchemaError("(object)", "a Kubernetes object must be a mapping")]
    missing = [k for k in ("apiVersion", "kind") if not obj.get(k)]
    if missing:
        return [SchemaError(k, f"{k} is required") for k in missing]
    if str(obj["apiVersion"]).split("/")[0] == RAY_GROUP:
        return check_custom(obj, kubernetes_version)
    return check_core(obj, kubernetes_version)
