"""An augmentation policy is data: ops with probability and magnitude, a rule for how many
ops apply per sample, a JSON form and a short string form.

Execution order for one sample (one view):

1. ``pre``: every op in order, each applied with its own probability (crops, flips, jitter).
2. ``choices``: draw ``k`` from ``num_ops`` (a distribution over 0, 1, 2, ...), pick ``k``
   entries of ``choices`` uniformly (with or without replacement), and run the ops of each
   entry in order, each with its own probability. An entry is one op (RandAugment, PBA) or
   a sub-policy of several ops (AutoAugment). With ``until_applied`` (PBA's rule) ``k``
   counts entries that ran instead: every entry is visited once in a random order, its ops
   each with their probability, until ``k`` entries had an op fire (or none are left), so
   probabilities weigh which ops run rather than thin out how many.

Magnitudes live on a fixed 0-10 scale; each op's table (``augtrain.augment.image.ops`` for
images) maps them to parameters. An op whose magnitude is a range (``magnitude_range``) draws
it uniformly per application (TrivialAugment, SimCLR's blur).

A policy belongs to one modality (``modality``, ``image`` by default): its ops are looked up in
that modality's catalogue (``augtrain.augment.registry``), and so are the standard policies
``parse_policy`` resolves. The JSON form carries ``modality`` when it is not ``image``; the
string form starts with ``modality=NAME|`` then.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from augtrain.augment.registry import PolicyError, catalogue, list_policies, ops

MAGNITUDE_MAX = 10.0
MAX_COPIES = 64
DEFAULT_MODALITY = "image"


@dataclass(frozen=True)
class Op:
    """One op of a policy: registered op name, probability, magnitude (0-10) and fixed args."""

    name: str
    p: float = 1.0
    magnitude: float = 0.0
    magnitude_range: tuple[float, float] | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (defaults left out)."""
        out: dict[str, Any] = {"name": self.name}
        if self.p != 1.0:
            out["p"] = self.p
        if self.magnitude_range is not None:
            out["magnitude_range"] = list(self.magnitude_range)
        elif self.magnitude != 0.0:
            out["magnitude"] = self.magnitude
        if self.args:
            out["args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.args.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], modality: str = DEFAULT_MODALITY) -> Op:
        """Inverse of ``to_dict``; validates against the ops of ``modality``."""
        if not isinstance(data, dict) or "name" not in data:
            raise PolicyError(f"op entry must be an object with a 'name', got {data!r}")
        unknown = set(data) - {"name", "p", "magnitude", "magnitude_range", "args"}
        if unknown:
            raise PolicyError(f"op {data['name']!r}: unknown field(s) {sorted(unknown)}")
        rng = data.get("magnitude_range")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.get("args") or {}).items()}
        op = cls(
            name=data["name"],
            p=float(data.get("p", 1.0)),
            magnitude=float(data.get("magnitude", 0.0)),
            magnitude_range=(float(rng[0]), float(rng[1])) if rng is not None else None,
            args=args,
        )
        op.validate(modality)
        return op

    def validate(self, modality: str = DEFAULT_MODALITY) -> None:
        """Raise PolicyError naming this op when its name (in ``modality``'s catalogue), p,
        magnitude or args are invalid."""
        registered = ops(modality)
        if self.name not in registered:
            raise PolicyError(f"unknown op {self.name!r} for modality {modality!r}; registered ops: "
                              f"{', '.join(sorted(registered))}")
        if not (isinstance(self.p, (int, float)) and 0.0 <= self.p <= 1.0):
            raise PolicyError(f"op {self.name!r}: probability p={self.p!r} is outside [0, 1]")
        for m in (self.magnitude,) + (self.magnitude_range or ()):
            if not (isinstance(m, (int, float)) and 0.0 <= m <= MAGNITUDE_MAX):
                raise PolicyError(f"op {self.name!r}: magnitude {m!r} is outside [0, {MAGNITUDE_MAX:g}]")
        if self.magnitude_range is not None and self.magnitude_range[0] > self.magnitude_range[1]:
            raise PolicyError(f"op {self.name!r}: magnitude_range {self.magnitude_range} is decreasing")
        registered[self.name].check_args(self.args)

    def to_string(self) -> str:
        """Short token: ``name[@p][:m | :lo~hi][{k=v;...}]``."""
        s = self.name
        if self.p != 1.0:
            s += f"@{_num(self.p)}"
        if self.magnitude_range is not None:
            s += f":{_num(self.magnitude_range[0])}~{_num(self.magnitude_range[1])}"
        elif self.magnitude != 0.0:
            s += f":{_num(self.magnitude)}"
        if self.args:
            parts = []
            for k, v in sorted(self.args.items()):
                parts.append(f"{k}=" + ("~".join(_num(x) for x in v) if isinstance(v, tuple) else _num(v)))
            s += "{" + ";".join(parts) + "}"
        return s


@dataclass(frozen=True)
class Policy:
    """A whole augmentation policy (see the module docstring for how it executes).

    ``num_ops``: probabilities of applying 0, 1, 2, ... entries of ``choices`` (sums to 1).
    ``views``: how many views a self-supervised objective usually takes from this policy.
    ``copies``: augmented copies of each labelled sample a fine-tuning epoch holds beside the
    unaugmented original (EDA's ``n_aug``); 0 (the default) means one augmented view per sample.
    ``modality``: whose catalogue the ops come from.
    """

    name: str = "custom"
    pre: tuple[Op, ...] = ()
    choices: tuple[tuple[Op, ...], ...] = ()
    num_ops: tuple[float, ...] = (1.0,)
    replace: bool = True
    until_applied: bool = False  # k counts entries that ran (PBA); needs replace=False
    views: int = 1
    copies: int = 0
    modality: str = DEFAULT_MODALITY

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise PolicyError naming the op or field at fault."""
        registered = ops(self.modality)  # raises for a modality without a catalogue
        for op in self.pre:
            op.validate(self.modality)
        for entry in self.choices:
            if not entry:
                raise PolicyError(f"policy {self.name!r}: an entry of 'choices' is empty")
            for op in entry:
                op.validate(self.modality)
        if not self.num_ops or any(not (0.0 <= q <= 1.0) for q in self.num_ops):
            raise PolicyError(f"policy {self.name!r}: num_ops {self.num_ops} must be probabilities")
        if not math.isclose(sum(self.num_ops), 1.0, abs_tol=1e-6):
            raise PolicyError(f"policy {self.name!r}: num_ops {self.num_ops} must sum to 1")
        if self.max_num_ops > 0 and not self.choices:
            raise PolicyError(f"policy {self.name!r}: num_ops allows {self.max_num_ops} op(s) but 'choices' is empty")
        if not self.replace and self.max_num_ops > len(self.choices):
            raise PolicyError(
                f"policy {self.name!r}: {self.max_num_ops} ops without replacement from {len(self.choices)} choices"
            )
        if self.until_applied and self.replace:
            raise PolicyError(f"policy {self.name!r}: until_applied visits each entry once, so it needs replace=False")
        if self.views not in (1, 2):
            raise PolicyError(f"policy {self.name!r}: views must be 1 or 2, got {self.views}")
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or not 0 <= self.copies <= MAX_COPIES:
            raise PolicyError(f"policy {self.name!r}: copies must be an int in [0, {MAX_COPIES}], got {self.copies!r}")
        crops = [op.name for op in self.all_ops() if registered[op.name].sets_size]
        if any(registered[op.name].sets_size for entry in self.choices for op in entry):
            raise PolicyError(f"policy {self.name!r}: a crop/resize op ({crops}) must be in 'pre', not in 'choices'")
        if len(crops) > 1:
            raise PolicyError(f"policy {self.name!r}: at most one crop/resize op, got {crops}")

    @property
    def max_num_ops(self) -> int:
        """Largest number of ``choices`` entries one sample can get."""
        return max(i for i, q in enumerate(self.num_ops) if q > 0)

    @property
    def mean_num_ops(self) -> float:
        """Expected number of ``choices`` entries drawn per sample (the mean of ``num_ops``)."""
        return float(sum(i * q for i, q in enumerate(self.num_ops)))

    @property
    def has_crop(self) -> bool:
        """True when an op of the policy sets the output size (random resized crop)."""
        registered = ops(self.modality)
        return any(registered[op.name].sets_size for op in self.pre)

    def all_ops(self) -> list[Op]:
        """Every op of the policy, ``pre`` first, then the ops of ``choices`` in order."""
        return list(self.pre) + [op for entry in self.choices for op in entry]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``num_ops`` is an int when it is a fixed count."""
        fixed = [i for i, q in enumerate(self.num_ops) if q > 0]
        num_ops: Any = fixed[0] if len(fixed) == 1 else {str(i): q for i, q in enumerate(self.num_ops) if q > 0}
        return {
            "name": self.name,
            **({"modality": self.modality} if self.modality != DEFAULT_MODALITY else {}),
            "pre": [op.to_dict() for op in self.pre],
            "choices": [[op.to_dict() for op in entry] for entry in self.choices],
            "num_ops": num_ops,
            "replace": self.replace,
            **({"until_applied": True} if self.until_applied else {}),
            "views": self.views,
            **({"copies": self.copies} if self.copies else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of ``to_dict``; raises PolicyError naming the field or op at fault."""
        if not isinstance(data, dict):
            raise PolicyError(f"a policy must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"name", "modality", "pre", "choices", "num_ops", "replace", "until_applied", "views", "copies"}
        if unknown:
            raise PolicyError(f"policy: unknown field(s) {sorted(unknown)}")
        modality = data.get("modality", DEFAULT_MODALITY)
        if not isinstance(modality, str):
            raise PolicyError(f"policy: modality must be a string, got {modality!r}")
        choices = []
        for entry in data.get("choices", []):
            entry = entry if isinstance(entry, list) else [entry]
            choices.append(tuple(Op.from_dict(op, modality) for op in entry))
        return cls(
            name=str(data.get("name", "custom")),
            modality=modality,
            pre=tuple(Op.from_dict(op, modality) for op in data.get("pre", [])),
            choices=tuple(choices),
            num_ops=num_ops_distribution(data.get("num_ops", 1 if choices else 0)),
            replace=bool(data.get("replace", True)),
            until_applied=bool(data.get("until_applied", False)),
            views=int(data.get("views", 1)),
            copies=_int_field(data, "copies", 0),
        )

    def to_json(self) -> str:
        """Compact JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Parse ``to_json`` output."""
        return cls.from_dict(json.loads(text))

    def to_string(self) -> str:
        """Short form for logs; ``parse_policy`` reads it back.

        A standard policy prints its spec (``rand-n2-m9``); others print
        ``pre=OP,OP|choices=OP+OP,OP|n=2|norepl|untilapplied|views=2|copies=4`` with OP tokens as in
        ``Op.to_string``, after ``modality=NAME|`` for a modality other than ``image``.
        """
        spec = standard_spec_of(self)
        if spec is not None:
            return f"{self.modality}:{spec}" if self.modality != DEFAULT_MODALITY else spec
        parts = [f"modality={self.modality}"] if self.modality != DEFAULT_MODALITY else []
        parts += [f"name={self.name}"] if self.name != "custom" else []
        if self.pre:
            parts.append("pre=" + ",".join(op.to_string() for op in self.pre))
        if self.choices:
            parts.append("choices=" + ",".join("+".join(op.to_string() for op in e) for e in self.choices))
        fixed = [i for i, q in enumerate(self.num_ops) if q > 0]
        if len(fixed) == 1:
            parts.append(f"n={fixed[0]}")
        else:
            parts.append("n=" + "/".join(f"{i}:{_num(q)}" for i, q in enumerate(self.num_ops) if q > 0))
        if not self.replace:
            parts.append("norepl")
        if self.until_applied:
            parts.append("untilapplied")
        if self.views != 1:
            parts.append(f"views={self.views}")
        if self.copies:
            parts.append(f"copies={self.copies}")
        return "|".join(parts)

    def __str__(self) -> str:
        return self.to_string()


def _int_field(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"policy: {key} must be a whole number, got {value!r}")
    return value


def num_ops_distribution(value: Any) -> tuple[float, ...]:
    """``2`` -> ``(0, 0, 1)``; ``{0: .2, 1: .3, 2: .5}`` (keys may be strings) -> ``(.2, .3, .5)``."""
    if isinstance(value, bool):
        raise PolicyError(f"num_ops must be a count or a distribution, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise PolicyError(f"num_ops must be >= 0, got {value}")
        return tuple([0.0] * value + [1.0])
    if isinstance(value, dict):
        try:
            items = {int(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise PolicyError(f"num_ops distribution must map counts to probabilities, got {value!r}") from None
        if not items or min(items) < 0:
            raise PolicyError(f"num_ops distribution has invalid counts: {value!r}")
        return tuple(items.get(i, 0.0) for i in range(max(items) + 1))
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    raise PolicyError(f"num_ops must be a count or a distribution, got {value!r}")


_OP_TOKEN = re.compile(
    r"^(?P<name>[a-z_0-9]+)(?:@(?P<p>[0-9.]+))?(?::(?P<m>[0-9.]+)(?:~(?P<m2>[0-9.]+))?)?(?:\{(?P<args>[^}]*)\})?$"
)


def parse_op_token(token: str, modality: str = DEFAULT_MODALITY) -> Op:
    """Inverse of ``Op.to_string``."""
    match = _OP_TOKEN.match(token.strip())
    if not match:
        raise PolicyError(f"cannot parse op {token!r}: expected name[@p][:m|:lo~hi][{{k=v;...}}]")
    args: dict[str, Any] = {}
    for item in filter(None, (match["args"] or "").split(";")):
        key, _, val = item.partition("=")
        nums = tuple(float(x) for x in val.split("~"))
        args[key] = nums if len(nums) > 1 else nums[0]
    m, m2 = match["m"], match["m2"]
    op = Op(
        name=match["name"],
        p=float(match["p"]) if match["p"] else 1.0,
        magnitude=float(m) if m and not m2 else 0.0,
        magnitude_range=(float(m), float(m2)) if m2 else None,
        args=args,
    )
    op.validate(modality)
    return op


def parse_custom(text: str, modality: str = DEFAULT_MODALITY) -> Policy:
    """Parse the ``[modality=NAME|]pre=...|choices=...|n=...`` form written by ``Policy.to_string``."""
    parts = list(filter(None, text.split("|")))
    if parts and parts[0].startswith("modality="):
        modality = parts.pop(0).partition("=")[2]
    fields: dict[str, Any] = {"name": "custom", "pre": (), "choices": (), "num_ops": None, "replace": True,
                              "until_applied": False, "views": 1, "copies": 0, "modality": modality}
    for part in parts:
        key, _, val = part.partition("=")
        if key == "name":
            fields["name"] = val
        elif key == "pre":
            fields["pre"] = tuple(parse_op_token(t, modality) for t in val.split(",") if t)
        elif key == "choices":
            fields["choices"] = tuple(tuple(parse_op_token(t, modality) for t in e.split("+"))
                                      for e in val.split(",") if e)
        elif key == "n":
            if ":" in val:
                fields["num_ops"] = num_ops_distribution(dict(kv.split(":") for kv in val.split("/")))
            else:
                fields["num_ops"] = num_ops_distribution(int(val))
        elif key == "norepl":
            fields["replace"] = False
        elif key == "untilapplied":
            fields["until_applied"] = True
        elif key == "views":
            fields["views"] = int(val)
        elif key == "copies":
            if not val.isdigit():
                raise PolicyError(f"cannot parse policy {text!r}: copies must be a whole number, got {val!r}")
            fields["copies"] = int(val)
        else:
            raise PolicyError(f"cannot parse policy {text!r}: unknown part {part!r}")
    if fields["num_ops"] is None:
        fields["num_ops"] = num_ops_distribution(1 if fields["choices"] else 0)
    return Policy(**fields)


def parse_policy(spec: str | dict | Policy, modality: str = DEFAULT_MODALITY) -> Policy:
    """A spec string, JSON text/dict or Policy -> Policy; raises PolicyError naming what is wrong.

    Strings: a standard policy of ``modality``'s catalogue (``MODALITY:SPEC`` names another
    modality's), the ``Policy.to_string`` form, JSON, or ``A+B`` (see ``combine``).
    """
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, dict):
        return Policy.from_dict({"modality": modality, **spec})
    if not isinstance(spec, str):
        raise PolicyError(f"a policy spec must be a string, dict or Policy, got {type(spec).__name__}")
    text = spec.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy: not valid JSON ({exc})") from None
        return parse_policy(data, modality) if isinstance(data, dict) else Policy.from_dict(data)
    if "=" in text:
        return parse_custom(text, modality)
    if "+" in text:
        return combine([parse_policy(part, modality) for part in text.split("+")], name=text)
    prefix, colon, rest = text.partition(":")
    if colon and prefix.isidentifier():
        return parse_policy(rest, prefix)
    cat = catalogue(modality)
    policy = cat.standard(text.lower())
    if policy is None:
        forms = ", ".join(list(list_policies(modality)) + list(cat.spec_forms))
        raise PolicyError(f"unknown policy {spec!r} for modality {modality!r}; standard policies: {forms}")
    return policy


def combine(policies: list[Policy], name: str) -> Policy:
    """``pre`` ops of all policies in order, ``choices`` of the (single) one that has them."""
    modalities = {p.modality for p in policies}
    if len(modalities) > 1:
        raise PolicyError(f"policy {name!r}: its parts belong to different modalities {sorted(modalities)}")
    with_choices = [p for p in policies if p.choices]
    if len(with_choices) > 1:
        raise PolicyError(f"policy {name!r}: only one part may have 'choices', got {[p.name for p in with_choices]}")
    chosen = with_choices[0] if with_choices else None
    return Policy(
        name=name,
        pre=tuple(op for p in policies for op in p.pre),
        choices=chosen.choices if chosen else (),
        num_ops=chosen.num_ops if chosen else (1.0,),
        replace=chosen.replace if chosen else True,
        until_applied=chosen.until_applied if chosen else False,
        views=max(p.views for p in policies),
        copies=max((p.copies for p in policies), default=0),
        modality=policies[0].modality if policies else DEFAULT_MODALITY,
    )


def standard_spec_of(policy: Policy) -> str | None:
    """The spec that rebuilds ``policy`` exactly, when it is a standard (or combined) one."""
    try:
        rebuilt = (parse_policy(policy.name, policy.modality)
                   if policy.name != "custom" and "=" not in policy.name else None)
    except PolicyError:
        return None
    return policy.name if rebuilt == policy else None


def policy_json(policy: Policy) -> str:
    """Pretty JSON of a policy (for files and reports)."""
    return json.dumps(policy.to_dict(), indent=2, sort_keys=True)


@dataclass(frozen=True)
class Schedule:
    """Policy per epoch range: ``entries[i] = (start_epoch, policy)``, starts strictly increasing from 0."""

    entries: tuple[tuple[int, Policy], ...]

    def __post_init__(self) -> None:
        if not self.entries or self.entries[0][0] != 0:
            raise PolicyError("schedule: the first entry must start at epoch 0")
        starts = [s for s, _ in self.entries]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise PolicyError(f"schedule: start epochs {starts} must be strictly increasing")

    def policy_at(self, epoch: int) -> Policy:
        """The policy in force at ``epoch`` (0-based)."""
        if epoch < 0:
            raise PolicyError(f"schedule: epoch must be >= 0, got {epoch}")
        current = self.entries[0][1]
        for start, policy in self.entries:
            if start <= epoch:
                current = policy
        return current

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"schedule": [{"start_epoch": s, "policy": p.to_dict()} for s, p in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """Inverse of ``to_dict``."""
        try:
            items = data["schedule"]
            return cls(tuple((int(e["start_epoch"]), Policy.from_dict(e["policy"])) for e in items))
        except (KeyError, TypeError) as exc:
            raise PolicyError(f"schedule: expected {{'schedule': [{{'start_epoch', 'policy'}}]}}, missing {exc}") from None

    def to_json(self) -> str:
        """Compact JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """Parse ``to_json`` output."""
        return cls.from_dict(json.loads(text))


def _num(x: float) -> str:
    return f"{float(x):g}"
