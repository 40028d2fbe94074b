"""The daemon as systemd runs it: readiness, status, watchdog, clean stop, resume."""

from __future__ import annotations

import os
import signal
import stat
import statistics
import time
from pathlib import Path

from conftest import read_json, run_cli, wait_until


def notify_env(ns, watchdog_usec=1_000_000):
    return {"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": str(watchdog_usec)}


def test_ready_watchdog_status_and_clean_stop(daemon_factory, notify_socket):
    d = daemon_factory(env=notify_env(notify_socket)).start()
    ready_at = notify_socket.wait_for("READY=1", timeout=5)
    assert ready_at - d.started_at < 5

    # WATCHDOG=1 at half of WATCHDOG_USEC (1 s -> every 0.5 s).
    wait_until(lambda: len(notify_socket.lines("WATCHDOG=1")) >= 6, 6, what="six watchdog pings")
    times = [t for t, _ in notify_socket.lines("WATCHDOG=1")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.4 <= statistics.median(gaps) <= 0.65, gaps

    # STATUS= on every state change.
    assert any(m.startswith("STATUS=READY") for _, m in notify_socket.lines("STATUS="))
    assert d.request("live")["ok"]
    d.wait_state("LIVE")
    wait_until(lambda: any(m.startswith("STATUS=LIVE") for _, m in notify_socket.lines("STATUS=")), 3,
               what="STATUS=LIVE")

    # SIGTERM: STOPPING=1, then exit 0 within 10 s.
    t0 = time.monotonic()
    assert d.terminate(timeout=10) == 0
    assert time.monotonic() - t0 < 10
    assert notify_socket.lines("STOPPING=1")
    assert "stopped cleanly" in d.log()
    assert not d.socket.exists(), "the control socket is removed on a clean stop"


def test_a_stalled_main_loop_stops_the_watchdog_pings(daemon_factory, notify_socket):
    d = daemon_factory(env=notify_env(notify_socket)).start()
    notify_socket.wait_for("READY=1", timeout=5)
    wait_until(lambda: len(notify_socket.lines("WATCHDOG=1")) >= 2, 3, what="pings")
    t0 = time.monotonic()
    assert d.request("sim", action="stall", seconds=2.5)["ok"]
    t1 = time.monotonic()
    during = [t for t, _ in notify_socket.lines("WATCHDOG=1") if t0 + 0.1 < t < t1 - 0.05]
    assert during == [], "a hung loop must not ping the watchdog"
    # ... and it pings again once the loop runs.
    wait_until(lambda: [t for t, _ in notify_socket.lines("WATCHDOG=1") if t > t1], 2, what="pings after the stall")
    assert d.terminate() == 0


def test_watchdog_pid_of_another_process_means_no_pings(daemon_factory, notify_socket):
    env = {**notify_env(notify_socket), "WATCHDOG_PID": "1"}
    d = daemon_factory(env=env).start()
    notify_socket.wait_for("READY=1", timeout=5)
    time.sleep(1.2)
    assert notify_socket.lines("WATCHDOG=1") == []
    assert d.terminate() == 0


def test_live_intent_survives_kill_9(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY")
    assert d.request("live")["ok"]
    d.wait_state("LIVE")
    assert read_json(d.dir / "state" / "state.json")["live_intent"] is True
    d.kill()  # kill -9: no chance to clean up

    again = daemon_factory().start()  # same directory, same state
    again.wait_state("LIVE", timeout=10)
    wait_until(lambda: "go from resume" in again.log(), 5, what="the resume in the log")
    assert "live intent found" in again.log()

    # An explicit stop is remembered too: the next start stays in READY.
    assert again.request("stop")["ok"]
    again.wait_state("READY")
    assert again.terminate() == 0
    third = daemon_factory().start()
    third.wait_state("READY")
    time.sleep(0.5)
    assert third.state() == "READY"
    assert third.terminate() == 0


def test_sigterm_while_live_keeps_the_intent(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY")
    d.request("live")
    d.wait_state("LIVE")
    assert d.terminate() == 0
    assert read_json(d.dir / "state" / "state.json")["live_intent"] is True


def test_corrupt_state_file_does_not_stop_the_boot(daemon_factory):
    d = daemon_factory()
    (d.dir / "state").mkdir(parents=True)
    (d.dir / "state" / "state.json").write_text('{"live_intent": tr')  # torn by a bad SD card
    d.start()
    d.wait_state("READY")
    assert "is corrupt" in d.log()
    assert (d.dir / "state" / "state.corrupt").exists()
    assert d.terminate() == 0


def test_sim_go_press_goes_live(daemon_factory):
    d = daemon_factory(args=["--sim-go-after", "0.2"]).start()
    d.wait_state(("LIVE", "DEGRADED"), timeout=10)
    wait_until(lambda: "go from GO button" in d.log(), 5, what="the press in the log")
    leds = d.request("status")["status"]["components"]["panel"]["leds"]
    assert leds["live"]["pattern"] == "solid" and leds["live"]["lit"]
    assert d.terminate() == 0


def test_control_socket_permissions_and_bad_requests(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY")
    mode = stat.S_IMODE(os.stat(d.socket).st_mode)
    assert mode & 0o007 == 0, oct(mode)  # nobody outside owner and group
    import socket as so
    with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(str(d.socket))
        s.sendall(b"this is not json\n[1,2]\n{\"cmd\": \"frobnicate\"}\n")
        buf = b""
        while buf.count(b"\n") < 3:
            buf += s.recv(4096)
    answers = buf.decode().splitlines()
    assert "not JSON" in answers[0]
    assert '\\"cmd\\" string' in answers[1] or '"cmd" string' in answers[1]
    assert "unknown command 'frobnicate'" in answers[2]
    assert d.state() == "READY", "bad requests never take the daemon down"
    assert d.terminate() == 0


def test_cli_status_live_stop(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY")
    sock = ["--socket", str(d.socket)]
    r = run_cli("status", *sock)
    assert r.returncode == 0 and "READY" in r.stdout and "panel" in r.stdout
    r = run_cli("live", *sock, "--json")
    assert r.returncode == 0 and '"ok": true' in r.stdout
    d.wait_state("LIVE")
    r = run_cli("status", *sock, "--json")
    assert '"state": "LIVE"' in r.stdout
    r = run_cli("stop", *sock)
    assert r.returncode == 0
    d.wait_state("READY")
    assert d.terminate() == 0


def test_cli_without_a_daemon_says_so(tmp_path):
    r = run_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 1
    assert "is the appliance running?" in r.stderr


def test_a_component_that_fails_to_start_degrades_not_kills(daemon_factory):
    # The panel asks for a pin the (mock) board does not have.
    d = daemon_factory(config_extra="[panel]\nbuttons = { go = 400 }\n").start()
    d.wait_state("READY")
    st = d.request("status")["status"]
    assert st["components"]["panel"]["state"] == "failed"
    assert "panel failed" in st["conditions"]
    assert st["components"]["control"]["state"] == "running"
    # Still steerable without its panel.
    d.request("live")
    d.wait_state("DEGRADED")
    assert d.terminate() == 0


def test_a_broken_config_exits_78_with_every_problem(daemon_factory):
    d = daemon_factory(config_extra="[video]\nfps = 0\nwidht = 5\n").start()
    assert d.proc.wait(10) == 78
    log = d.log()
    assert "video.fps" in log and 'did you mean "width"' in log


def test_second_daemon_on_the_same_socket_is_refused(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY")
    twin = daemon_factory()
    twin.dir = d.dir
    twin.config = d.config
    twin.log_path = d.dir / "twin.log"
    twin.start()
    assert twin.proc.wait(10) == 1
    assert "another appliance daemon is already running" in twin.log()
    assert d.state() == "READY"
    assert d.terminate() == 0


def test_go_with_a_read_only_state_directory_goes_live_says_so_and_saves_once_it_can(daemon_factory, ingest):
    """A card remounted read-only under the state directory: the show goes on."""
    import subprocess

    out = ingest.start()
    d = daemon_factory(config_extra=f'[stream]\nenabled = true\nurl = "srt://localhost:{ingest.port}"\n'
                                    'latency_ms = 200\n')
    state = d.dir / "state"
    state.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)], check=True)
    try:
        d.start()
        d.wait_state("READY", timeout=20)
        asked = time.monotonic()
        answer = d.request("live")
        assert answer["ok"], answer
        d.wait_state(("LIVE", "DEGRADED"), timeout=10)
        print(f"GO -> live with the state directory read-only: {time.monotonic() - asked:.2f} s")
        status = d.request("status")["status"]
        assert any(c.startswith("cannot save state: Read-only file system") for c in status["conditions"]), status
        wait_until(lambda: d.request("status")["status"]["components"]["panel"]["leds"]["live"]["pattern"]
                   == "triple flash", 5, what="the LIVE LED saying so")
        wait_until(lambda: d.output("recorder")["bytes"] > 200_000, 10, what="recording")
        wait_until(lambda: d.output("srt")["connected"], 10, what="streaming")
        assert d.request("live")["state"] in ("LIVE", "DEGRADED"), "a second GO leaves it live"
        subprocess.run(["mount", "-o", "remount,rw", str(state)], check=True)
        wait_until(lambda: not any(c.startswith("cannot save state") for c in d.request("status")["status"]["conditions"]),
                   20, what="the condition cleared once the write went through")
        assert read_json(state / "state.json")["live_intent"] is True
        assert d.request("stop")["ok"]
        d.wait_state("READY", timeout=15)
        assert d.terminate() == 0
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    ingest.stop()
    assert out.stat().st_size > 100_000


def test_go_while_booting_is_refused_with_a_reason_not_dropped(daemon_factory):
    from appliance.supervisor import control

    d = daemon_factory().start()
    answer = wait_until(lambda: _ask(control, d), 20, interval=0.005, what="the control socket, still BOOTING")
    # The control socket is the first component up; the encoder probes alone keep it BOOTING 0.5 s.
    assert answer["state"] == "BOOTING", answer
    assert not answer["ok"] and "still booting" in answer["error"], answer
    d.wait_state("READY", timeout=20)
    assert d.request("live")["ok"]
    assert d.terminate() == 0


def _ask(control, d):
    try:
        return control.request(d.socket, "live")
    except OSError:
        return None


class WatchdogKeeper:
    """What systemd does with WatchdogSec=: no WATCHDOG=1 within WATCHDOG_USEC, and the
    daemon gets SIGABRT (WatchdogSignal's default) and is started again (Restart=)."""

    def __init__(self, notify_socket, usec: int):
        self.ns, self.timeout = notify_socket, usec / 1e6

    def last_ping(self) -> float | None:
        pings = self.ns.lines("WATCHDOG=1")
        return pings[-1][0] if pings else None

    def wait_for_a_missed_ping(self, within: float) -> float:
        """The time of the last ping, once none has come for WATCHDOG_USEC."""
        return wait_until(lambda: (last := self.last_ping()) is not None and time.monotonic() - last > self.timeout
                          and last, within, what="a missed watchdog ping")

    def restart(self, d, daemon_factory, env):
        d.proc.send_signal(signal.SIGABRT)
        d.proc.wait(10)
        return daemon_factory(env=env).start()  # same directory: same state, same live intent


def test_a_wedged_encoder_stops_the_pings_and_the_box_comes_back_live_by_itself(daemon_factory, notify_socket):
    env = notify_env(notify_socket, 2_000_000)  # pings every second
    keeper = WatchdogKeeper(notify_socket, 2_000_000)
    d = daemon_factory(env=env).start()
    notify_socket.wait_for("READY=1", timeout=10)
    assert d.request("live")["ok"]
    d.wait_state(("LIVE", "DEGRADED"), timeout=15)
    wait_until(lambda: d.component("media")["frames_encoded"] > 30, 15, what="frames encoded")

    blocked_at = time.monotonic()
    assert d.request("sim", action="encoder-hang", seconds=120)["ok"]
    last = keeper.wait_for_a_missed_ping(within=20)
    bound = 3.0  # the media thread's: 60 frames at 30 fps, never under 3 s (then one ping interval)
    print(f"\nwedged encoder -> last WATCHDOG=1: {last - blocked_at:.2f} s")
    assert last - blocked_at < bound + 1.0 + 2.0, "the pings went on too long (2 s slack for a loaded box)"
    log = d.log()
    assert "thread media has made no progress" in log
    stack = log[log.index("thread media has made no progress"):]
    assert "in encode" in stack and "encoders.py" in stack, "the log names where the thread is stuck"
    assert "withholding WATCHDOG=1" in log
    # Nothing pulls the audio meanwhile: its buffers hold 2 s and drop the rest, never grow.
    wait_until(lambda: d.component("media")["audio"]["program"]["overflow_samples"] > 0, 10,
               what="the audio buffer bounded")

    again = keeper.restart(d, daemon_factory, env)
    again.wait_state(("LIVE", "DEGRADED"), timeout=20)  # no GO: the live intent
    wait_until(lambda: "go from resume" in again.log(), 5, what="the resume in the log")
    wait_until(lambda: again.component("media")["frames_encoded"] > 30, 15, what="encoding again")
    assert again.terminate() == 0


def test_a_stuck_poller_is_a_condition_and_the_pings_go_on(daemon_factory, notify_socket):
    d = daemon_factory(env=notify_env(notify_socket, 2_000_000)).start()
    notify_socket.wait_for("READY=1", timeout=10)
    d.wait_state("READY", timeout=10)
    hung_at = time.monotonic()
    assert d.request("sim", action="hang", thread="power-ups", seconds=20)["ok"]
    wait_until(lambda: "thread power-ups stuck" in d.request("status")["status"]["conditions"], 25,
               what="the stuck poller's condition")
    pings = [t for t, _ in notify_socket.lines("WATCHDOG=1") if t > hung_at]
    assert len(pings) >= 8 and max(b - a for a, b in zip(pings, pings[1:])) < 2.0, "the pings went on"
    assert "withholding" not in d.log()
    # It moves again, and the condition goes with it.
    wait_until(lambda: "thread power-ups stuck" not in d.request("status")["status"]["conditions"], 20,
               what="the condition cleared")
    assert d.terminate() == 0


def test_sim_hang_names_the_threads_it_knows(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY", timeout=10)
    answer = d.request("sim", action="hang", thread="nope", seconds=1)
    assert not answer["ok"] and "no running thread 'nope'" in answer["error"] and "media" in answer["error"]
    answer = d.request("sim", action="encoder-hang", seconds=1)
    assert not answer["ok"] and "only while live" in answer["error"]
    # The same names in the kernel's view, where `top -H` and `ps -L` read them.
    comms = {p.read_text().strip() for p in Path(f"/proc/{d.proc.pid}/task").glob("*/comm")}
    assert {"media", "panel-leds", "power-ups"} <= comms, comms
    assert d.terminate() == 0


def test_a_live_box_logs_changes_and_faults_and_one_summary_a_period(daemon_factory):
    d = daemon_factory(config_extra="[log]\nsummary_seconds = 2\n").start()
    d.wait_state("READY")
    assert d.request("live")["ok"]
    d.wait_state(("LIVE", "DEGRADED"))
    time.sleep(3)  # the start's own lines (encoder, recorder, connections)
    mark = len(d.log().splitlines())
    time.sleep(7)
    steady = [line for line in d.log().splitlines()[mark:] if " INFO " in line]
    summaries = [line for line in steady if " live: " in line]
    assert 2 <= len(summaries) <= 4, steady
    assert steady == summaries, "nothing else at INFO while a show runs steadily"
    assert "kb/s (target" in summaries[-1]
    assert "ignored: condition" not in d.log(), "a condition that was already so is DEBUG"
    assert d.terminate() == 0
