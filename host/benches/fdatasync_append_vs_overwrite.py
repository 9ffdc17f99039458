#!/usr/bin/env python3
"""fdatasync latency of a log appended to vs one overwritten in place.

Why Keel recycles its write-ahead log segments (host/src/storage/wal.rs):
an fdatasync after an append must journal the file's new size, and on
ext4 (data=ordered) that journal commit waits for other files' dirty
data; an overwrite inside allocated blocks journals nothing. Each mode
runs 4 KB writes, each followed by fdatasync, for SECONDS (default 8)
quiet, then beside a checkpoint-like writer (16 MB written and fsynced
every 0.5 s). Run it in the directory whose file system you want to
measure: python3 host/benches/fdatasync_append_vs_overwrite.py
"""
import os
import threading
import time

SECONDS = float(os.environ.get("SECONDS_PER_PHASE", "8"))
RECORD = os.urandom(4000)
SEGMENT_BYTES = 128 << 20


def checkpoint_like(stop):
    fd = os.open("fdsync-bulk.tmp", os.O_RDWR | os.O_CREAT, 0o644)
    chunk = os.urandom(1 << 20)
    offset = 0
    while not stop.is_set():
        time.sleep(0.5)
        for _ in range(16):
            os.pwrite(fd, chunk, offset)
            offset = (offset + len(chunk)) % (256 << 20)
        os.fsync(fd)
    os.close(fd)


def run(mode):
    if os.path.exists("fdsync-log.tmp"):
        os.unlink("fdsync-log.tmp")
    if mode == "append":
        fd = os.open("fdsync-log.tmp", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    else:
        fd = os.open("fdsync-log.tmp", os.O_RDWR | os.O_CREAT, 0o644)
        zeros = bytes(1 << 20)
        for i in range(SEGMENT_BYTES >> 20):
            os.pwrite(fd, zeros, i << 20)
        os.fsync(fd)
    for phase in ("quiet", "beside checkpoints"):
        stop = threading.Event()
        bulk = threading.Thread(target=checkpoint_like, args=(stop,))
        if phase != "quiet":
            bulk.start()
        offset, lat = 0, []
        start = time.time()
        while time.time() - start < SECONDS and offset + len(RECORD) < SEGMENT_BYTES:
            if mode == "append":
                os.write(fd, RECORD)
            else:
                os.pwrite(fd, RECORD, offset)
            offset += len(RECORD)
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        stop.set()
        if bulk.is_alive():
            bulk.join()
        lat.sort()
        print(
            f"{mode:<9} {phase:<19} fdatasyncs {len(lat):>6}  p50 {lat[len(lat) // 2] * 1e3:6.2f} ms"
            f"  p99 {lat[int(len(lat) * 0.99)] * 1e3:6.2f} ms  max {lat[-1] * 1e3:6.1f} ms"
        )
        if mode == "append":
            os.ftruncate(fd, 0)
    os.close(fd)
    os.unlink("fdsync-log.tmp")


for mode in ("append", "overwrite"):
    run(mode)
if os.path.exists("fdsync-bulk.tmp"):
    os.unlink("fdsync-bulk.tmp")
