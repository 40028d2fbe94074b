"""Edge PoPs on loopback: relays (`appliance relay`) named by host name; the chosen
one killed mid-show; the bond kept warm in READY; the latency bench's link cut; the
latency rule. (The ranking of two PoPs in their own namespaces is in test_netbench.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import APPLIANCE, ROOT, free_port, wait_until
from media_check import decode_files, missing_frames, only_session, segments
from netsim import Impairer, Ingest, stop_gracefully

SECRET = "a-shared-secret-for-the-relays"


def relay(port: int, ingest_port: int, secret) -> subprocess.Popen:
    return subprocess.Popen([*APPLIANCE, "relay", "--listen", str(port), "--to", f"srt://localhost:{ingest_port}",
                             "--secret-file", str(secret)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)


def box_with_pops(daemon_factory, private_hosts, pops: dict[str, int], uplinks: str, latency: str = "500"):
    """A box (a small picture) bonding over `uplinks` to PoPs NAME.pop.test:PORT, by name."""
    private_hosts.set({f"{name}.pop.test": "127.0.0.1" for name in pops})
    relays = "".join(f'  {{ name = "{n}", url = "srt://{n}.pop.test:{port}", relay_secret = "{SECRET}" }},\n'
                     for n, port in pops.items())
    return daemon_factory(prefix=private_hosts.prefix, config_extra=f"""
[video]
width = 320
height = 180
fps = 15
[stream]
enabled = true
latency_ms = {latency}
bond = true
uplinks = {uplinks}
relays = [
{relays}]
""").start()


def test_without_a_preflight_a_quick_probe_in_ready_picks_the_nearer_pop_and_its_latency(
        daemon_factory, private_hosts, tmp_path, ingest):
    ingest.start()
    secret = tmp_path / "relay.secret"
    secret.write_text(SECRET)
    relays, paths = [], {}
    try:
        for name, one_way in (("far", 0.040), ("near", 0.010)):  # 80 ms and 20 ms more RTT; far listed first
            port = free_port()
            relays.append(relay(port, ingest.port, secret))
            paths[name] = Impairer(("127.0.0.1", port))
            paths[name].delay_all = one_way
        d = box_with_pops(daemon_factory, private_hosts, {n: p.addr[1] for n, p in paths.items()},
                          '["wired@127.0.0.2", "cell@127.0.0.3"]', latency='"auto"')
        d.wait_state("READY", timeout=30)
        wait_until(lambda: d.output("srt")["pop"] == "near", 20, what="the warm bond moved to the probe's choice")
        assert "near is the nearest" in d.log()
        assert d.request("live")["ok"]
        wait_until(lambda: d.output("srt")["connected"], 20, what="streaming")
        srt = d.output("srt")
        assert srt["pop"] == "near", srt
        assert "a quick probe's RTT" in srt["latency_rule"] and 120 <= srt["latency_ms"] < 2000, srt
        assert "stream: PoP near, the nearest by a quick probe at" in d.log()
        d.request("stop")
        d.wait_state("READY", timeout=20)
        manifest = json.loads(next((d.dir / "recordings").glob("*/session.json")).read_text())
        assert "quick probe" in manifest["settings"]["stream_plan"]["why"], manifest["settings"]["stream_plan"]
    finally:
        for r in relays:
            stop_gracefully(r)
        for p in paths.values():
            p.close()


def test_the_chosen_pop_killed_mid_show_the_stream_moves_to_the_other_and_the_recording_has_no_gap(
        daemon_factory, private_hosts, tmp_path):
    secret = tmp_path / "relay.secret"
    secret.write_text(SECRET)
    ingests, relays = {}, {}
    try:
        for name in ("a", "b"):  # each PoP with its own ingest, as edge PoPs are
            (tmp_path / name).mkdir()
            ingests[name] = Ingest(tmp_path / name, free_port())
            ingests[name].start()
            port = free_port()
            relays[name] = (port, relay(port, ingests[name].port, secret))
        d = box_with_pops(daemon_factory, private_hosts, {n: port for n, (port, _) in relays.items()},
                          '["wired@127.0.0.2", "cell@127.0.0.3"]')
        d.wait_state("READY", timeout=30)
        assert d.request("live")["ok"]
        wait_until(lambda: d.output("srt")["connected"], 20, what="streaming through a PoP")
        chosen = d.output("srt")["pop"]  # (the quick probe's: on loopback either)
        other = "b" if chosen == "a" else "a"
        time.sleep(3)
        relays[chosen][1].kill()  # the PoP dies with the stream on it
        killed = time.monotonic()
        wait_until(lambda: (lambda s: s["pop"] == other and s["connected"])(d.output("srt")), 20,
                   what="the stream through the other PoP")
        moved_in = time.monotonic() - killed
        chunks = d.output("srt")["chunks_sent"]
        wait_until(lambda: d.output("srt")["chunks_sent"] > chunks + 100, 10, what="the stream flowing through b")
        srt = d.output("srt")
        assert srt["pop_moves"] == 1 and f"(PoP {other})" in srt["url"], srt
        assert f"stream: leaving PoP {chosen} (no answer on any uplink for" in d.log()
        time.sleep(2)
        d.request("stop")
        d.wait_state("READY", timeout=20)
        skipped = d.component("media")["frames_dropped"]
        for i in ingests.values():
            i.stop()
        through_b = decode_files([ingests[other].runs[0][2]])
        assert len(through_b.video_pts) > 15, "the show went on through b"
        rec = decode_files(segments(only_session(d.dir / "recordings")))
        assert missing_frames(rec.video_pts) == skipped, "the recording never noticed"
        # The bound: the dead-link notice (at most 0.3 s), the PoP's silence (1 s), then a
        # registration and an SRT handshake on loopback.
        assert moved_in < 3.3, f"{moved_in:.1f} s from the kill to the stream on b"
    finally:
        for _, proc in relays.values():
            stop_gracefully(proc)
        for i in ingests.values():
            i.stop()


def test_go_goes_live_at_once_through_the_bond_kept_warm_in_ready_from_the_recordings_first_frame(
        daemon_factory, ingest, private_hosts, tmp_path):
    ingest.start()
    secret = tmp_path / "relay.secret"
    secret.write_text(SECRET)
    at_ingest = Impairer(("127.0.0.1", ingest.port))  # (no impairment: it notes the first TS packet through)
    port = free_port()
    r = relay(port, at_ingest.addr[1], secret)
    try:
        d = box_with_pops(daemon_factory, private_hosts, {"only": port}, '["wired@127.0.0.2"]')
        d.wait_state("READY", timeout=30)
        wait_until(lambda: d.output("srt").get("bond", {}).get("links", {}).get("wired", {}).get("state") == "up", 10,
                   what="the bond registered and its link up in READY")
        time.sleep(1)
        assert sum(at_ingest.forwarded.values()) == 0, "keepalives only: nothing reaches the ingest in READY"
        go = time.monotonic()
        assert d.request("live")["ok"]
        wait_until(lambda: at_ingest.first_data_at is not None, 10, what="the first TS packet at the ingest")
        print(f"GO to the first packet at the ingest: {(at_ingest.first_data_at - go) * 1000:.0f} ms")
        time.sleep(3)
        d.request("stop")
        d.wait_state("READY", timeout=20)
        log = d.log()
        assert "registers while READY: GO goes live at once" in log
        assert log.count("bond: uplink wired up") == 1, "GO took the bond registered in READY"
        assert d.output("srt").get("bond", {}).get("registered"), "STOP hands the bond back, warm"
        ingest.stop()
        received = decode_files([ingest.runs[0][2]])
        rec = decode_files(segments(only_session(d.dir / "recordings")))
        assert received.video_pts and received.video_pts[0] == rec.video_pts[0], (
            f"the stream starts at pts {received.video_pts[:1]}, the recording at {rec.video_pts[0]}")
    finally:
        stop_gracefully(r)
        at_ingest.close()


def test_auto_latency_at_40_ms_rtt_a_link_cut_loses_no_frame_at_the_ingest():
    """bench/latency.py's auto-cut case, shortened: pre-flight over two uplinks each
    behind 40 ms of RTT picks the latency, and the cell link is black-holed halfway."""
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "latency.py"), "--cases", "auto-cut", "--seconds", "8",
                          "--size", "640x360", "--rtt-ms", "40"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    case = json.loads(run.stdout.splitlines()[-1])["cases"][0]
    assert all(c["verdict"] == "go" and c["rtt_ms"] >= 40 for c in case["preflight"].values()), case["preflight"]
    # The rule on 40 ms: 4 x 40 + jitter + the notice (4 x 40) + 40, at least; from what pre-flight measured.
    from appliance.uplinks.latency import budget

    measured = [{"name": n, **c} for n, c in case["preflight"].items()]
    assert case["latency_ms"] == budget(measured, 120, 2000)[0] >= 370, case
    # (a frame the box itself skipped, a tick its media thread missed on a loaded machine, is no loss of the link's)
    assert case["lost"] <= case["box_skipped"], f"a link cut at {case['latency_ms']} ms lost frames: {case}"
    assert case["frames"] > 150 and case["unread"] == 0, "every frame's time code read at the ingest"
    assert case["median_ms"] >= case["latency_ms"], "the ingest holds each packet for the latency: the code reads true"


def test_the_latency_budget_follows_the_worst_link_within_its_bounds():
    from appliance.uplinks.latency import budget

    links = [{"name": "wired", "verdict": "go", "rtt_ms": 12.0, "jitter_ms": 1.0},
             {"name": "cell", "verdict": "go", "rtt_ms": 40.0, "jitter_ms": 6.0},
             {"name": "dead", "verdict": "no-go", "rtt_ms": 900.0, "jitter_ms": 0.0}]
    ms, rule = budget(links, 120, 2000)
    # 4 x 40 + 6 + the bond's notice for 40 ms (4 x 40 = 160, within 150..300) + 40 = 366 -> 370
    assert ms == 370, rule
    assert rule == "370 ms: 4 x 40 ms RTT + 6 ms jitter + 160 ms dead-link notice + 40 ms re-send, on cell", rule
    assert budget(links[:1], 400, 2000)[0] == 400 and "(the minimum)" in budget(links[:1], 400, 2000)[1]
    assert budget(links, 120, 300) == (300, budget(links, 120, 300)[1]) and "(the maximum)" in budget(links, 120, 300)[1]
    assert budget(links[2:], 120, 2000)[0] == 2000, "nothing usable measured: the maximum"


def test_go_takes_the_pops_and_latency_of_a_fresh_preflight_and_the_safe_defaults_without_one(tmp_path):
    from appliance import config as cfgmod
    from appliance.uplinks.preflight import FRESH_SECONDS, plan, rank_key

    site = tmp_path / "site.toml"
    site.write_text('[stream]\nenabled = true\nlatency_ms = "auto"\nlatency_max_ms = 1500\nrelays = [\n'
                    '  { name = "a", url = "srt://a.pop.test:5000" },\n  { name = "b", url = "srt://b.pop.test:5000" },\n]\n')
    stream = cfgmod.load(site, {}, "profile").stream
    def pop(name, verdict, *rtts):
        return {"pop": name, "verdict": verdict, "links": [{"verdict": "go", "rtt_ms": r, "loss_percent": 0} for r in rtts]}
    assert sorted([pop("a", "go", 20, 90), pop("b", "go", 30, 40), pop("c", "marginal", 5)], key=rank_key)[0]["pop"] == "b"
    report = {"at": 1000.0, "chosen": "b", "latency_ms": 370, "latency_rule": "370 ms: ..."}
    assert plan(report, stream, 1000.0 + 60) == {"pop": 1, "pop_name": "b", "why": plan(report, stream, 1060.0)["why"],
                                                 "latency_ms": 370, "latency_rule": "370 ms: ..."}
    assert plan(report, stream, 1060.0)["why"].startswith("ranked first by the pre-flight at")
    stale = plan(report, stream, 1000.0 + FRESH_SECONDS + 1)
    assert stale["pop"] == 0 and stale["latency_ms"] == 1500 and "no fresh pre-flight" in stale["latency_rule"]
    other = plan({**report, "chosen": "gone"}, stream, 1060.0)
    assert other["pop"] == 0, "a pre-flight of other PoPs chooses nothing"
