"""``scan``: batch detection over traffic logs (contracts.md §2).

Pipeline: logs → events (Arrow batches that DuckDB reads in place while the log fits a third of the
memory limit, else a DuckDB table that spills to disk: bounded memory) → per-account stats (one SQL
pass, :func:`~distillguard.features.stats.stats_sql`) → features → signal strengths → account scores;
account keys → link graph → clusters → merged cluster stats → cluster scores; then flags, reasons,
evidence and the output files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard import __version__
from distillguard.detect.scoring import ScoreModel
from distillguard.detect.signals import SIGNALS, SIGNALS_BY_NAME, catalogue, strengths
from distillguard.errors import InputError
from distillguard.features.derive import SCAN_CHARS, md5_u64_sql
from distillguard.features.stats import ACCOUNT_COLUMNS, STAT_COLUMNS, AccountStats, account_facts, features
from distillguard.ingest import EventReader, EventStore, RejectWriter, load_accounts
from distillguard.ingest.store import RESOURCE_ERRORS, check_memory_limit, memory_limit_bytes, resource_failure
from distillguard.linkage.attribution import (ATTRIBUTION_KEY, BY_FLAGGED_ONLY, BY_LIFT, BY_TIES, attribution_candidates,
                                              attribution_groups, consolidation_groups, cross_links, exclusive_fingerprints,
                                              tied_pairs)
from distillguard.linkage.graph import cluster_id, clusters_from_edges, compute_edges
from distillguard.schema import UNAUTHENTICATED_ACCOUNT
from distillguard.workdir import work_dir

TEMPLATE_MAX_PREFIX_RATIO = 0.5
TEMPLATE_MIN_REQUESTS = 30
EXAMPLE_PROMPTS = 3
EXAMPLE_CHARS = 300


def _prepare_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"cannot write to output folder {out_dir}: {e.strerror or e}") from e


def _stats_columns(table: pa.Table) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for name in STAT_COLUMNS:
        col = table.column(name)
        if name == "hours":
            cols[name] = np.asarray(col.to_pylist(), dtype=np.float64).reshape(-1, 24)
        elif name == "days" or name.startswith(("kmv_", "set_")):
            cols[name] = col  # Arrow lists: features() reads their lengths and k-th values vectorised
            # (as Python lists, 100k accounts' sketches are 40M ints, 1.6 GB)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    return cols


def _redact(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Link types whose values carry prompt text: the request fingerprint starts with the system prompt.
_TEXT_LINKS = ("request_fingerprint",)
_NO_SYSTEM_PROMPT = "(no system prompt)"


def _redact_link_value(value: str) -> str:
    """A request fingerprint ``"<system prompt head> | <settings> | #<hash>"`` with the text hashed."""
    head, sep, rest = value.partition(" | ")
    if head == _NO_SYSTEM_PROMPT or not sep:
        return value if sep else _redact(value)
    return _redact(head)[:23] + sep + rest


def _redact_links(edges: pa.Table) -> pa.Table:
    """Edges with the prompt text in link values replaced by hashes (``scan --redact``); one hash per
    distinct value, so that equal values stay equal."""
    example = edges.column("example")
    text = pc.is_in(edges.column("type"), pa.array(_TEXT_LINKS))
    distinct = pc.unique(pc.filter(example, text)).drop_null()
    if len(distinct) == 0:
        return edges
    redacted = pa.array([_redact_link_value(v) for v in distinct.to_pylist()], pa.string())
    new = pc.if_else(text, pc.take(redacted, pc.index_in(example, distinct)), example)
    return edges.set_column(edges.schema.get_field_index("example"), "example", new)


#: The share of the memory limit that a log's events may take as Arrow batches instead of a DuckDB
#: table (:class:`~distillguard.ingest.store.EventStore`): a third of 3 GB holds about 1.5 million requests.
KEEP_IN_MEMORY = 1 / 3


def run_scan(
    paths: list[str | Path],
    out_dir: str | Path,
    *,
    accounts: str | Path | None = None,
    model: ScoreModel | str | Path | None = None,
    engine: str = "duckdb",
    redact: bool = False,
    spark_master: str | None = None,
    progress: bool = True,
    write_html: bool = True,
    memory_limit: str = "3GB",
) -> dict[str, Any]:
    """Scan ``paths`` and write the output files to ``out_dir``; returns the summary dict."""
    t_start = time.perf_counter()
    memory_limit = check_memory_limit(memory_limit)
    out = Path(out_dir)
    _prepare_out(out)
    if not paths:
        raise InputError("no input logs given")
    if isinstance(model, (str, Path)):
        model = ScoreModel.load(model)
    model = model or ScoreModel.default()
    (out / "rejected.jsonl").write_bytes(b"")
    work = work_dir("distillguard-scan-")
    timings: dict[str, float] = {}
    try:
        # spills to `work` past the limit; a log that fits a third of it is kept as Arrow (see EventStore)
        store = EventStore(":memory:", memory_limit=memory_limit, temp_directory=work, keep_in_memory=KEEP_IN_MEMORY)
        con = store.con
        with RejectWriter(out / "rejected.jsonl") as rej:
            t = time.perf_counter()
            reader, dups, has_accounts = load_into(store, paths, rej, accounts=accounts, progress=progress)
            timings["ingest_s"] = time.perf_counter() - t
            n_rejected = rej.total
        n_events = store.count()
        if n_events == 0:
            raise InputError(
                f"no readable requests in {len(paths)} input file(s): {reader.stats.rejected} line(s) rejected"
                + (f", {len(reader.stats.damaged)} input(s) damaged or unreadable" if reader.stats.damaged else "")
                + f"; see {out / 'rejected.jsonl'}"
            )
        result = _detect(con, out, model=model, has_accounts=has_accounts, redact=redact, engine=engine,
                         spark_master=spark_master, timings=timings)
        summary = {
            "inputs": [str(p) for p in paths],
            "requests": n_events,
            "lines": reader.stats.lines,
            "accounts": result["accounts"],
            "rejected": n_rejected,
            "duplicates": dups,
            "unauthenticated_requests": reader.stats.unauthenticated,
            # inputs that end in damage: the lines before it were scanned (see rejected.jsonl)
            "damaged_inputs": reader.stats.damaged,
            "flagged_accounts": result["flagged_accounts"],
            "clusters": result["clusters"],
            "flagged_clusters": result["flagged_clusters"],
            "threshold": model.threshold.value,
            "redacted": redact,
            "time_range": result["time_range"],
            "engine": engine,
            "version": __version__,
            "timings": timings,
        }
        store.close()
    except RESOURCE_ERRORS as e:
        raise resource_failure(e, work, memory_limit) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["elapsed_s"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if write_html:
        try:
            from distillguard.report.html import write_report

            write_report(out, out / "report.html")
        except ImportError:  # pragma: no cover - report module always ships
            pass
    summary["elapsed_s"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_into(store: EventStore, paths: list[str | Path], rej: RejectWriter, *, accounts: str | Path | None = None,
              progress: bool = False) -> tuple[EventReader, int, bool]:
    """Read logs (and the account file) into the store's ``events`` (and ``accounts``) tables."""
    from distillguard.progress import byte_progress

    con = store.con
    with byte_progress([Path(p) for p in paths], "reading logs") if progress else _null() as advance:
        reader = EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False, on_progress=advance)
        store.append_all(reader, paths)
    dups = store.finish_run(rej)
    # requests the gateway refused for a missing or unknown key belong to no account
    reader.stats.unauthenticated = store.delete_where(f"account_id = '{UNAUTHENTICATED_ACCOUNT}'")
    if accounts is not None:
        acct_table = load_accounts(accounts, rejects=rej)
        con.register("_dg_accounts_arrow", acct_table)
        con.execute("CREATE OR REPLACE TABLE accounts AS SELECT * FROM _dg_accounts_arrow")
        con.unregister("_dg_accounts_arrow")
    return reader, dups, accounts is not None


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _account_stats(con, engine: str, spark_master: str | None) -> pa.Table:
    if engine == "spark":
        from distillguard.engine.spark import spark_account_stats

        return spark_account_stats(con, master=spark_master)
    if engine != "duckdb":
        raise InputError(f"unknown engine {engine!r}; use duckdb or spark")
    from distillguard.features.stats import account_stats

    return account_stats(con, "events")


class Attribution(NamedTuple):
    """How :func:`attribute` formed a cluster."""

    #: the accounts it joined to what the link graph had grouped (all the members, where it joined no cluster)
    accounts: list[str]
    #: the link graph's clusters it joined (their ids; the new one may reuse one, as ids hash the smallest member)
    clusters: list[str]
    #: which rule (:data:`~distillguard.linkage.attribution.BY_LIFT`, ``BY_FLAGGED_ONLY`` or ``BY_TIES``)
    by: str
    #: for the ``linked_cluster`` reason
    note: str


@dataclass
class Analysis:
    """Everything about the accounts and their links that does not depend on the score model."""

    account_ids: list[str]
    cols: dict[str, Any]
    feats: dict[str, np.ndarray]
    strs: dict[str, np.ndarray]
    edges: pa.Table
    clusters: dict[str, str]
    members: dict[str, list[str]]
    cluster_ids: list[str]
    cfeats: dict[str, np.ndarray]
    cstrs: dict[str, np.ndarray]
    #: request fingerprints (account_id, value, log2_expected), for :func:`attribute`
    fingerprints: pa.Table | None = None
    #: the stats rows (with the account facts) of the unlinked accounts that :func:`attribute` could
    #: join, for it to merge the clusters it forms; the scan drops them once it has attributed
    stats: pa.Table | None = None
    #: each cluster's merged stats row, for :func:`attribute` to merge clusters with
    cluster_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the tied pairs of accounts (:func:`~distillguard.linkage.attribution.tied_pairs`), for :func:`attribute`
    ties: pa.Table | None = None
    #: clusters that :func:`attribute` formed: new cluster id → how
    attributed: dict[str, Attribution] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.account_ids)}


#: Once the account stats are computed, the scan holds Python objects that grow with the accounts and
#: linked pairs (features, the edges, the Louvain graph, per-cluster stats), and linkage's SQL needs
#: little memory: DuckDB gives back this share of its memory limit then, spilling the events table to
#: disk, so that the process stays within its budget at 10M requests.
DUCKDB_SHARE_AFTER_STATS = 0.5


def _shrink_duckdb(con, share: float) -> None:
    """Lower DuckDB's memory limit to ``share`` of what it is; DuckDB evicts (spills) down to it at once."""
    limit = memory_limit_bytes(con)
    if limit is not None:  # else an unfamiliar format: leave the limit as it is
        con.execute(f"SET memory_limit = '{int(limit * share)}B'")


def analyse(con, *, has_accounts: bool, engine: str = "duckdb", spark_master: str | None = None,
            timings: dict[str, float] | None = None, for_attribution: bool = True) -> Analysis:
    """Stats, features, signal strengths, links and clusters of the ``events`` table; with
    ``for_attribution``, also what :func:`attribute` needs (the request fingerprints and the stats)."""
    timings = timings if timings is not None else {}
    t = time.perf_counter()
    stats = _account_stats(con, engine, spark_master)
    _shrink_duckdb(con, DUCKDB_SHARE_AFTER_STATS)
    timings["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    account_ids = stats.column("account_id").to_pylist()
    cols = _stats_columns(stats)
    if has_accounts:
        facts = con.sql("SELECT account_id, created_at, verified FROM accounts").to_arrow_table().to_pylist()
        info = {r["account_id"]: r for r in facts}
        fa = [account_facts(info.get(a), t0) for a, t0 in zip(account_ids, cols["t0"])]
        for k, name in enumerate(ACCOUNT_COLUMNS):
            cols[name] = np.asarray([x[k] for x in fa], dtype=np.float64)
            stats = stats.append_column(name, pa.array([x[k] for x in fa], pa.int64()))
    feats = features(cols)
    strs = strengths(feats)
    idx = {a: i for i, a in enumerate(account_ids)}
    templated = [a for a, r, n in zip(account_ids, feats["prefix_distinct_ratio"], feats["requests"])
                 if r <= TEMPLATE_MAX_PREFIX_RATIO and n >= TEMPLATE_MIN_REQUESTS]
    con.register("_dg_templated", pa.table({"account_id": pa.array(templated, pa.string())}))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _dg_template_accounts AS
        SELECT account_id, arg_min({md5_u64_sql("lower(left(coalesce(prompt, ''), 32))")}, (ts, request_id)) AS pre
        FROM events SEMI JOIN _dg_templated USING (account_id) GROUP BY account_id"""
    )
    con.unregister("_dg_templated")
    edges = compute_edges(con, events="events", accounts="accounts" if has_accounts else None, template_accounts="_dg_template_accounts")
    clusters = clusters_from_edges(edges)
    timings["linkage_s"] = time.perf_counter() - t
    members: dict[str, list[str]] = {}
    for a, c in clusters.items():
        members.setdefault(c, []).append(a)
    cluster_ids = sorted(members)
    # only the clustered accounts' stats become Python objects
    rows_at = sorted(idx[a] for cid in cluster_ids for a in members[cid])
    rows = dict(zip((account_ids[j] for j in rows_at), stats.take(pa.array(rows_at, pa.int64())).to_pylist()))
    cfeats, cstrs, merged = _cluster_features([[rows[a] for a in members[cid]] for cid in cluster_ids])
    del rows
    if not for_attribution:
        return Analysis(account_ids, cols, feats, strs, edges, clusters, members, cluster_ids, cfeats, cstrs)
    # what attribution needs once accounts are flagged (linkage/attribution.py): the request
    # fingerprints, and the stats (as Arrow: only the rows of the accounts it joins become Python objects)
    fingerprints = con.sql(f"SELECT account_id, value, log2_expected FROM _dg_keys WHERE type = '{ATTRIBUTION_KEY}'").to_arrow_table()
    # only the rows of the unlinked accounts that attribution could join, whatever is flagged (a
    # fingerprint group's, or one tied to another account): at 10M requests the whole table is a few
    # hundred MB that the scan would otherwise hold through scoring
    need = attribution_candidates(fingerprints, clusters)
    tied = tied_pairs(edges)
    ends = pc.unique(pa.chunked_array([tied["src"], tied["dst"]], pa.string()))
    need.update(ends.filter(pc.invert(pc.is_in(ends, pa.array(list(clusters), pa.string())))).to_pylist())
    stats = stats.take(pa.array(sorted(idx[a] for a in need), pa.int64()))
    return Analysis(account_ids, cols, feats, strs, edges, clusters, members, cluster_ids, cfeats, cstrs,
                    fingerprints, stats, dict(zip(cluster_ids, merged)), ties=tied)


def _cluster_features(parts: list[list[dict[str, Any]]]
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[dict[str, Any]]]:
    """(features, catalogue strengths, merged stats rows) of clusters; ``parts``: per cluster, the stats
    rows it is made of (its accounts', or its parts' merged rows)."""
    merged = []
    for rows in parts:
        acc = AccountStats()
        for r in rows:
            acc = acc.merge(AccountStats.from_row(r))
        merged.append(acc.to_row())
    if not merged:
        return {}, {}, []
    ccols = {name: [r[name] for r in merged] for name in STAT_COLUMNS + ACCOUNT_COLUMNS}
    ccols["hours"] = np.asarray(ccols["hours"], dtype=np.float64).reshape(-1, 24)
    for name in STAT_COLUMNS + ACCOUNT_COLUMNS:
        if name not in ("hours", "days") and not name.startswith(("kmv_", "set_")):
            ccols[name] = np.asarray(ccols[name])
    cfeats = features(ccols)
    return cfeats, strengths(cfeats), merged


def attribute(an: Analysis, flagged: np.ndarray) -> Analysis:
    """The analysis with its flagged accounts attributed to operators (:mod:`distillguard.linkage.attribution`);
    ``an`` itself when nothing changes.

    ``flagged``: per account. Flagged, unlinked accounts that share a request fingerprint far above
    chance become one cluster each; then flagged groups (clusters whose every member is flagged, and
    flagged accounts alone) that are tied member by member join. Clusters not joined are kept as they
    are; the new clusters' stats are their parts' merged, as for every cluster; the caller scores them.
    """
    if an.fingerprints is None or an.stats is None or an.ties is None:
        return an
    is_flagged = {a for a, f in zip(an.account_ids, flagged) if f}
    eligible = is_flagged - an.clusters.keys()
    # the units attribution joins: flagged clusters, fingerprint groups, and flagged accounts alone
    units = {cid: accs for cid, accs in an.members.items() if is_flagged.issuperset(accs)}
    why: dict[str, str] = {}
    fp_units = {cluster_id(g): g for g in attribution_groups(an.fingerprints, an.clusters, eligible, flagged=is_flagged, why=why)}
    units.update(fp_units)
    grouped = {a for g in fp_units.values() for a in g}
    units.update(("\0" + a, [a]) for a in sorted(eligible - grouped))  # (no cluster id starts with a NUL)
    unit_of = {a: u for u, accs in units.items() for a in accs}
    # the tied pairs analyse found, both ends among the units' accounts (the same as tied_pairs(an.edges, among))
    among = pa.array(sorted(unit_of), pa.string())
    pairs = an.ties.filter(pc.and_(pc.is_in(an.ties["src"], among), pc.is_in(an.ties["dst"], among)))
    merges = consolidation_groups(pairs, unit_of, {u: len(accs) for u, accs in units.items()},
                                  links=cross_links(an.edges, unit_of))
    merged_units = {u for m in merges for u in m}
    # stats rows as Python objects only for the accounts that go into a new cluster
    joining = sorted({a for u in merged_units if u not in an.members for a in units[u]} | grouped)
    at = {a: i for i, a in enumerate(an.stats.column("account_id").to_pylist())}
    rows = dict(zip(joining, an.stats.take(pa.array([at[a] for a in joining], pa.int64())).to_pylist()))
    parts = {u: [an.cluster_rows[u]] if u in an.members else [rows[a] for a in units[u]]
             for u in set(fp_units) | merged_units}
    new: dict[str, tuple[list[str], list[dict[str, Any]], list[str]]] = {}  # id → (members, rows, graph clusters)
    for cid, g in fp_units.items():
        if cid not in merged_units:
            new[cid] = (g, parts[cid], [])
    for m in merges:
        accs = sorted(a for u in m for a in units[u])
        new[cluster_id(accs)] = (accs, [r for u in m for r in parts[u]], [u for u in m if u in an.members])
    if not new:
        return an
    gone = {u for u in merged_units if u in an.members}
    kept = [i for i, cid in enumerate(an.cluster_ids) if cid not in gone]
    clusters = {a: c for a, c in an.clusters.items() if c not in gone}
    members = {c: accs for c, accs in an.members.items() if c not in gone}
    attributed = {}
    for cid, (accs, _, graph) in new.items():
        members[cid] = accs
        clusters.update(dict.fromkeys(accs, cid))
        biggest = set(max((an.members[c] for c in graph), key=len, default=[]))
        extra = [a for a in accs if a not in biggest]
        if cid in fp_units:
            by = why[accs[0]]
            note = _FINGERPRINT_NOTES[by]
        else:
            by = BY_TIES
            alone = len(accs) - sum(len(an.members[c]) for c in graph)
            what = (f"{len(graph)} link-graph cluster{'s' if len(graph) != 1 else ''} and {alone} flagged "
                    f"account{'s' if alone != 1 else ''} outside them" if graph else
                    f"{alone} flagged accounts that nothing links, in groups by request fingerprint")
            note = (f"; joined after flagging: {what}, tied member by member by two kinds of evidence (a creation "
                    "wave, an address or a card, plus the script), on one pair or across most of a group")
        attributed[cid] = Attribution(extra, graph, by, note)
    nfeats, nstrs, nrows = _cluster_features([p for _, p, _ in new.values()])
    # the kept clusters' rows, then the new ones', put in cluster id order (no kept cluster changes)
    ids = [an.cluster_ids[i] for i in kept] + list(new)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    take = np.asarray(kept, dtype=np.int64)

    def splice(old: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.concatenate([old[k][take] if k in old else v[:0], v])[order] for k, v in fresh.items()}

    cluster_rows = {c: an.cluster_rows[c] for c in an.cluster_rows if c not in gone} | dict(zip(new, nrows))
    return replace(an, clusters=clusters, members=members, cluster_ids=[ids[i] for i in order],
                   cfeats=splice(an.cfeats, nfeats), cstrs=splice(an.cstrs, nstrs), cluster_rows=cluster_rows,
                   attributed=attributed)


def model_strengths(an: Analysis, model: ScoreModel) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(account, cluster) strengths that ``model`` scores with: the analysis's catalogue strengths, or
    its learned shapes where it has them."""
    if not model.shapes:
        return an.strs, an.cstrs
    return model.strengths(an.feats), (model.strengths(an.cfeats) if an.cluster_ids else an.cstrs)


def member_scores(an: Analysis, model: ScoreModel) -> np.ndarray:
    """Per cluster, what its members' requests look like: the request-weighted mean of their own scores
    without the small-traffic discount (:meth:`ScoreModel.strengths` with ``discount=False``).

    A cluster whose members score under the threshold here is scored at most this (:func:`cluster_scores`). A campaign
    spread over many accounts keeps each one under every volume limit, but each one's requests still
    look like extraction (single-turn, templated, harvesting): its members score 0.5-1.0 here. A
    company's team, linked by its card, domain and office network, adds up to volume, new accounts and a
    flat day, while its members' requests look like people's (0.0-0.2 on the development data): the gate
    keeps linkage and pooled volume from flagging it.
    """
    if not an.cluster_ids:
        return np.zeros(0)
    own = model.score(model.strengths(an.feats, discount=False))
    n = np.asarray(an.feats["requests"], dtype=np.float64)
    idx = an.index
    j = np.fromiter((idx[a] for cid in an.cluster_ids for a in an.members[cid]), dtype=np.int64)
    i = np.repeat(np.arange(len(an.cluster_ids)), [len(an.members[cid]) for cid in an.cluster_ids])
    total = np.bincount(i, weights=n[j], minlength=len(an.cluster_ids))
    weighted = np.bincount(i, weights=own[j] * n[j], minlength=len(an.cluster_ids))
    return np.divide(weighted, total, out=np.zeros(len(an.cluster_ids)), where=total > 0)


def cluster_scores(an: Analysis, model: ScoreModel, cstrs: dict[str, np.ndarray], *, members_gate: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(combined traffic's scores, :func:`member_scores`, cluster scores) per cluster.

    A cluster's score is its combined traffic's where its members score at least ``members_gate`` (the
    batch threshold unless given), and the lower of the two where they do not: linkage and pooled
    volume alone never flag. At the batch threshold this flags exactly the clusters that the lower of
    the two would (``train`` chooses the threshold on that, ``members_gate=inf``); online, where the
    threshold is higher (peak scores), members need only look like extraction at the batch threshold."""
    if not an.cluster_ids:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    gate = model.threshold.value if members_gate is None else members_gate
    combined, members = model.score(cstrs), member_scores(an, model)
    return combined, members, np.where(members >= gate, combined, np.minimum(combined, members))


def final_scores(an: Analysis, model: ScoreModel, strengths: tuple[dict, dict] | None = None, *,
                 members_gate: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(own account scores, cluster scores, final account scores, final flags) under ``model``;
    ``strengths``: :func:`model_strengths`, if the caller already has them. Cluster scores as
    :func:`cluster_scores` gives them."""
    strs, cstrs = strengths or model_strengths(an, model)
    scores = model.score(strs)
    cscores = cluster_scores(an, model, cstrs, members_gate=members_gate)[2]
    final = _with_cluster_scores(an, scores, cscores)
    return scores, cscores, final, model.threshold.flag(final)


def _with_cluster_scores(an: Analysis, scores: np.ndarray, cscores: np.ndarray) -> np.ndarray:
    """Each account's final score: the larger of its own and its cluster's."""
    final = scores.copy()
    idx = an.index
    for i, cid in enumerate(an.cluster_ids):
        for a in an.members[cid]:
            j = idx[a]
            final[j] = max(final[j], cscores[i])
    return final


_FINGERPRINT_NOTES = {
    BY_LIFT: "; joined after flagging: flagged, otherwise unlinked accounts that share a request fingerprint far above chance",
    BY_FLAGGED_ONLY: "; joined after flagging: flagged, otherwise unlinked accounts that share a request fingerprint "
                     "(a system prompt and settings) that no account but a flagged one holds",
}


def _detect(con, out: Path, *, model: ScoreModel, has_accounts: bool, redact: bool, engine: str,
            spark_master: str | None, timings: dict[str, float]) -> dict[str, Any]:
    an = analyse(con, has_accounts=has_accounts, engine=engine, spark_master=spark_master, timings=timings)
    if redact:
        an.edges = _redact_links(an.edges)
    t = time.perf_counter()
    strs, cstrs = model_strengths(an, model)  # what the model scores with (its shapes, if any)
    scores = model.score(strs)
    combined, mscores, cscores = cluster_scores(an, model, cstrs)
    final_score = _with_cluster_scores(an, scores, cscores)
    flagged = model.threshold.flag(final_score)
    merged = attribute(an, flagged)
    an.stats = merged.stats = an.ties = merged.ties = None  # done with (the stats rows: an Arrow table the size of the accounts' sketches)
    if merged is not an:  # attribution joined flagged, unlinked accounts: score the new clusters
        before = {a: float(final_score[j]) for j, a in enumerate(an.account_ids) if flagged[j]}
        an = merged
        strs, cstrs = model_strengths(an, model)
        combined, mscores, cscores = cluster_scores(an, model, cstrs)
        for i, cid in enumerate(an.cluster_ids):
            if cid in an.attributed:  # every member was flagged: the whole is, at least as its weakest member was
                cscores[i] = max(cscores[i], min(before[a] for a in an.members[cid]))
        final_score = np.maximum(final_score, _with_cluster_scores(an, scores, cscores))
        flagged = model.threshold.flag(final_score)
    cflag = model.threshold.flag(cscores)
    account_ids, cols, feats, edges, clusters = an.account_ids, an.cols, an.feats, an.edges, an.clusters
    members, cluster_ids, cfeats = an.members, an.cluster_ids, an.cfeats
    idx = an.index
    cinfo = {cid: i for i, cid in enumerate(cluster_ids)}
    own_flag = model.threshold.flag(scores)

    # per-cluster link summary
    sc, dc = _edge_clusters(edges, clusters)
    link_summary = _link_summary(con, edges, sc, dc)
    flagged_set = {a for a, f in zip(account_ids, flagged) if f}
    own_fps = (exclusive_fingerprints(an.fingerprints, {c: members[c] for c in cluster_ids if cflag[cinfo[c]]}, flagged_set)
               if an.fingerprints is not None else {})
    if redact:
        own_fps = {c: [{**f, "value": _redact_link_value(f["value"])} for f in fps] for c, fps in own_fps.items()}
    verdict_lines = []
    feat_names = list(feats)
    for j, a in enumerate(account_ids):
        f_j = {k: float(feats[k][j]) for k in feat_names}
        s_j = {k: float(v[j]) for k, v in strs.items()}
        reasons = [r.as_dict() for r in model.reasons(s_j, f_j)] if (flagged[j] or scores[j] > 0.1) else []
        cid = clusters.get(a)
        if cid is not None and cflag[cinfo[cid]]:
            i = cinfo[cid]
            cf = {k: float(cfeats[k][i]) for k in cfeats}
            cs = {k: float(v[i]) for k, v in cstrs.items()}
            creasons = model.reasons(cs, cf, top=3)
            reasons.insert(0 if not own_flag[j] else len(reasons), {
                "signal": "linked_cluster",
                "value": round(float(cscores[i]), 6),
                "detail": f"member of cluster {cid} ({len(members[cid])} accounts linked by "
                          f"{', '.join(sorted({l['type'] for l in link_summary.get(cid, [])}))}"
                          f"{an.attributed[cid].note if cid in an.attributed else ''}); combined traffic scores "
                          f"{combined[i]:.3f} (its members' own requests {mscores[i]:.3f}): " + "; ".join(r.detail for r in creasons),
            })
        verdict_lines.append({
            "account_id": a,
            "score": round(float(final_score[j]), 6),
            "flagged": bool(flagged[j]),
            "cluster_id": cid,
            "reasons": reasons,
        })
    # in account order: DuckDB returns accounts in any order, and two scans of one log should diff clean
    _write_jsonl(out / "verdicts.jsonl", sorted(verdict_lines, key=lambda v: v["account_id"]))
    cluster_lines = [
        {
            "cluster_id": cid,
            "account_ids": sorted(members[cid]),
            "score": round(float(cscores[cinfo[cid]]), 6),
            "flagged": bool(cflag[cinfo[cid]]),
            # the score is the combined one where the members' reaches the threshold, else at most theirs
            "combined_score": round(float(combined[cinfo[cid]]), 6),
            "members_score": round(float(mscores[cinfo[cid]]), 6),
            "links": link_summary.get(cid, []),
            # the flagged accounts that attribution joined to what the link graph grouped (empty: the link
            # graph's cluster), and the link graph's clusters it joined
            "attributed_from": an.attributed[cid].accounts if cid in an.attributed else [],
            "joined_clusters": an.attributed[cid].clusters if cid in an.attributed else [],
            "attributed_by": an.attributed[cid].by if cid in an.attributed else None,
            # request fingerprints that two or more members send and no unflagged account does (flagged clusters)
            "fingerprints": own_fps.get(cid, []),
            "reasons": [r.as_dict() for r in model.reasons({k: float(v[cinfo[cid]]) for k, v in cstrs.items()},
                                                            {k: float(v[cinfo[cid]]) for k, v in cfeats.items()})],
        }
        for cid in cluster_ids
    ]
    _write_jsonl(out / "clusters.jsonl", cluster_lines)

    # -- analyst files ----------------------------------------------------------------------
    acc_cols = {"account_id": account_ids, "score": final_score, "own_score": scores, "flagged": flagged,
                "cluster_id": [clusters.get(a) for a in account_ids]}
    acc_cols.update({k: v for k, v in feats.items()})
    acc_cols.update({f"s_{k}": v for k, v in strs.items()})
    pq.write_table(pa.table(acc_cols), out / "accounts.parquet")
    # the catalogue, with how this scan's model weighs each signal and turns its feature into a strength
    signals = [{**d, "model": model.strength_curve(d["name"])} if d["name"] in SIGNALS_BY_NAME else d for d in catalogue()]
    (out / "signals.json").write_text(json.dumps(signals, indent=2) + "\n")
    flagged_ids = sorted(a for a, f in zip(account_ids, flagged) if f)  # in account order, as verdicts.jsonl
    _write_evidence(con, out, flagged_ids, verdict_lines, idx, clusters, edges, redact=redact)
    flagged_clusters = {cid for cid in cluster_ids if cflag[cinfo[cid]]}
    fc_accounts = pa.array(sorted({a for c in flagged_clusters for a in members[c]}), pa.string())
    edge_mask = pc.or_(pc.or_(pc.is_in(edges.column("src"), fc_accounts), pc.is_in(edges.column("dst"), fc_accounts)),
                       pc.fill_null(pc.equal(sc, dc), False))
    pq.write_table(edges.filter(edge_mask).select(["src", "dst", "type", "w", "shared", "example", "total"])
                   .rename_columns(["src", "dst", "type", "weight", "shared", "example", "total"]), out / "graph_edges.parquet")
    timings["scoring_s"] = time.perf_counter() - t
    return {
        "accounts": len(account_ids),
        "flagged_accounts": int(flagged.sum()),
        "clusters": len(cluster_ids),
        "flagged_clusters": len(flagged_clusters),
        "time_range": [float(np.min(cols["t0"])), float(np.max(cols["t1"]))],
    }


def _edge_clusters(edges: pa.Table, clusters: dict[str, str]) -> tuple[pa.Array, pa.Array]:
    """Cluster id of each edge's ``src`` and ``dst`` (null where unclustered), computed in Arrow."""
    accs = pa.array(list(clusters), pa.string())
    cids = pa.array(list(clusters.values()), pa.string())
    return (pc.take(cids, pc.index_in(edges.column("src"), accs)),
            pc.take(cids, pc.index_in(edges.column("dst"), accs)))


def _link_summary(con, edges: pa.Table, sc: pa.Array, dc: pa.Array) -> dict[str, list[dict[str, Any]]]:
    """Per cluster: which key types link its members, the example shared value, accounts and edges.

    ``sc``, ``dc``: the cluster of each edge's ends (:func:`_edge_clusters`). Aggregated in DuckDB over
    the edges inside clusters (millions at 10M-request scale), so that no per-edge Python object is made.
    """
    if edges.num_rows == 0:
        return {}
    inside = pc.fill_null(pc.equal(sc, dc), False)
    e = pa.table({"c": sc, "src": edges.column("src"), "dst": edges.column("dst"), "type": edges.column("type"),
                  "example": edges.column("example")}).filter(inside)
    con.register("_dg_cluster_edges", e)
    try:
        rows = con.sql("""
WITH ex AS (SELECT c, type, example, count(*) AS n FROM _dg_cluster_edges GROUP BY ALL),
top AS (SELECT c, type, arg_max(example, (n, coalesce(example, ''))) AS value, count(*) AS distinct_values, sum(n) AS edges
        FROM ex GROUP BY c, type),
acc AS (SELECT c, type, count(DISTINCT a) AS accounts FROM (
          SELECT c, type, src AS a FROM _dg_cluster_edges UNION ALL SELECT c, type, dst FROM _dg_cluster_edges) GROUP BY c, type)
SELECT c, type, value, accounts, edges, distinct_values FROM top JOIN acc USING (c, type)
ORDER BY c, edges DESC, type""").fetchall()
    finally:
        con.unregister("_dg_cluster_edges")
    out: dict[str, list[dict[str, Any]]] = {}
    for c, typ, value, accounts, n_edges, distinct in rows:
        out.setdefault(c, []).append({"type": typ, "value": value, "accounts": int(accounts), "edges": int(n_edges),
                                      "distinct_values": int(distinct)})
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def _write_evidence(con, out: Path, flagged_ids: list[str], verdicts: list[dict], idx: dict[str, int],
                    clusters: dict[str, str], edges: pa.Table, *, redact: bool) -> None:
    if not flagged_ids:
        (out / "evidence.jsonl").write_bytes(b"")
        return
    con.register("_dg_flagged", pa.table({"account_id": pa.array(flagged_ids, pa.string())}))
    ex = con.sql(
        f"""SELECT account_id, list(left(prompt, {EXAMPLE_CHARS}) ORDER BY ts, request_id)[1:{EXAMPLE_PROMPTS}] AS prompts,
                   min(ts) AS t0, max(ts) AS t1
            FROM (SELECT account_id, prompt, ts, request_id, row_number() OVER (PARTITION BY account_id ORDER BY ts, request_id) AS k
                  FROM events SEMI JOIN _dg_flagged USING (account_id)) WHERE k <= 50 GROUP BY account_id"""
    ).to_arrow_table().to_pylist()
    tl = con.sql(
        """SELECT account_id, floor(ts / 3600)::BIGINT AS h, count(*) AS c FROM events SEMI JOIN _dg_flagged USING (account_id)
           GROUP BY ALL"""
    ).to_arrow_table().to_pydict()
    ind = con.sql(
        """SELECT account_id, type, list(DISTINCT value ORDER BY value)[1:20] AS vals FROM _dg_keys
           SEMI JOIN _dg_flagged USING (account_id) GROUP BY ALL"""
    ).to_arrow_table().to_pylist()
    con.unregister("_dg_flagged")
    hours: dict[str, dict[int, int]] = {}
    for a, h, c in zip(tl["account_id"], tl["h"], tl["c"]):
        hours.setdefault(a, {})[h] = c
    indicators: dict[str, dict[str, list]] = {}
    names = {"client_ip": "client_ips", "ip_prefix": "ip_prefixes", "user_agent_params": "user_agent_params",
             "payment_fingerprint": "payment_fingerprints", "template": "template_signatures",
             "email_domain": "email_domains", "created_wave": "created_waves",
             "request_fingerprint": "request_fingerprints", "sync_timing": "activity_window_bands"}
    for r in ind:
        vals = r["vals"]
        if redact and r["type"] in _TEXT_LINKS:  # the request fingerprint starts with the system prompt
            vals = sorted(_redact_link_value(v) for v in vals)
        indicators.setdefault(r["account_id"], {})[names.get(r["type"], r["type"])] = vals
    ua = con.sql(
        """SELECT account_id, list(DISTINCT user_agent ORDER BY user_agent)[1:5] AS uas FROM events WHERE user_agent IS NOT NULL
           AND account_id IN (SELECT unnest($ids)) GROUP BY account_id""",
        params={"ids": flagged_ids},
    ).to_arrow_table().to_pylist()
    for r in ua:
        indicators.setdefault(r["account_id"], {})["user_agents"] = r["uas"]
    links: dict[str, list[dict[str, Any]]] = {}
    fset = set(flagged_ids)
    fids = pa.array(flagged_ids, pa.string())
    touching = pc.or_(pc.is_in(edges.column("src"), fids), pc.is_in(edges.column("dst"), fids))
    # the strongest links first, ties in a fixed order: two scans of one log give the same evidence
    t = edges.filter(touching).select(["src", "dst", "type", "w", "example"])
    t = t.take(pc.sort_indices(t, [("w", "descending"), ("src", "ascending"), ("dst", "ascending"), ("type", "ascending")])).to_pydict()
    for s, d, typ, w, exv in zip(t["src"], t["dst"], t["type"], t["w"], t["example"]):
        for a, b in ((s, d), (d, s)):
            if a in fset and len(links.setdefault(a, [])) < 50:
                links[a].append({"account_id": b, "type": typ, "value": exv, "weight": round(float(w), 4)})
    exmap = {r["account_id"]: r for r in ex}
    with open(out / "evidence.jsonl", "wb") as f:
        for a in flagged_ids:
            v = verdicts[idx[a]]
            e = exmap.get(a, {})
            h = hours.get(a, {})
            start = min(h) if h else 0
            end = max(h) if h else 0
            if end - start > 24 * 60:  # long histories: daily buckets
                bucket = 24
                counts: dict[int, int] = {}
                for k, c in h.items():
                    counts[(k - start) // 24] = counts.get((k - start) // 24, 0) + c
                series = [counts.get(i, 0) for i in range((end - start) // 24 + 1)]
            else:
                bucket = 1
                series = [h.get(start + i, 0) for i in range(end - start + 1)]
            prompts = e.get("prompts") or []
            rec = {
                "account_id": a,
                "cluster_id": clusters.get(a),
                "score": v["score"],
                "example_prompts": [_redact(p) if redact else p for p in prompts],
                "timeline": {"start": start * 3600, "bucket_s": 3600 * bucket, "counts": series},
                "links": links.get(a, []),
                "indicators": dict(sorted(indicators.get(a, {}).items())),  # in a fixed order (rows come in any)
            }
            f.write(orjson.dumps(rec) + b"\n")
