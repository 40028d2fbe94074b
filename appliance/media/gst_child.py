"""The GStreamer encoder's child process: raw frames in on stdin, access units out
on stdout. Run by the OS's own Python (`/usr/bin/python3 gst_child.py JOB`), which
has the OS's GStreamer bindings (python3-gi, gir1.2-gstreamer-1.0,
gir1.2-gst-plugins-base-1.0): JetPack, Raspberry Pi OS and Debian ship them. It
imports nothing of the appliance: the daemon's virtual environment has no gi, and
a driver that crashes here takes only this process down. Written for the oldest
Python a stock OS brings (JetPack 4's 3.6): no annotations that need a newer one.

    appsrc (I420, the pipeline's clock as timestamps) ! JOB's elements (the encoder
    named "enc") ! h264parse / h265parse config-interval=-1 (parameter sets on every
    keyframe) ! byte-stream, one access unit per buffer ! appsink

Messages both ways: a 13-byte header (kind: 1 byte, length: u32, value: i64,
little-endian) and `length` bytes.
    in:  F frame (value: pts in 1/90000; the I420 picture), B bitrate (value: kb/s),
         E end (flush, then D)
    out: R ready (JSON: the elements it runs), P access unit (value: pts; the first
         byte of the payload 1 for a keyframe, 0 otherwise), X error (text), D done
"""

import json
import os
import struct
import sys
import threading

HEADER = struct.Struct("<cIq")


def write_message(fd, kind, value=0, payload=b""):
    data = HEADER.pack(kind, len(payload), value) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(stream, n):
    """n bytes, or None at the end of the stream."""
    buf = bytearray(n)
    return buf if read_into(stream, memoryview(buf)) else None


def read_into(stream, view):
    """Fills view from the stream; False at its end."""
    got, n = 0, len(view)
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            return False
        got += k
    return True


def frame_buffer(Gst, stream, length):
    """A Gst buffer holding the next picture, read straight into its memory where the
    OS's gst-python overrides (python3-gst-1.0) map it writable, else copied in once more."""
    buf = Gst.Buffer.new_allocate(None, length, None)
    try:
        with buf.map(Gst.MapFlags.WRITE) as info:
            if isinstance(info.data, memoryview) and not info.data.readonly:
                return buf if read_into(stream, info.data) else None
    except (AttributeError, TypeError):  # no overrides: map() is the plain binding
        pass
    data = read_exact(stream, length)
    return None if data is None else Gst.Buffer.new_wrapped(bytes(data))


def pipeline_description(job):
    codec = job["codec"]
    caps = f"video/x-raw,format=I420,width={job['width']},height={job['height']},framerate={job['fps']}/1"
    parser = "h265parse" if codec == "h265" else "h264parse"
    return (f"appsrc name=src is-live=true format=time block=true caps={caps} ! {job['elements']} ! "
            f"{parser} config-interval=-1 ! video/x-{codec},stream-format=byte-stream,alignment=au ! "
            f"appsink name=sink sync=false max-buffers=0")


def main(argv):
    job = json.loads(argv[0])
    out = sys.stdout.fileno()
    lock = threading.Lock()

    def send(kind, value=0, payload=b""):
        with lock:
            write_message(out, kind, value, payload)

    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401 - GstApp gives appsrc/appsink their methods
    except (ImportError, ValueError) as e:
        send(b"X", payload=f"the OS's GStreamer bindings are missing ({e}): install python3-gi, "
                           "gir1.2-gstreamer-1.0 and gir1.2-gst-plugins-base-1.0".encode())
        return 1
    Gst.init(None)
    try:
        pipe = Gst.parse_launch(pipeline_description(job))
    except Exception as e:  # GLib.Error: an element missing, a property it does not have
        send(b"X", payload=f"cannot build the pipeline: {e}".encode())
        return 1
    src, sink, enc = pipe.get_by_name("src"), pipe.get_by_name("sink"), pipe.get_by_name("enc")
    frame_ns = 1_000_000_000 // job["fps"]
    done = threading.Event()
    # Some encoders shift their timestamps (x264enc adds 1000 hours, room for B-frames'
    # DTS): the first access unit answers the first frame, and the rest keep that offset.
    first_in, offset, last_out = [], [], []

    def pull():
        while not done.is_set():
            sample = sink.try_pull_sample(Gst.SECOND // 10)
            if sample is None:
                if sink.is_eos():
                    send(b"D")
                    done.set()
                continue
            buf = sample.get_buffer()
            ok, info = buf.map(Gst.MapFlags.READ)
            if not ok:
                continue
            try:
                key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
                if not offset:
                    offset.append(buf.pts - first_in[0] if buf.pts != Gst.CLOCK_TIME_NONE and first_in else 0)
                if buf.pts != Gst.CLOCK_TIME_NONE:
                    pts = round((buf.pts - offset[0]) * 9 / 100_000)
                else:
                    # An access unit without a timestamp (x265enc, which restarts its encoder for
                    # a new bitrate, once gave one pts 0): with no B-frames it comes after the
                    # last; 0 would take the stream back to its start.
                    pts = last_out[0] + frame_ns * 9 // 100_000 if last_out else 0
                last_out[:] = [pts]
                send(b"P", pts, (b"\x01" if key else b"\x00") + bytes(info.data))
            finally:
                buf.unmap(info)

    def watch_bus():
        bus = pipe.get_bus()
        while not done.is_set():
            msg = bus.timed_pop_filtered(Gst.SECOND // 10, Gst.MessageType.ERROR)
            if msg is not None:
                err, debug = msg.parse_error()
                send(b"X", payload=f"{msg.src.get_name()}: {err.message}".encode())
                done.set()
                os._exit(1)  # the daemon falls back; nothing here is worth a clean exit

    if pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        send(b"X", payload=b"the pipeline does not start (the encoder refused the format, or its device)")
        return 1
    threading.Thread(target=pull, name="gst-pull", daemon=True).start()
    threading.Thread(target=watch_bus, name="gst-bus", daemon=True).start()
    send(b"R", payload=json.dumps({"elements": job["elements"]}).encode())
    stdin = sys.stdin.buffer
    prop, scale = job.get("bitrate_property") or "", int(job.get("bitrate_scale", 1))
    while not done.is_set():
        head = read_exact(stdin, HEADER.size)
        if head is None:
            break  # the daemon went: nothing to flush for
        kind, length, value = HEADER.unpack(head)
        payload = b""
        if kind != b"F" and length:
            payload = read_exact(stdin, length)
            if payload is None:
                break
        if kind == b"F":
            buf = frame_buffer(Gst, stdin, length)
            if buf is None:
                break
            buf.pts, buf.duration = value * 100_000 // 9, frame_ns
            if not first_in:
                first_in.append(buf.pts)
            src.push_buffer(buf)
        elif kind == b"B" and prop:
            enc.set_property(prop, value * scale)
        elif kind == b"E":
            src.end_of_stream()
            done.wait(5)
            break
    pipe.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
