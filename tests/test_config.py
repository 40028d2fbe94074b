"""Configuration: layering, validation that reports everything, secrets masked."""

from __future__ import annotations

import json
import tomllib

import pytest

from appliance import config as cfgmod
from appliance import profiles
from appliance.configshow import SECRET_MASK
from appliance.errors import ConfigError
from conftest import run_cli

SECRETS = ("hunter2-passphrase", "publish:secret-key", "api-token-xyz")


def write(tmp_path, text, name="site.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_three_mistakes_are_all_reported_with_file_and_key(tmp_path):
    site = write(tmp_path, """
[stream]
latncy_ms = 500          # typo
[encoder]
bitrate_kbps = 999999    # out of range
[api]
port = "http"            # wrong type
""")
    r = run_cli("config", "check", str(site), "--profile", "sim")
    assert r.returncode != 0
    problems = [line.strip() for line in r.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == 3, r.stderr
    assert any(p.startswith(f"{site}: stream.latncy_ms: unknown key") and 'did you mean "latency_ms"' in p for p in problems)
    assert any(p.startswith(f"{site}: encoder.bitrate_kbps:") and "50000" in p for p in problems)
    assert any(p.startswith(f"{site}: api.port:") and "integer" in p for p in problems)


def test_a_good_file_checks_ok(tmp_path):
    site = write(tmp_path, '[stream]\nlatency_ms = 500\n[device]\nname = "venue-2"\n')
    r = run_cli("config", "check", str(site), "--profile", "raspberry-pi-4")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_errors_name_the_layer_that_set_the_key(tmp_path):
    broken_profile = {"video": {"fps": 500}}
    with pytest.raises(ConfigError) as e:
        cfgmod.load(write(tmp_path, "[encoder]\nbitrate_kbps = 1\n"), broken_profile, "hw_profiles/broken.toml")
    problems = e.value.problems
    assert any(p.startswith("hw_profiles/broken.toml: video.fps:") for p in problems)
    assert any(p.startswith(f"{tmp_path / 'site.toml'}: encoder.bitrate_kbps:") for p in problems)


def test_unknown_section_and_list_item_keys(tmp_path):
    site = write(tmp_path, '[strem]\nurl = "x"\n[encoder]\nladder = [{ encoder = "libx264", preset = "fast" }]\n')
    with pytest.raises(ConfigError) as e:
        cfgmod.load(site, {}, "profile")
    text = str(e.value)
    assert 'strem: unknown key; did you mean "stream"?' in text
    assert "encoder.ladder[0].preset: unknown key" in text


def test_toml_syntax_error_names_file_and_line(tmp_path):
    site = write(tmp_path, "[stream]\nurl = \n")
    r = run_cli("config", "check", str(site), "--profile", "sim")
    assert r.returncode != 0
    assert str(site) in r.stderr and "line 2" in r.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    r = run_cli("config", "show", "--profile", "sim", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode != 0
    assert f"{tmp_path / 'nope.toml'}: file not found" in r.stderr


def test_layers_site_over_profile_over_defaults(tmp_path):
    profile = profiles.load("raspberry-pi-4")
    site = write(tmp_path, '[video]\nfps = 25\n[encoder]\nladder = [{ encoder = "libx264" }]\n')
    cfg = cfgmod.load(site, profile.data, str(profile.path))
    assert cfg.video.fps == 25  # site
    assert cfg.video.width == 1920  # profile
    assert cfg.encoder.keyframe_seconds == 1.0  # default
    # Lists are replaced whole: the site's ladder, not a mix with the profile's.
    assert [r.encoder for r in cfg.encoder.ladder] == ["libx264"]


def test_secrets_never_shown(tmp_path):
    site = write(tmp_path, f"""
[stream]
passphrase = "{SECRETS[0]}"
stream_id = "{SECRETS[1]}"
[api]
token = "{SECRETS[2]}"
""")
    for fmt in ([], ["--json"]):
        r = run_cli("config", "show", "--profile", "sim", "--config", str(site), *fmt)
        assert r.returncode == 0, r.stderr
        for secret in SECRETS:
            assert secret not in r.stdout + r.stderr
        assert SECRET_MASK in r.stdout
    shown = json.loads(run_cli("config", "show", "--profile", "sim", "--config", str(site), "--json").stdout)
    assert shown["api"]["token"] == SECRET_MASK
    assert shown["stream"]["url"] == ""  # unset secrets and plain values are not masked
    # And the secret is really there for the code that needs it.
    cfg = cfgmod.load(site, {}, "profile")
    assert cfg.stream.passphrase.get_secret_value() == SECRETS[0]
    assert SECRETS[0] not in repr(cfg)


def test_secrets_inside_urls_are_masked_in_config_show_and_in_errors(tmp_path):
    url = "srt://relay.example.net:5000?streamid=publish:hidden-key&latency=500&passphrase=aes-secret-123"
    site = write(tmp_path, f'[stream]\nenabled = true\nurl = "{url}"\n[rtmp]\nurl = "rtmp://u:pw-secret@x.example/live?key=k-secret"\n')
    for fmt in ([], ["--json"]):
        r = run_cli("config", "show", "--profile", "sim", "--config", str(site), *fmt)
        assert r.returncode == 0, r.stderr
        for secret in ("hidden-key", "aes-secret-123", "pw-secret", "k-secret"):
            assert secret not in r.stdout, secret
        assert "latency=500" in r.stdout and "relay.example.net:5000" in r.stdout, "the rest stays readable"
    bad = write(tmp_path, '[stream]\nurl = "srt://relay.example.net?streamid=publish:hidden-key"\n')
    with pytest.raises(ConfigError) as e:
        cfgmod.load(bad, {}, "profile")
    assert "stream.url" in str(e.value) and "hidden-key" not in str(e.value)


def test_a_wrongly_typed_secret_is_not_echoed_in_the_error(tmp_path):
    site = write(tmp_path, "[api]\ntoken = 987654321\n")
    with pytest.raises(ConfigError) as e:
        cfgmod.load(site, {}, "profile")
    assert "987654321" not in str(e.value)
    assert "api.token" in str(e.value)


def test_config_show_is_valid_toml_that_validates_again(tmp_path):
    r = run_cli("config", "show", "--profile", "raspberry-pi-4")
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    cfg = cfgmod.validate([("shown", data)])
    assert cfg.board.name == "raspberry-pi-4"
    assert [(r.encoder, r.backend) for r in cfg.encoder.ladder[:2]] == [("v4l2h264enc", "gstreamer"),
                                                                        ("h264_v4l2m2m", "pyav")]


@pytest.mark.parametrize("name", sorted(profiles.available()))
def test_every_shipped_profile_validates(name):
    profile = profiles.load(name)
    cfg = cfgmod.load(None, profile.data, str(profile.path))
    assert cfg.board.name == name
    assert cfg.encoder.ladder, "a profile must name at least one encoder"
    assert cfg.encoder.ladder[-1].encoder == "libx264", "the ladder must end in the software encoder"
    assert cfg.encoder.rungs()[-1].encoder == "libx264", "and so must the order the show tries it in"
    if cfg.panel.backend not in ("none",):
        assert cfg.panel.buttons.go is not None and cfg.panel.leds.live is not None


def test_the_profiles_the_issue_names_exist():
    assert {"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nx", "jetson-orin-nano", "jetson-nano",
            "generic-x86", "sim"} <= set(profiles.available())


def test_a_section_level_error_never_prints_the_section(tmp_path):
    site = write(tmp_path, f'[stream]\nenabled = true\npassphrase = "{SECRETS[0]}"\n')
    with pytest.raises(ConfigError) as e:
        cfgmod.load(site, {}, "profile")
    assert "needs stream.url" in str(e.value)
    assert SECRETS[0] not in str(e.value)


def test_the_codec_orders_the_ladder_and_wrong_combinations_say_what_to_change(tmp_path):
    ladder = 'ladder = [{ codec = "libx264" }, { encoder = "x265enc", backend = "gstreamer" }, { encoder = "libx265" }]\n'
    cfg = cfgmod.load(write(tmp_path, '[encoder]\ncodec = "h265"\n' + ladder), {}, "profile")
    assert [r.encoder for r in cfg.encoder.rungs()] == ["x265enc", "libx265", "libx264"], "H.265 first, H.264 after"
    assert cfg.encoder.ladder[0].encoder == "libx264", "a rung's old key 'codec' still names its encoder"
    assert [r.encoder for r in cfgmod.load(write(tmp_path, "[encoder]\n" + ladder), {}, "p").encoder.rungs()] == \
        ["libx264"], "an H.264 show never falls forward to H.265"
    problems = []
    for text in ('[encoder]\ncodec = "h265"\nladder = [{ encoder = "libx264" }]\n',
                 '[encoder]\nladder = [{ encoder = "mjpeg" }]\n',
                 '[encoder]\ncodec = "h265"\nladder = [{ encoder = "libx265" }]\n'
                 '[rtmp]\nenabled = true\nurl = "rtmp://live.example.net/app"\n'):
        with pytest.raises(ConfigError) as e:
            cfgmod.load(write(tmp_path, text), {}, "profile")
        problems.append(str(e.value))
    assert 'no rung of the ladder makes it (they make h264): add one, or set codec = "h264"' in problems[0]
    assert "encoder.ladder[0]" in problems[1] and "whether 'mjpeg' makes H.264 or H.265" in problems[1]
    assert "RTMP carries H.264 only here" in problems[2] and 'set encoder.codec = "h264"' in problems[2]


def test_preflight_says_what_the_show_needs_in_each_codec_its_ladder_can_run(tmp_path):
    from appliance.outputs.abr import audio_kbps
    from appliance.uplinks import preflight

    ladder = 'ladder = [{ encoder = "x265enc", backend = "gstreamer" }, { encoder = "libx264" }]\n'
    cfg = cfgmod.load(write(tmp_path, '[encoder]\ncodec = "h265"\nbitrate_kbps = 3000\naudio_bitrate_kbps = 128\n'
                            + ladder + '[audio]\ntracks = [{ name = "program" }]\n'), {}, "profile")
    audio = audio_kbps(1, 128)
    assert preflight.needed_by_codec(cfg) == {"h265": 3000 + audio, "h264": 5000 + audio}, "H.264: 1/0.6 the video"
    assert preflight.needed_kbps(cfg)[0] == 3000 + audio, "the verdict is for the show's own codec"
    report = {"verdict": "go", "codec": "h265", "needed_kbps": 3000 + audio, "floor_kbps": 800 + audio,
              "latency_ms": 1000, "needed_by_codec": preflight.needed_by_codec(cfg), "links": []}
    assert (f"the show needs {3000 + audio} kb/s in H.265; for the same picture after a fallback: {5000 + audio} "
            "in H.264" in preflight.table(report)), preflight.table(report)
    h264 = cfgmod.load(write(tmp_path, "[encoder]\n" + ladder), {}, "profile")
    assert list(preflight.needed_by_codec(h264)) == ["h264"], "an H.264 show never runs H.265: nothing else to say"


def test_the_fleet_needs_tls_to_any_broker_off_the_box_and_its_password_is_masked(tmp_path):
    from appliance.configshow import masked

    def fleet(body):
        return cfgmod.load(write(tmp_path, "[fleet]\nenabled = true\n" + body), {}, "profile").fleet

    problems = []
    for body in ('broker = "mqtt://broker.example.net:1883"\n', 'broker = "ws://broker.example.net/mqtt"\n',
                 '', 'broker = "tcp://broker.example.net"\n',
                 'broker = "mqtts://broker.example.net"\ncert_file = "/etc/appliance/box.crt"\n'):
        with pytest.raises(ConfigError) as e:
            fleet(body)
        problems.append(str(e.value))
    assert "site.toml: fleet: fleet.broker 'mqtt://broker.example.net:1883' is not encrypted: use mqtts://" \
           in problems[0], problems[0]
    assert "is not encrypted" in problems[1] and "needs fleet.broker" in problems[2], problems
    assert "is not mqtts://HOST:PORT, wss://HOST/PATH" in problems[3] and "go together" in problems[4], problems
    assert fleet('broker = "mqtt://broker.example.net"\ninsecure = true\n').insecure, "allowed when asked for"
    for on_the_box in ("mqtt://localhost:1883", "mqtt://127.0.0.1", "mqtt://[::1]:1883"):
        assert fleet(f'broker = "{on_the_box}"\n').broker == on_the_box
    cfg = cfgmod.load(write(tmp_path, '[fleet]\nenabled = true\nbroker = "mqtts://b.example.net"\n'
                            'password = "hunter2-hunter2"\n'), {}, "profile")
    assert "hunter2" not in json.dumps(masked(cfg)) and cfg.fleet.password.get_secret_value() == "hunter2-hunter2"


def test_pops_one_by_url_or_several_by_relays_each_with_its_secrets(tmp_path):
    from appliance.configshow import masked

    one = cfgmod.load(write(tmp_path, '[stream]\nenabled = true\nurl = "srt://relay.example.net:5000"\n'
                            'relay_secret = "secret-one-0123456"\n'), {}, "p").stream
    assert [(p.label, p.relay_secret.get_secret_value()) for p in one.pops()] == [("relay.example.net", "secret-one-0123456")]
    several = cfgmod.load(write(tmp_path, '[stream]\nenabled = true\nlatency_ms = "auto"\nrelays = [\n'
                                '  { url = "srt://fra.pop.example.net:5000", relay_secret = "secret-fra-0123456" },\n'
                                '  { name = "ams", url = "srt://[2001:db8::1]:5000?latency=300" },\n]\n'), {}, "p").stream
    assert [p.label for p in several.pops()] == ["fra.pop.example.net", "ams"]
    aimed = several.at(several.pops()[0])
    assert aimed.url == "srt://fra.pop.example.net:5000" and aimed.relay_secret.get_secret_value() == "secret-fra-0123456"
    assert several.latency_ms == "auto" and "secret-fra" not in json.dumps(masked(cfgmod.validate([("s", {})])))
    problems = []
    for text in ('[stream]\nenabled = true\nurl = "srt://a.example.net:1"\nrelays = [{ url = "srt://b.example.net:1" }]\n',
                 '[stream]\nenabled = true\nrelays = [{ url = "srt://b.example.net:1" }, { url = "srt://b.example.net:2" }]\n',
                 '[stream]\nenabled = true\nrelays = [{ url = "rtmp://b.example.net/x" }]\n',
                 '[stream]\nenabled = true\nurl = "srt://a.example.net:1"\nlatency_ms = "soon"\n'):
        with pytest.raises(ConfigError) as e:
            cfgmod.load(write(tmp_path, text), {}, "p")
        problems.append(str(e.value))
    assert "give stream.url (one PoP) or stream.relays (several), not both" in problems[0], problems[0]
    assert "two PoPs named alike" in problems[1] and "give each a name" in problems[1], problems[1]
    assert "stream.relays[0].url" in problems[2], problems[2]
    assert "stream.latency_ms" in problems[3], problems[3]


def test_a_device_name_that_cannot_be_a_topic_level_needs_a_fleet_box(tmp_path):
    fleet = '[fleet]\nenabled = true\nbroker = "mqtts://broker.example.net"\n'
    with pytest.raises(ConfigError) as e:
        cfgmod.load(write(tmp_path, '[device]\nname = "Hall A/left"\n' + fleet), {}, "p")
    assert "the box name 'Hall A/left' (device.name) cannot be a topic level: set fleet.box" in str(e.value)
    ok = cfgmod.load(write(tmp_path, '[device]\nname = "Hall A/left"\n' + fleet + 'box = "hall-a-left"\n'), {}, "p")
    assert ok.fleet.box == "hall-a-left"
    with pytest.raises(ConfigError) as e:
        cfgmod.load(write(tmp_path, '[stream]\nlatency_min_ms = 900\nlatency_max_ms = 500\n'), {}, "p")
    assert "latency_min_ms is above stream.latency_max_ms" in str(e.value)
