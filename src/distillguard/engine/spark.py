"""The event → account-stats stage on PySpark (``scan --engine spark``).

:func:`spark_account_stats` is the Spark twin of :func:`distillguard.features.stats.account_stats`:
it exports the events table of a DuckDB connection to Parquet, derives the same per-request values
(:func:`~distillguard.features.derive.derive_sql`) and aggregates them per account
(:func:`~distillguard.features.stats.stats_sql`) with the Spark DataFrame API, and returns an Arrow
table with exactly the columns and types of the DuckDB path. Everything runs as native Spark
expressions (no Python UDFs), so a cluster's executors need no Python packages.

Details kept equal to DuckDB:

- ``md5_number_lower`` (the lower 8 bytes of MD5, little-endian, unsigned) is rebuilt from
  Spark's hex ``md5``; hashes travel as signed 64-bit keys with the top bit flipped (an
  order-preserving map of unsigned values) and are turned back into ``uint64`` at the end;
- ``lower`` follows DuckDB (utf8proc, one code point to one code point): Java's ``lower`` makes a
  final sigma ``ς``, maps ``İ`` to two code points and misses a few newer Unicode letters, so those
  code points are mapped first (:data:`LOWER_FIXES`);
- ``CAST(round(x, 3) AS VARCHAR)`` (DuckDB rounds the exact binary value half away from zero and
  prints the shortest decimal) is rebuilt with an exact product and a scale-3 decimal;
- ``min(x, k)`` (the k smallest distinct values) is a window ``row_number`` over distinct values;
  regular expressions are the common subset of RE2 and Java regex, ``regexp_matches`` ≈ ``rlike``.

Master: ``local[2]`` unless given (``spark://host:7077``, ``yarn``, ...). On a cluster the Parquet
staging folder must be visible to every executor at the same path: set ``DISTILLGUARD_SPARK_STAGING``
(or pass ``staging=``) to a shared folder.

>>> SPARK_CONF["spark.ui.enabled"]
'false'
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.errors import InputError
from distillguard.features.derive import PATTERNS, SCAN_CHARS, SIG_CHARS, WORD_PATTERN, WORDS_PROMPT_CHARS
from distillguard.features.repeats import REPEAT_MIN_CHARS, REPEAT_SAMPLE
from distillguard.features.pivot import (
    ESTABLISHED_H,
    PIVOT_WINDOW_H,
    RELEASE_MAX_PRIOR_SHARE,
    RELEASE_MIN_HOURLY,
    RELEASE_MIN_SHARE,
)
from distillguard.features.stats import FAST_IAT_S, FLAG_COLUMNS, KMV_K, MAX_DAYS, SET_K, STAT_COLUMNS, WORDS_FIRST_N

DEFAULT_MASTER = "local[2]"
#: Spark settings for the session this module starts (a user's spark-defaults.conf still applies).
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.icu.caseMappings.enabled": "false",  # see LOWER_FIXES
}
#: Extra settings for local masters: one shuffle partition per core (Spark's default of 200 is far too
#: many for one machine) and no adaptive re-planning (it costs more than it saves at this size).
LOCAL_CONF = {"spark.sql.adaptive.enabled": "false"}
STAGING_ENV = "DISTILLGUARD_SPARK_STAGING"

#: Events columns the stage reads (exported to Parquet).
EVENT_INPUT_COLUMNS = (
    "request_id", "ts", "account_id", "prompt", "completion_tokens", "prompt_tokens", "n_assistant_msgs", "logprobs",
    "n", "finish_reason", "stream", "system_prompt", "has_tools", "reasoning_effort", "reasoning_tokens",
    "temperature", "top_p", "max_tokens", "model", "end_user",
)  # fmt: skip

#: Spark's ``lower`` is Java's here (ICU case mappings switched off: twice as fast): it writes a final
#: sigma ``ς``, maps ``İ`` to two code points and misses letters newer than Java's Unicode version.
#: Every code point that DuckDB (utf8proc) lowers differently is mapped first, with ``translate``, to
#: DuckDB's lower case, which Java's ``lower`` leaves alone. Checked for every code point by tests/engine.
LOWER_FIXES: dict[int, int] = {
    0x03A3: 0x03C3, 0x0130: 0x0069, 0x2C2F: 0x2C5F, 0xA7C0: 0xA7C1, 0xA7D0: 0xA7D1, 0xA7D6: 0xA7D7, 0xA7D8: 0xA7D9,
    **{c: c + 0x27 for c in range(0x10570, 0x10596) if c not in (0x1057B, 0x1058B, 0x10593)},  # Vithkuqi
}  # fmt: skip
ICU_CONF = "spark.sql.icu.caseMappings.enabled"

_SIGN = -(2**63)  # XOR with this flips the top bit: unsigned order == signed order of the result
_LOCK = threading.Lock()
_SESSION: Any = None
_SESSION_MASTER: str | None = None


def stats_schema() -> pa.Schema:
    """Arrow schema of the account-stats table (the same as DuckDB's ``account_stats``)."""
    fields = [pa.field("account_id", pa.string())]
    for name in STAT_COLUMNS:
        if name in ("t0", "t1", "iat_sum", "iat_sum2"):
            typ: pa.DataType = pa.float64()
        elif name in ("hours", "days"):
            typ = pa.list_(pa.field("l", pa.int64()))
        elif name in KMV_K:
            typ = pa.list_(pa.field("l", pa.uint64()))
        elif name in SET_K:
            typ = pa.list_(pa.field("l", pa.string()))
        else:
            typ = pa.int64()
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


def get_session(master: str | None = None) -> Any:
    """The SparkSession for ``master`` (default: an active session, else ``local[2]``), cached per process."""
    global _SESSION, _SESSION_MASTER
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError("engine spark needs PySpark: pip install 'distillguard[spark]' (and Java 17+)") from e
    with _LOCK:
        active = SparkSession.getActiveSession()
        if master is None and active is not None:
            return active
        want = master or DEFAULT_MASTER
        if _SESSION is not None and _SESSION_MASTER == want and active is _SESSION:
            return _SESSION
        if active is not None and active.sparkContext.master != want:
            active.stop()
        b = SparkSession.builder.master(want).appName("distillguard")
        conf = dict(SPARK_CONF)
        if want.startswith("local"):
            conf.update(LOCAL_CONF)
            conf["spark.sql.shuffle.partitions"] = str(_local_cores(want))
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.driver.bindAddress"] = "127.0.0.1"
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        log4j = _quiet_log4j()
        locale = "-Duser.language=en -Duser.country=US"  # Java's lower() follows the default locale (tr: I -> ı)
        conf["spark.driver.extraJavaOptions"] = f"{locale} -Dlog4j2.configurationFile={log4j} -Dlog4j.configurationFile={log4j}"
        conf["spark.executor.extraJavaOptions"] = locale
        for k, v in conf.items():
            b = b.config(k, v)
        try:
            s = b.getOrCreate()
        except Exception as e:
            raise InputError(f"cannot start Spark with master {want!r}: {e}. Check that Java 17+ is installed "
                             "(JAVA_HOME) and that the master URL is reachable.") from e
        s.sparkContext.setLogLevel("ERROR")
        _SESSION, _SESSION_MASTER = s, want
        return s


def _local_cores(master: str) -> int:
    """Cores of a ``local``/``local[N]``/``local[*]`` master URL.

    >>> _local_cores("local[3]"), _local_cores("local")
    (3, 1)
    """
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
    n = inside.split(",")[0]
    return max(1, os.cpu_count() or 1) if n == "*" else max(1, int(n)) if n.isdigit() else 2


def stop_session() -> None:
    """Stop the session this module started (if any)."""
    global _SESSION, _SESSION_MASTER
    with _LOCK:
        if _SESSION is not None:
            _SESSION.stop()
        _SESSION, _SESSION_MASTER = None, None


#: Warnings while Spark starts (``get_session`` then sets errors only). A root level other than WARN makes
#: Spark print "Setting default log level to WARN" and how to change it at every start; the one warning
#: every local start gives (no native Hadoop library: the Java code is used) says nothing to a user.
_LOG4J2 = (
    "rootLogger.level = warn\nrootLogger.appenderRef.stderr.ref = console\n"
    "appender.console.type = Console\nappender.console.name = console\nappender.console.target = SYSTEM_ERR\n"
    "appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n"
    "logger.hadoop.name = org.apache.hadoop.util.NativeCodeLoader\nlogger.hadoop.level = error\n"
)


def _quiet_log4j() -> str:
    path = Path(tempfile.gettempdir()) / "distillguard-spark-log4j2.properties"
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != _LOG4J2:  # absent, or written by an older version
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(_LOG4J2)
        tmp.replace(path)  # atomic: a concurrent start reads the old file or the new one, never half of one
    return str(path)


# -- expressions ------------------------------------------------------------------------------


def duck_lower(col: Any) -> Any:
    """Spark expression: DuckDB's ``lower`` of a string column (with ICU case mappings off)."""
    from pyspark.sql import functions as F

    src = "".join(chr(c) for c in LOWER_FIXES)
    dst = "".join(chr(c) for c in LOWER_FIXES.values())
    ascii_only = F.length(col) == F.octet_length(col)  # nothing to fix: skip the (slower) translate
    return F.when(ascii_only, F.lower(col)).otherwise(F.lower(F.translate(col, src, dst)))


def md5_u64_key(col: Any) -> Any:
    """Spark expression: DuckDB's ``md5_number_lower`` as an order-preserving signed 64-bit key.

    The unsigned value is ``key XOR -2**63`` read as unsigned (see :func:`keys_to_uint64`).
    """
    from pyspark.sql import functions as F

    hexd = F.md5(col)
    # bytes 8..15 of the digest, little-endian: hex pairs 15, 14, ..., 8
    le = F.concat(*[F.substring(hexd, 2 * i + 1, 2) for i in range(15, 7, -1)])
    signed = F.conv(le, 16, -10).cast("bigint")
    return signed.bitwiseXOR(F.lit(_SIGN))


def keys_to_uint64(arr: pa.Array) -> pa.Array:
    """Inverse of the key map of :func:`md5_u64_key` for an int64 Arrow array."""
    flipped = pc.bit_wise_xor(arr, pa.scalar(_SIGN, pa.int64()))
    return flipped.view(pa.uint64())


def round3_text(col: Any) -> Any:
    """Spark expression: DuckDB's ``CASE WHEN x IS NULL THEN '-' ELSE CAST(round(x, 3) AS VARCHAR) END``.

    DuckDB rounds the exact binary value of ``x`` to 3 places, ties away from zero, and prints the
    shortest decimal that reads back. ``x * 1000`` is computed exactly as ``hi + lo`` (Dekker's
    product: Veltkamp split, plain IEEE doubles), so a tie in ``hi`` is broken by the sign of ``lo``;
    below 1e12 the printed text is then the scale-3 decimal ``r / 1000`` without trailing zeros.
    """
    from pyspark.sql import functions as F

    x = col.cast("double")
    hi = x * F.lit(1000.0)
    c = x * F.lit(134217729.0)  # 2^27 + 1
    xh = c - (c - x)
    xl = x - xh
    lo = (xh * F.lit(1000.0) - hi) + xl * F.lit(1000.0)  # exact: x * 1000 == hi + lo
    frac = hi % F.lit(1.0)  # exact, sign of hi
    trunc = hi - frac
    afrac = F.abs(frac)
    same_sign = (lo == 0) | ((lo > 0) & (hi > 0)) | ((lo < 0) & (hi < 0))
    up = (afrac > 0.5) | ((afrac == 0.5) & same_sign)
    r = trunc + F.when(up, F.signum(hi)).otherwise(F.lit(0.0))
    dec = (r.cast("decimal(38,0)") / F.lit(1000)).cast("decimal(38,3)").cast("string")
    text = F.regexp_replace(F.regexp_replace(dec, "0+$", ""), "\\.$", ".0")
    neg_zero = (r == 0) & x.cast("string").startswith("-")
    return (
        F.when(x.isNull(), F.lit("-"))
        .when(F.isnan(x), F.lit("nan"))
        .when(x == float("inf"), F.lit("inf"))
        .when(x == float("-inf"), F.lit("-inf"))
        .when(neg_zero, F.lit("-0.0"))
        .when(F.abs(x) < F.lit(1e12), text)
        .otherwise(x.cast("string"))  # absurd magnitudes: Java's notation, not DuckDB's (documented)
    )


def with_pivot_flags(df: Any) -> Any:
    """``df`` plus the model-pivot flags ``post`` and ``newm`` (twin of ``features.pivot.pivot_flags_sql``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = df.withColumn("_h", F.floor(F.col("ts") / 3600).cast("bigint"))
    hm = df.groupBy("_h", "model").agg(F.count(F.lit(1)).alias("c"))
    before = Window.orderBy("_h").rowsBetween(Window.unboundedPreceding, -1)
    hours = hm.groupBy("_h").agg(F.sum("c").alias("ch"))
    hours = hours.withColumn("cab", F.coalesce(F.sum("ch").over(before), F.lit(0)))
    mbefore = Window.partitionBy("model").orderBy("_h").rowsBetween(Window.unboundedPreceding, -1)
    mcum = hm.where(F.col("model").isNotNull()).withColumn("cb", F.coalesce(F.sum("c").over(mbefore), F.lit(0)))
    first_h = hours.agg(F.min("_h").alias("first_h"))
    rel = (
        mcum.join(hours, "_h").crossJoin(first_h)
        .where((F.col("_h") >= F.col("first_h") + ESTABLISHED_H) & (F.col("c") >= RELEASE_MIN_HOURLY)
               & (F.col("c") >= RELEASE_MIN_SHARE * F.col("ch")) & (F.col("cb") < RELEASE_MAX_PRIOR_SHARE * F.col("cab")))
        .groupBy("model").agg(F.min("_h").alias("r"))
    )
    spark = df.sparkSession
    windows = (rel.crossJoin(spark.range(1, PIVOT_WINDOW_H + 1))
               .select("model", (F.col("r") + F.col("id")).alias("_h")).distinct())
    post = windows.select("_h").distinct().withColumn("post", F.lit(True))
    newm = windows.withColumn("newm", F.lit(True))
    return (df.join(F.broadcast(post), "_h", "left").join(F.broadcast(newm), ["_h", "model"], "left")
            .withColumn("post", F.coalesce(F.col("post"), F.lit(False)))
            .withColumn("newm", F.coalesce(F.col("newm"), F.lit(False))).drop("_h"))


def derived_frame(df: Any) -> Any:
    """Per-request derived values (twin of ``derived_sql``): flags, counts, psig, temp text, hash keys, iat, rk."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = with_pivot_flags(df)

    prompt = F.coalesce(F.col("prompt"), F.lit(""))
    p = F.substring(prompt, 1, SCAN_CHARS)
    df = df.select("*", p.alias("_p"))
    df = df.select("*", duck_lower(F.col("_p")).alias("_low"))  # 1:1 per code point, so left/right commute with it
    low = F.col("_low")
    flags = [low.rlike(pat).alias(k) for k, pat in PATTERNS.items()]
    psig = F.concat_ws(
        "|",
        round3_text(F.col("temperature")),
        round3_text(F.col("top_p")),
        F.when(F.col("max_tokens").isNull(), F.lit("-")).otherwise(F.col("max_tokens").cast("string")),
        F.coalesce(F.col("n"), F.lit(1)).cast("string"),
        F.when(F.coalesce(F.col("stream"), F.lit(False)), F.lit("1")).otherwise(F.lit("0")),
        F.when(F.coalesce(F.col("logprobs"), F.lit(False)), F.lit("1")).otherwise(F.lit("0")),
    )
    w = Window.partitionBy("account_id").orderBy("ts", "request_id")
    # shared prompts (features.repeats): a sampled prompt sent earlier by another account
    ph = md5_u64_key(F.col("_p"))
    df = df.withColumn("_ph", ph).withColumn(
        "_rpt_n", ((F.col("_ph").bitwiseAND(REPEAT_SAMPLE - 1) == 0) & (F.length(F.col("_p")) >= REPEAT_MIN_CHARS)))
    wp = Window.partitionBy("_rpt_n", "_ph").orderBy("ts", "request_id").rowsBetween(Window.unboundedPreceding, -1)
    df = df.withColumn("_rpt", F.coalesce(F.col("_rpt_n") & ((F.min("account_id").over(wp) != F.col("account_id"))
                                                           | (F.max("account_id").over(wp) != F.col("account_id"))), F.lit(False)))
    out = df.select(
        "account_id",
        "ts",
        "end_user",
        *flags,
        F.coalesce(F.col("completion_tokens"), F.lit(0)).cast("bigint").alias("out_tok"),
        F.coalesce(F.col("prompt_tokens"), F.lit(0)).cast("bigint").alias("in_tok"),
        (F.coalesce(F.col("n_assistant_msgs"), F.lit(0)) == 0).alias("single"),
        F.coalesce(F.col("logprobs"), F.lit(False)).alias("lp"),
        (F.coalesce(F.col("n"), F.lit(1)) > 1).alias("nmulti"),
        F.coalesce(F.col("finish_reason") == "length", F.lit(False)).alias("hitmax"),
        F.coalesce(F.col("stream"), F.lit(False)).alias("stream"),
        (F.coalesce(F.col("system_prompt"), F.lit("")) != "").alias("sys"),
        F.coalesce(F.col("has_tools"), F.lit(False)).alias("tools"),
        (F.coalesce(F.col("reasoning_effort").isin("medium", "high"), F.lit(False))
         | (F.coalesce(F.col("reasoning_tokens"), F.lit(0)) > 0)).alias("effort"),
        "post",
        "newm",
        psig.alias("psig"),
        round3_text(F.col("temperature")).alias("temp_s"),
        F.col("_ph").alias("ph"),
        md5_u64_key(F.substring(low, 1, SIG_CHARS)).alias("pre"),
        md5_u64_key(F.expr(f"right(_low, {SIG_CHARS})")).alias("suf"),
        F.col("_rpt_n").alias("rpt_n"),
        F.col("_rpt").alias("rpt"),
        (F.col("ts") - F.lag("ts").over(w)).alias("iat"),
        F.row_number().over(w).alias("rk"),
        F.substring(low, 1, WORDS_PROMPT_CHARS).alias("_wtext"),
    )
    words = F.when(F.col("rk") <= WORDS_FIRST_N, F.regexp_extract_all(F.col("_wtext"), F.lit(WORD_PATTERN), 0))
    return out.withColumn("words", words).drop("_wtext")


def stats_frame(d: Any) -> Any:
    """Per-account stats (twin of ``stats_sql``) from :func:`derived_frame`; hash columns as int64 keys."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    hour = F.floor(F.col("ts") / 3600) % 24
    words = F.flatten(F.collect_list("words"))
    base = d.groupBy("account_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.min("ts").alias("t0"),
        F.max("ts").alias("t1"),
        F.sum("out_tok").cast("bigint").alias("out_tok"),
        F.sum("in_tok").cast("bigint").alias("in_tok"),
        F.count("iat").alias("iat_n"),
        F.coalesce(F.sum("iat"), F.lit(0.0)).alias("iat_sum"),
        F.coalesce(F.sum(F.col("iat") * F.col("iat")), F.lit(0.0)).alias("iat_sum2"),
        F.count(F.when(F.col("iat") < FAST_IAT_S, 1)).alias("fast_n"),
        F.size(words).cast("bigint").alias("words_total"),
        F.size(F.array_distinct(words)).cast("bigint").alias("words_distinct"),
        *[F.sum(F.col(c).cast("int")).cast("bigint").alias(c) for c in FLAG_COLUMNS],
        F.array(*[F.count(F.when(hour == i, 1)) for i in range(24)]).alias("hours"),
        F.slice(F.sort_array(F.collect_set(F.floor(F.col("ts") / 86400))), 1, MAX_DAYS).alias("days"),
        *[F.slice(F.sort_array(F.collect_set(c)), 1, SET_K[name]).alias(name)
          for name, c in (("set_psig", "psig"), ("set_temp", "temp_s"))],
    )
    # k smallest distinct hashes per (account, sketch): distinct, rank, keep k, collect
    names = list(KMV_K)
    long = d.select(
        "account_id",
        F.explode(F.array(*[F.struct(F.lit(i).alias("which"), F.col(name.removeprefix("kmv_")).alias("h"))
                            for i, name in enumerate(names)])).alias("x"),
    ).select("account_id", "x.which", "x.h").distinct()
    w = Window.partitionBy("account_id", "which").orderBy("h")
    ranked = long.withColumn("r", F.row_number().over(w))
    keep = None
    for i, name in enumerate(names):
        cond = (F.col("which") == i) & (F.col("r") <= KMV_K[name])
        keep = cond if keep is None else keep | cond
    kmv = ranked.where(keep).groupBy("account_id").agg(
        *[F.sort_array(F.collect_list(F.when(F.col("which") == i, F.col("h")))).alias(name) for i, name in enumerate(names)]
    )
    eu = (d.where(F.col("end_user").isNotNull()).groupBy("account_id", "end_user").count()
          .groupBy("account_id").agg(F.max("count").cast("bigint").alias("eu_top")))
    return (base.join(kmv, "account_id", "left").join(eu, "account_id", "left")
            .withColumn("eu_top", F.coalesce(F.col("eu_top"), F.lit(0).cast("bigint"))).select("account_id", *STAT_COLUMNS))


def _to_arrow(t: pa.Table) -> pa.Table:
    schema = stats_schema()
    cols = []
    for f in schema:
        col = t.column(f.name).combine_chunks() if t.num_rows else pa.array([], f.type)
        if f.name in KMV_K and t.num_rows:
            lst = col.cast(pa.list_(pa.int64()))
            values = keys_to_uint64(lst.values)
            col = pa.ListArray.from_arrays(lst.offsets, values, type=f.type, mask=lst.is_null())
        cols.append(col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def spark_account_stats(con: Any, *, master: str | None = None, events: str = "events",
                        staging: str | Path | None = None) -> pa.Table:
    """Per-account stats of DuckDB table ``events`` computed on Spark; equal to ``account_stats(con)``.

    ``master``: Spark master URL (``local[2]`` when None and no session is active). ``staging``: folder
    for the Parquet export (default ``$DISTILLGUARD_SPARK_STAGING``, else a temp folder; it must be
    shared with the executors when the master is not local). Rows are sorted by ``account_id``.
    """
    staging = staging or os.environ.get(STAGING_ENV)
    if staging is None and not (master or DEFAULT_MASTER).startswith("local"):
        raise InputError(_staging_hint(master or DEFAULT_MASTER))
    spark = get_session(master)
    used = spark.sparkContext.master
    if staging is None and not used.startswith("local"):
        raise InputError(_staging_hint(used))
    try:
        root = Path(tempfile.mkdtemp(prefix="distillguard-spark-", dir=str(staging) if staging else None))
    except OSError as e:
        raise InputError(f"cannot create a Spark staging folder in {staging or tempfile.gettempdir()}: {e}") from e
    try:
        path = root / "events.parquet"
        cols = ", ".join(EVENT_INPUT_COLUMNS)
        quoted = path.as_posix().replace("'", "''")
        con.execute(f"COPY (SELECT {cols} FROM {events}) TO '{quoted}' (FORMAT parquet)")
        from pyspark import StorageLevel

        icu = spark.conf.get(ICU_CONF, None)
        spark.conf.set(ICU_CONF, "false")
        try:
            d = derived_frame(spark.read.parquet(str(path))).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                result = stats_frame(d).toArrow()
            finally:
                d.unpersist()
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"the Spark job on {used!r} failed: {first}. Check the executors' logs; on a cluster "
                             f"the staging folder {root} must be readable by every executor at that path.") from e
        finally:
            if icu is not None:
                spark.conf.set(ICU_CONF, icu)
        return _to_arrow(result).sort_by("account_id")  # binary string order, like Spark's and DuckDB's
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _staging_hint(master: str) -> str:
    return (f"engine spark with master {master!r} needs a staging folder that every executor can read at the same "
            f"path (a shared filesystem): set {STAGING_ENV}=/shared/path or use --spark-master 'local[N]'")
