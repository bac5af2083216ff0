"""``distillguard export stix``: a STIX 2.1 bundle of what is worth sharing with other providers.

What goes in (all built, and so validated, with the ``stix2`` library):

- one ``identity`` for the producer (``where_sighted_refs`` and ``created_by_ref`` point at it);
- ``attack-pattern`` objects for MITRE ATLAS AML.T0024.002 (Extract AI Model, via the AI inference
  API) and AML.T0005.001 (Train Proxy via Replication), plus any other ATLAS technique named by a
  signal that fired, each with an ``external_references`` entry (``source_name`` ``mitre-atlas``);
- one ``campaign`` per flagged cluster, and one per flagged account outside any cluster, with
  ``first_seen``/``last_seen`` from the evidence timelines and the score as ``confidence``;
  account ids stay private (only counts are shared, plus ``x_distillguard_*`` properties);
- ``indicator`` objects, one per shared value, with the standard STIX pattern where STIX has an
  object for it and a custom object type (``x-distillguard-...``) where it has none:

  ============================  ===========================================================
  value                         pattern
  ============================  ===========================================================
  IPv4/IPv6 prefix              ``[ipv4-addr:value ISSUBSET '203.0.113.0/24']``
  client IP                     ``[ipv4-addr:value = '203.0.113.7']`` (left out when a shared prefix
                                of the same campaign covers it; ``--no-ips`` leaves all out)
  user agent                    ``[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = '...']``
  payment fingerprint           ``[x-distillguard-payment-method:fingerprint = '...']``
  prompt template signature     ``[x-distillguard-prompt-template:signature = '...']``
  client fingerprint            ``[x-distillguard-client-fingerprint:value = '...']`` (a user agent
                                plus request-parameter fingerprint that is not a plain UA string)
  request fingerprint           ``[x-distillguard-request-fingerprint:value = '...']`` (the system
                                prompt's head and the set of sampling settings, as ``scan`` writes it)
  ============================  ===========================================================

  Only values that single out the operator are shared: payment fingerprints, template signatures
  and client IPs of flagged accounts; IP prefixes and user agents only when the linkage used them
  to tie a flagged cluster together (it already discounts common prefixes and SDK user agents), so
  ``OpenAI/Python 1.40.0`` or a campus NAT prefix seen on one account never becomes an indicator;
  request fingerprints only when two or more members of a flagged cluster send one that no unflagged
  account of the scan sends (``clusters.jsonl`` ``fingerprints``), so the settings every chat
  wrapper uses never become one;
- ``relationship`` objects: indicator ``indicates`` campaign, campaign ``uses`` attack-pattern;
- ``sighting`` objects: one per (indicator, campaign), ``count`` = accounts carrying the value;
- a ``report`` object that lists everything, and a TLP marking on every object.

Identifiers are UUIDv5 over the content, so exporting the same scan twice gives the same ids and a
recipient can de-duplicate.
"""

from __future__ import annotations

import hashlib
import json
import ipaddress
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from distillguard.errors import InputError
from distillguard.report._scan import ScanOutput, load_scan

NAMESPACE = uuid.UUID("6f1c4a52-3c1e-5b6e-9a0e-2f4d8b6c1d10")
ATLAS_URL = "https://atlas.mitre.org/techniques/"
ATLAS = {
    "AML.T0024.002": {
        "name": "Extract AI Model",
        "description": (
            "Exfiltration via AI Inference API: Extract AI Model. The adversary queries the victim's "
            "inference API at scale and uses the responses to replicate the model's functionality."
        ),
        "phase": "exfiltration",
    },
    "AML.T0005.001": {
        "name": "Train Proxy via Replication",
        "description": (
            "Create Proxy AI Model: Train Proxy via Replication. The adversary trains its own model on the "
            "victim model's outputs (distillation) to obtain a functional copy."
        ),
        "phase": "ai-attack-staging",
    },
    "AML.T0021": {
        "name": "Establish Accounts",
        "description": (
            "The adversary creates accounts with services (here, many API accounts created in waves and linked by "
            "payment or client) to spread its use of the victim's API below per-account limits."
        ),
        "phase": "resource-development",
    },
}
ALWAYS = ("AML.T0024.002", "AML.T0005.001")
TLP = {"white": "TLP_WHITE", "clear": "TLP_WHITE", "green": "TLP_GREEN", "amber": "TLP_AMBER", "red": "TLP_RED"}
KIND_LABEL = {
    "ip_prefix": "IP prefix",
    "client_ip": "client IP",
    "user_agent": "user agent",
    "payment_fingerprint": "payment fingerprint",
    "template_signature": "prompt template signature",
    "client_fingerprint": "client fingerprint",
    "request_fingerprint": "request fingerprint",
}


def _sid(kind: str, *key: Any) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, kind + '|' + '|'.join(map(str, key)))}"


def _lit(value: str) -> str:
    """A STIX pattern string literal (quotes and backslashes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pattern(kind: str, value: str) -> str | None:
    """The STIX pattern for one indicator value, or None when the value is not valid for its kind."""
    if kind in ("ip_prefix", "client_ip"):
        try:
            net = ipaddress.ip_network(value, strict=False) if kind == "ip_prefix" else ipaddress.ip_address(value)
        except ValueError:
            return None
        obj = "ipv4-addr" if net.version == 4 else "ipv6-addr"
        op = "ISSUBSET" if kind == "ip_prefix" else "="
        return f"[{obj}:value {op} {_lit(str(net))}]"
    if kind == "user_agent":
        return f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = {_lit(value)}]"
    if kind == "payment_fingerprint":
        return f"[x-distillguard-payment-method:fingerprint = {_lit(value)}]"
    if kind == "template_signature":
        return f"[x-distillguard-prompt-template:signature = {_lit(value)}]"
    if kind == "client_fingerprint":
        return f"[x-distillguard-client-fingerprint:value = {_lit(value)}]"
    if kind == "request_fingerprint":
        return f"[x-distillguard-request-fingerprint:value = {_lit(value)}]"
    return None


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(float(t), UTC)


def _groups(scan: ScanOutput) -> list[dict[str, Any]]:
    """Flagged clusters, then flagged accounts outside any flagged cluster, as campaign candidates."""
    groups = []
    in_cluster: set[str] = set()
    for c in scan.flagged_clusters:
        members = [str(a) for a in c.get("account_ids") or []]
        in_cluster.update(members)
        groups.append({"key": f"cluster:{c['cluster_id']}", "cluster_id": c["cluster_id"], "members": members,
                       "score": float(c.get("score") or 0.0), "links": c.get("links") or [],
                       "fingerprints": c.get("fingerprints") or []})
    for v in scan.flagged_verdicts:
        a = str(v.get("account_id"))
        if a in in_cluster:
            continue
        groups.append({"key": f"account:{a}", "cluster_id": None, "members": [a],
                       "score": float(v.get("score") or 0.0), "links": [], "fingerprints": []})
    return groups


def _group_values(group: dict[str, Any], scan: ScanOutput, *, include_ips: bool) -> dict[tuple[str, str], int]:
    """(kind, value) -> how many member accounts carry it, following the sharing rule of the module doc."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    member_uas: set[str] = set()
    per_kind = {"client_ips": "client_ip", "payment_fingerprints": "payment_fingerprint",
                "template_signatures": "template_signature"}
    for a in group["members"]:
        ind = (scan.evidence.get(a) or {}).get("indicators") or {}
        member_uas.update(map(str, ind.get("user_agents") or []))
        for field, kind in per_kind.items():
            if kind == "client_ip" and not include_ips:
                continue
            for value in set(map(str, ind.get(field) or [])):
                counts[(kind, value)] += 1
    for link in group["links"]:
        value, t = link.get("value"), link.get("type")
        if value is None or value == "":
            continue
        value = str(value)
        kind = {"ip_prefix": "ip_prefix", "client_ip": "client_ip", "payment_fingerprint": "payment_fingerprint",
                "shared_prompts": "template_signature", "prompt_set_slices": "template_signature",
                "template": "template_signature"}.get(t)
        if t == "user_agent_params":
            kind = "user_agent" if (value in member_uas or not member_uas) else "client_fingerprint"
        if kind is None or (kind == "client_ip" and not include_ips):
            continue
        n = int(link.get("accounts") or 0)
        counts[(kind, value)] = max(counts.get((kind, value), 0), n)
    for fp in group.get("fingerprints") or []:
        if fp.get("value"):
            key = ("request_fingerprint", str(fp["value"]))
            counts[key] = max(counts.get(key, 0), int(fp.get("accounts") or 0))
    prefixes = []
    for kind, value in counts:
        if kind == "ip_prefix":
            try:
                prefixes.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                pass
    if prefixes:  # a client IP inside a shared prefix adds nothing to the prefix indicator

        def covered(ip: str) -> bool:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            return any(addr.version == p.version and addr in p for p in prefixes)

        counts = {k: n for k, n in counts.items() if not (k[0] == "client_ip" and covered(k[1]))}
    return dict(counts)


def _seen(group: dict[str, Any], scan: ScanOutput) -> tuple[datetime, datetime]:
    first, last = None, None
    for a in group["members"]:
        tl = (scan.evidence.get(a) or {}).get("timeline") or {}
        counts = tl.get("counts") or []
        nz = [i for i, c in enumerate(counts) if c]
        if not nz:
            continue
        start, bucket = float(tl.get("start", 0)), float(tl.get("bucket_s", 3600))
        f, l_ = start + nz[0] * bucket, start + (nz[-1] + 1) * bucket
        first = f if first is None else min(first, f)
        last = l_ if last is None else max(last, l_)
    if first is None:
        t0, t1 = (scan.summary.get("time_range") or [0, 0])[:2]
        first, last = float(t0 or 0), float(t1 or t0 or 0)
    return _when(first), _when(max(last, first))


def build_bundle(
    scan: ScanOutput,
    *,
    producer: str = "distillguard",
    tlp: str = "amber",
    include_ips: bool = True,
    now: datetime | None = None,
):
    """The STIX 2.1 bundle (a ``stix2.Bundle``) for a loaded scan; see :func:`export_stix`."""
    import stix2

    if tlp.lower() not in TLP:
        raise InputError(f"unknown TLP level {tlp!r}; use one of {', '.join(sorted(TLP))}")
    marking = getattr(stix2, TLP[tlp.lower()])
    now = now or datetime.now(UTC)
    common = {"created": now, "modified": now, "object_marking_refs": [marking.id], "allow_custom": True}
    identity = stix2.Identity(
        id=_sid("identity", producer), name=producer, identity_class="organization",
        description="Provider of the AI inference API on which this distillation activity was observed.",
        **common,
    )
    common["created_by_ref"] = identity.id
    objects: list[Any] = [marking, identity]

    groups = _groups(scan)
    signal_atlas = {s.get("name"): list(s.get("atlas") or []) for s in scan.signals}
    verdict_of = {str(v.get("account_id")): v for v in scan.flagged_verdicts}
    techniques: dict[str, Any] = {}

    def technique(tid: str):
        if tid not in techniques:
            meta = ATLAS.get(tid, {"name": tid, "description": f"MITRE ATLAS technique {tid}.", "phase": None})
            kw = {"kill_chain_phases": [{"kill_chain_name": "mitre-atlas", "phase_name": meta["phase"]}]} \
                if meta.get("phase") else {}
            techniques[tid] = stix2.AttackPattern(
                id=_sid("attack-pattern", tid), name=meta["name"], description=meta["description"],
                external_references=[{"source_name": "mitre-atlas", "external_id": tid, "url": ATLAS_URL + tid}],
                **kw, **common,
            )
        return techniques[tid]

    for tid in ALWAYS:
        technique(tid)
    indicators: dict[tuple[str, str], Any] = {}
    rels: list[Any] = []
    sightings: list[Any] = []
    campaigns: list[Any] = []
    skipped = 0
    for g in groups:
        first, last = _seen(g, scan)
        if g["cluster_id"] is not None:
            name = f"distillguard cluster {g['cluster_id']}"
        else:
            name = "distillguard flagged account " + hashlib.sha256(g["key"].encode()).hexdigest()[:12]
        fired = sorted({r.get("signal") for a in g["members"] for r in (verdict_of.get(a) or {}).get("reasons") or []
                        if r.get("signal")})
        link_types = sorted({str(k.get("type")) for k in g["links"]})
        campaign = stix2.Campaign(
            id=_sid("campaign", producer, g["key"]), name=name,
            description=(f"Model extraction (distillation) through the API by {len(g['members'])} linked "
                         f"account(s), score {g['score']:.2f}."
                         + (f" Linked by: {', '.join(link_types)}." if link_types else "")
                         + (f" Signals: {', '.join(fired)}." if fired else "")),
            objective="Collect the model's responses (and reasoning) at scale to train a copy of it.",
            first_seen=first, last_seen=last, confidence=int(round(100 * min(max(g["score"], 0.0), 1.0))),
            x_distillguard_cluster_id=g["cluster_id"], x_distillguard_accounts=len(g["members"]),
            x_distillguard_score=round(g["score"], 4), x_distillguard_signals=fired, **common,
        )
        campaigns.append(campaign)
        tids = set(ALWAYS) | {t for s in fired for t in signal_atlas.get(s, []) if str(t).startswith("AML.")}
        for tid in sorted(tids):
            rels.append(stix2.Relationship(
                id=_sid("relationship", campaign.id, "uses", tid), relationship_type="uses",
                source_ref=campaign.id, target_ref=technique(tid).id, **common))
        for (kind, value), n in sorted(_group_values(g, scan, include_ips=include_ips).items()):
            pattern = _pattern(kind, value)
            if pattern is None:
                skipped += 1
                continue
            ind = indicators.get((kind, value))
            if ind is None:
                ind = stix2.Indicator(
                    id=_sid("indicator", kind, value), name=f"{KIND_LABEL[kind]} used for model extraction",
                    description=f"{KIND_LABEL[kind]} seen on accounts that distilled the model through its API.",
                    indicator_types=["malicious-activity"], pattern=pattern, pattern_type="stix", valid_from=first,
                    x_distillguard_kind=kind, **common,
                )
                indicators[(kind, value)] = ind
            rels.append(stix2.Relationship(
                id=_sid("relationship", ind.id, "indicates", campaign.id), relationship_type="indicates",
                source_ref=ind.id, target_ref=campaign.id, **common))
            sightings.append(stix2.Sighting(
                id=_sid("sighting", ind.id, campaign.id), sighting_of_ref=ind.id, count=max(int(n), 1),
                first_seen=first, last_seen=last, where_sighted_refs=[identity.id],
                description=f"Carried by {n} account(s) of {name}.", **common))
    objects += list(techniques.values()) + campaigns + list(indicators.values()) + rels + sightings
    summary = scan.summary
    report = stix2.Report(
        id=_sid("report", producer, *(summary.get("inputs") or []), summary.get("time_range")),
        name="distillguard: model extraction through the API",
        description=(f"{len(campaigns)} campaign(s) and {len(indicators)} indicator(s) from a distillguard scan of "
                     f"{summary.get('requests', '?')} requests by {summary.get('accounts', '?')} accounts."
                     + (f" {skipped} malformed value(s) left out." if skipped else "")),
        published=now, report_types=["campaign", "indicator", "attack-pattern"],
        object_refs=[o.id for o in objects[1:]], **common,
    )
    objects.append(report)
    return stix2.Bundle(id=_sid("bundle", report.id), objects=objects, allow_custom=True)


#: The optional files of a scan folder the bundle is built from, and what it lacks without each.
_STIX_SOURCES = {
    "clusters.jsonl": "linked clusters (each flagged account is a campaign of its own) and no indicator from "
                      "their shared links or request fingerprints",
    "evidence.jsonl": "indicator from the flagged accounts' own addresses, user agents, payment fingerprints or "
                      "templates, and first and last sightings are the scan's time range",
}


def export_stix(
    scan_dir: Path,
    out_path: Path,
    *,
    producer: str = "distillguard",
    tlp: str = "amber",
    include_ips: bool = True,
    now: datetime | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write the STIX 2.1 bundle of a scan folder to ``out_path`` and return the path.

    ``warn`` is told of each file the bundle draws on that the folder lacks (what it leaves out).

    Every object is validated by ``stix2`` as it is built (patterns included), so a file that is
    written is valid STIX 2.1; the tests parse the written bundle back with ``stix2.parse``.
    """
    scan = load_scan(Path(scan_dir), with_tables=False)
    if warn is not None:
        for name, lost in _STIX_SOURCES.items():
            if name in scan.missing:
                warn(f"{Path(scan_dir) / name} is missing: the bundle has no {lost}")
    bundle = build_bundle(scan, producer=producer, tlp=tlp, include_ips=include_ips, now=now)
    # stix2's pretty printer is quadratic in the bundle size; serialise each object, indent with json.
    objs = [json.loads(o.serialize()) for o in bundle.objects]
    text = json.dumps({"type": "bundle", "id": bundle.id, "objects": objs}, indent=2, ensure_ascii=False)
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc}); pass a writable --out path") from exc
    return out
