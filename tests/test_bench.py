"""The benchmarks still run and report every figure (tiny settings: no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "offchain.py"


def test_offchain_benchmark_reports_every_run() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "0.3", "--channels", "3", "--callers", "2",
         "--rates", "40"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    results = json.loads(out)
    assert set(results) == {
        "sequential", "concurrent_3", "offered_40_per_s_3_channels",
        "durable", "durable_2_callers_one_channel", "durable_concurrent_3",
        "durable_offered_40_per_s_3_channels", "limits",
    }
    limits = results.pop("limits")
    assert set(limits) == {"before", "after"}  # "missing" inside without PERUND_PAYMENT_LIMIT
    # bob's own timing of the fsyncs the sequential durable payments waited for.
    assert results["durable"].pop("payee_fsync_mean_us") > 0
    for name, figures in results.items():
        assert figures["payments"] > 0, name
        assert 0 < figures["p50_ms"] <= figures["p99_ms"], name
        # Each process's CPU per payment: both did work for every payment.
        assert figures["payer_cpu_us"] > 0 and figures["payee_cpu_us"] > 0, name
    for name in ("offered_40_per_s_3_channels", "durable_offered_40_per_s_3_channels"):
        assert results[name]["failed"] == 0
        assert results[name]["payments"] == 12  # 40/s for 0.3 s: every one due was paid


def test_api_benchmark_reports_both_credentials() -> None:
    api_bench = BENCH.with_name("api.py")
    out = subprocess.run([sys.executable, str(api_bench), "--seconds", "0.3", "--rounds", "1",
                          "--clients", "2"],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    results = json.loads(out)
    runs = results["sequential_channel_send_one_connection"]
    for who in ("operator", "session", "ws"):
        assert runs[who][0]["payments_per_s"] > 0
        assert 0 < runs[who][0]["p50_ms"] <= runs[who][0]["p99_ms"]
    together = results["concurrent_clients"]
    assert set(together) == {f"2_clients_{where}_{over}" for where in ("one_channel", "2_channels")
                             for over in ("http", "ws")}
    for figures in together.values():
        assert figures["payments"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert results["credential_check"]["session_us"] > 0
    assert 0 < results["credential_check_share_of_a_call"] < 1


def test_memory_benchmark_reports_per_channel_costs() -> None:
    out = subprocess.run([sys.executable, str(BENCH.with_name("memory.py")), "--channels", "20",
                          "--payments", "2"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    results = json.loads(out)
    assert results["channels"] == 20 and results["payments_per_channel"] == 2
    # Every channel and state is in the store: at least one record of each.
    assert results["store_file_bytes_per_channel"] > results["store_live_bytes_per_channel"] > 0
    assert results["rss_total_mb"] > 0


def test_retired_benchmark_opens_the_store_both_ways() -> None:
    out = subprocess.run([sys.executable, str(BENCH.with_name("retired.py")), "--channels", "30"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    results = json.loads(out)
    assert (results["closed_live"]["live"], results["closed_live"]["retired"]) == (30, 0)
    assert (results["retired"]["live"], results["retired"]["retired"]) == (0, 30)
    # The retired records are in their own file, none in the data file; an old store's move.
    assert results["retired_bytes"] > 30 * 300 > results["data_bytes"]
    assert results["retired_index_bytes"] == 30 * 44
    assert (results["after_migration"]["live"], results["after_migration"]["retired"]) == (0, 30)


def test_restart_benchmark_reports_when_the_node_is_ready_again() -> None:
    out = subprocess.run([sys.executable, str(BENCH.with_name("restart.py")), "--channels", "3",
                          "--states", "2", "--restarts", "2"],
                         capture_output=True, text=True, timeout=240, check=True).stdout
    results = json.loads(out)
    assert results["versions_written_per_side"] == 6
    first, second = results["ready_after_restart_s"]
    assert list(results["median_of_restarts_s"]) == list(first)[:-1]  # the figures aside
    assert list(second) == list(first)
    marks = first
    assert list(marks) == ["api", "sessions", "peers", "resynced", "channels",
                           "paid_on_every_channel", "node_at_resynced"]
    assert 0 < marks["api"] <= marks["sessions"] <= marks["peers"] <= marks["resynced"] \
        <= marks["channels"] <= marks["paid_on_every_channel"]
    assert marks["node_at_resynced"]["cpu_s"] > 0 and marks["node_at_resynced"]["rss_mb"] > 0


def test_gas_benchmark_reports_every_life_and_path() -> None:
    # The benchmark itself checks every account's ETH and tokens to the unit and exits non-zero
    # otherwise; here: it runs, and every life adds up.
    out = subprocess.run([sys.executable, str(BENCH.with_name("gas.py"))],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    results = json.loads(out)
    lives = ("cooperative", "dispute", "eth_token_cooperative", "eth_token_cooperative_permit",
             "token_cooperative", "eth_token_dispute")
    for life in (*(results[name] for name in lives), *results["virtual"].values()):
        assert life["total"] == sum(life["calls"].values()) > 0
    assert set(results["virtual"]) == {
        "carol_vanishes", "stale_virtual_state_refuted", "ledger_without_lock_refuted"}
    assert set(results["token_operations"]) == {
        "approve", "deposit_first", "deposit_second", "permit_deposit",
        "payouts_in_concludeFinal"}
    versus = results["versus_perun"]["eth_token_cooperative"]
    assert versus["perun"] == 707_193 and versus["perund"] == results[lives[2]]["total"]


def test_virtual_benchmark_reports_both_kinds_of_channel() -> None:
    out = subprocess.run([sys.executable, str(BENCH.with_name("virtual.py")), "--seconds",
                          "0.3"], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    results = json.loads(out)
    for name in ("ledger", "virtual", "durable_ledger", "durable_virtual"):
        assert results[name]["payments"] > 0, name
        assert 0 < results[name]["p50_ms"] <= results[name]["p99_ms"], name
    assert results["virtual_open_ms"] > 0 and results["durable_virtual_open_ms"] > 0
