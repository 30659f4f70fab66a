"""Load plans from TOML: ``include`` of base plans, ``--set`` overrides, clear errors.

Every failure becomes a ``PlanError`` naming the file the offending key came from,
the dotted key path, what was given and what was expected. Pure file reading: no
process is started and nothing is printed.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import PlanError
from harness.plan import Plan
from harness.suggest import did_you_mean

#: where a leaf key came from: dotted path -> file name (or "--set ...")
Provenance = dict[str, str]


def load_plan(path: str | Path, overrides: Sequence[str] = ()) -> Plan:
    """Read the plan at ``path``, resolve includes, apply ``key=value`` overrides, validate."""
    doc, prov = load_document(path)
    for override in overrides:
        apply_override(doc, prov, override)
    doc.setdefault("name", Path(path).stem)
    return validate_document(doc, prov, str(path))


def load_document(path: str | Path) -> tuple[dict[str, Any], Provenance]:
    """The merged TOML document of ``path`` and everything it includes, with provenance."""
    return _load(Path(path), ())


def _load(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], Provenance]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise PlanError(f"{path}: include cycle: {cycle}", file=str(path))
    where = f" (included from {chain[-1]})" if chain else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan file{where}", file=str(path)) from None
    except IsADirectoryError:
        raise PlanError(f"{path}: is a directory, not a plan file{where}",
                        file=str(path)) from None
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror}{where}", file=str(path)) from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                        file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: invalid TOML: {exc}", file=str(path)) from None
    includes = doc.pop("include", None)
    names: Any = [] if includes is None else [includes] if isinstance(includes, str) else includes
    if not (isinstance(names, list) and all(isinstance(n, str) and n.strip() for n in names)):
        raise PlanError(f"{path}: include: given {includes!r}; expected a file name or a "
                        "list of file names", file=str(path))
    merged: dict[str, Any] = {}
    prov: Provenance = {}
    for name in names:
        base, base_prov = _load(path.parent / name, (*chain, resolved))
        _merge(merged, prov, base, base_prov, "")
    own_prov: Provenance = {}
    _record(doc, str(path), "", own_prov)
    _merge(merged, prov, doc, own_prov, "")
    return merged, prov


def _record(doc: Mapping[str, Any], source: str, prefix: str, prov: Provenance) -> None:
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        prov[dotted] = source
        if isinstance(value, dict):
            _record(value, source, dotted + ".", prov)


def _merge(into: dict[str, Any], prov: Provenance, new: Mapping[str, Any],
           new_prov: Provenance, prefix: str) -> None:
    """Deep-merge ``new`` over ``into``: tables merge, everything else is replaced."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        old = into.get(key)
        # a table that changes its kind (target nmm -> malloc) replaces the base's table
        same_kind = not (isinstance(value, dict) and isinstance(old, dict)
                         and "kind" in value
                         and old.get("kind", "nmm" if dotted == "target" else value["kind"])
                         != value["kind"])
        if isinstance(value, dict) and isinstance(old, dict) and same_kind:
            prov[dotted] = new_prov.get(dotted, prov.get(dotted, "?"))
            _merge(into[key], prov, value, new_prov, dotted + ".")
        else:
            for old in [k for k in prov if k.startswith(dotted + ".")]:
                del prov[old]
            into[key] = copy.deepcopy(value)
            for sub, src in new_prov.items():
                if sub == dotted or sub.startswith(dotted + "."):
                    prov[sub] = src


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``workload.threads=8`` into a key path and a value (TOML literal, else a string)."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not p.strip() for p in parts):
        raise PlanError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY such as "
                        "workload.threads=8")
    try:
        value: Any = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return [p.strip() for p in parts], value


def apply_override(doc: dict[str, Any], prov: Provenance, text: str) -> None:
    """Set one ``key=value`` override in ``doc`` (tables are created; ``faults.0.count`` works)."""
    parts, value = parse_override(text)
    node: Any = doc
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = _list_item(node, part, text, where)
        elif isinstance(node, dict):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise PlanError(f"--set {text!r}: {where} is {child!r}, not a table")
            node = child
        else:  # pragma: no cover - guarded above
            raise PlanError(f"--set {text!r}: {where} is not a table")
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, text, ".".join(parts))
        node[index] = value
    else:
        default_kind = "nmm" if parts[:-1] == ["target"] else None
        if last == "kind" and node.get("kind", default_kind) not in (None, value):
            node.clear()  # another kind of table: the old kind's keys do not apply
        node[last] = value
    dotted = ".".join(parts)
    for old in [k for k in prov if k == dotted or k.startswith(dotted + ".")]:
        del prov[old]
    prov[dotted] = f"--set {text}"


def _index(node: list[Any], part: str, text: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        expected = f"an index 0..{len(node) - 1}" if node else "nothing: the list is empty"
        raise PlanError(f"--set {text!r}: {where}: given {part!r}; expected {expected}")
    return int(part)


def _list_item(node: list[Any], part: str, text: str, where: str) -> Any:
    item = node[_index(node, part, text, where)]
    if not isinstance(item, dict):
        raise PlanError(f"--set {text!r}: {where} is not a table")
    return item


def validate_document(doc: dict[str, Any], prov: Provenance, file: str) -> Plan:
    """Validate a merged document into a ``Plan``; errors name file, key, given, expected."""
    try:
        plan = Plan.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_describe(err, doc, prov, file) for err in errors
                    if not _follows_from_an_item(err, errors)]
        raise _plan_error(file, problems) from None
    _check_nmm_options(plan, prov, file)
    return plan


def _check_nmm_options(plan: Plan, prov: Provenance, file: str) -> None:
    """Put an NMM target's options through the allocator's own parser (the one the driver
    uses), so a bad key or value fails validation rather than the run's first trial."""
    from harness.plan import NmmTarget

    if not isinstance(plan.target, NmmTarget) or not (plan.target.options
                                                      or plan.target.process_options):
        return
    try:
        from allocator import Heap, InvalidArgument, NmmError
    except ImportError:  # the binding is not built: the driver will say it
        return
    problems = []
    for key, value in plan.target.options.items():  # one at a time, to name the key's file
        if key == "mutant":  # the chaos build's (this binding is the production one)
            from harness.chaos import mutant_names

            known = mutant_names()
            if known and value not in (*known, "none"):
                source = _source_of(["target", "options", key], prov, file)
                problems.append(f"{source}: target.options.mutant: unknown mutant {value!r}; "
                                f"expected one of {', '.join(known)}")
            continue
        one: dict[str, Any] = {key: value}
        try:
            Heap(level=plan.target.level, **one).close()
        except InvalidArgument as exc:
            source = _source_of(["target", "options", key], prov, file)
            problems.append(f"{source}: target.options.{key}: {exc}")
        except NmmError:  # parsed, but no heap here (memory): the trial will tell
            pass
    for key, value in plan.target.process_options.items():
        # the heap parser refuses a process key by its scope ("applies to the whole
        # process"); a heap key or an unknown one is named here
        source = _source_of(["target", "process_options", key], prov, file)
        try:
            proc: dict[str, Any] = {key: value}
            Heap(level=plan.target.level, **proc).close()
        except InvalidArgument as exc:
            if "applies to the whole process" not in str(exc):
                problems.append(f"{source}: target.process_options.{key}: {exc}")
            continue
        except NmmError:
            pass
        problems.append(f"{source}: target.process_options.{key}: a heap key (one heap's "
                        "option): set it in target.options")
    if problems:
        raise _plan_error(file, problems)


def _plan_error(file: str, problems: Sequence[str]) -> PlanError:
    """One problem as the message, or a count followed by each on its own line."""
    head = problems[0] if len(problems) == 1 else (
        f"{file}: {len(problems)} problems:\n  " + "\n  ".join(problems))
    return PlanError(head, file=file, problems=tuple(problems))


def _follows_from_an_item(err: Any, errors: Sequence[Any]) -> bool:
    """Whether ``err`` is a list's "too short" that only counts the items rejected by
    another error (``expect.outcome = ["mised"]`` is one problem, not two)."""
    if err["type"] != "too_short":
        return False
    loc = tuple(err["loc"])
    return any(tuple(other["loc"])[:len(loc)] == loc and len(other["loc"]) > len(loc)
               for other in errors)


def _describe(err: Any, doc: dict[str, Any], prov: Provenance, file: str) -> str:
    loc = [str(p) for p in err["loc"] if not _is_union_tag(p) and p != "[key]"]
    dotted = ".".join(loc) if loc else "(top level)"
    source = _source_of(loc, prov, file)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], doc)
        return (f"{source}: {dotted}: unknown key; expected one of: {', '.join(allowed)}"
                + _hint(loc[-1], allowed) if allowed else f"{source}: {dotted}: unknown key")
    if kind == "missing":
        return f"{source}: {dotted}: required key is missing"
    if kind == "plan_field":
        ctx = err["ctx"]
        dotted = ".".join([*loc, ctx["field"]])
        source = _source_of([*loc, ctx["field"]], prov, file)
        return f"{source}: {dotted}: given {ctx['given']}; expected {ctx['expected']}"
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    # pydantic's words for TOML's: "String should have at least 1 character" reads as
    # "expected a string with at least 1 character"
    msg = re.sub(r"^(String|Tuple|List) should (have|match) ",
                 lambda m: ("a string" if m[1] == "String" else "a list")
                 + (" with " if m[2] == "have" else " matching "), msg)
    msg = re.sub(r" after validation, not \d+$", "", msg)
    msg = re.sub(r"^a valid dictionary or instance of \w+$", "a table", msg)
    msg = re.sub(r"^a valid (tuple|list)$", "a list", msg)
    given = _short(err.get("input"))
    hint = ""
    if kind == "literal_error" and isinstance(err.get("input"), str):
        hint = _hint(err["input"], re.findall(r"'([^']*)'", str(err["ctx"]["expected"])))
    return f"{source}: {dotted}: given {given}; expected {msg}{hint}"


def _hint(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'count'?"`` when one of ``choices`` is close to ``word``."""
    suggestion = did_you_mean(word, choices)
    return f"; {suggestion}" if suggestion else ""


def _is_union_tag(part: Any) -> bool:
    return (isinstance(part, str) and part in ("nmm", "malloc")) or (
        isinstance(part, str) and part.startswith("function-"))


def _source_of(loc: list[str], prov: Provenance, file: str) -> str:
    dotted = ".".join(loc)
    if loc and dotted not in prov:  # a table made by --set a.b.c=...: its keys' source
        inner = [src for key, src in prov.items() if key.startswith(dotted + ".")]
        if inner:
            return inner[-1]
    for end in range(len(loc), 0, -1):
        hit = prov.get(".".join(loc[:end]))
        if hit is not None:
            return hit
    return file


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(loc: list[str], doc: dict[str, Any]) -> list[str]:
    """Field names valid at a dotted location of the plan schema (for 'unknown key')."""
    from pydantic import BaseModel

    from harness.plan import LibTarget, MallocTarget, NmmTarget

    model: Any = Plan
    for depth, part in enumerate(loc):
        if part.isdigit():
            continue
        if depth == 0 and part == "target":
            target = doc.get("target")
            kind = target.get("kind", "nmm") if isinstance(target, dict) else "nmm"
            model = {"malloc": MallocTarget, "lib": LibTarget}.get(kind, NmmTarget)
            continue
        fields = getattr(model, "model_fields", {})
        field = fields.get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def is_campaign_file(path: str | Path) -> bool:
    """Whether ``path`` is a campaign file (a TOML file with a top-level ``[campaign]``
    table, ``harness.campaign``), not a plan."""
    try:
        with open(path, "rb") as fh:
            return isinstance(tomllib.load(fh).get("campaign"), dict)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def plan_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to the ``*.toml`` plans under them (sorted; campaign files left
    out); files stay as given."""
    found: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found.extend(f for f in sorted(p.rglob("*.toml")) if not is_campaign_file(f))
        else:
            found.append(p)
    return found


def validate_paths(paths: Iterable[str | Path]) -> list[tuple[Path, Plan | PlanError]]:
    """Load every plan under ``paths``; each entry is the plan or the ``PlanError`` it raised.
    A campaign file named on its own stands for its plans (an unreadable one is an error)."""
    results: list[tuple[Path, Plan | PlanError]] = []
    files: list[Path] = []
    for path in plan_files(paths):
        if not is_campaign_file(path):
            files.append(path)
            continue
        from harness.campaign import entry_path, load_campaign_file
        from harness.errors import CampaignError

        try:
            files += [Path(entry_path(p)) for p in load_campaign_file(path).plans]
        except CampaignError as exc:
            results.append((path, PlanError(str(exc), file=str(path))))
    for path in files:
        try:
            results.append((path, load_plan(path)))
        except PlanError as exc:
            results.append((path, exc))
    return results
