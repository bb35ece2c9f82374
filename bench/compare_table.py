#!/usr/bin/env python3
"""One side-by-side table from a peer-bench log and message-bench --json output.
Usage: compare_table.py PEER_LOG OURS_JSONL"""
import json
import re
import statistics
import sys

def peer_medians(path):
    runs = {}
    for line in open(path):
        if not line.startswith("RUN "):
            continue
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        tag = re.sub(r'-?run\d+$', '', kv.get("tag", "-")) or "-"
        key = (kv["backend"], kv["workload"], tag)
        for k, v in kv.items():
            try:
                value = float(v)
            except ValueError:
                continue
            runs.setdefault(key, {}).setdefault(k, []).append(value)
    return {k: {m: statistics.median(v) for m, v in g.items()} for k, g in runs.items()}

def ours(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        out[(r["workload"], r["metric"])] = r
    return out

# (label, our workload, our metric, peer workload, peer metric, mqtt tag, nats tag, higher is better, target)
ROWS = [
    ("W1 msg/s (1->1, pipelined)", "W1", "rate", "w1", "rate", "stock", "core", True, ">= 1.5x Mosquitto"),
    ("W1 broker CPU us/msg", "W1", "broker_cpu_us_per_msg", "w1", "broker_cpu_us_per_delivery", "stock", "core", False, "<= 3"),
    ("W1 msg/s, persist off", "W1 off", "rate", "w1", "rate", "stock", "core", True, ""),
    ("W2 msg/s (acked, window 1000)", "W2", "rate", "w2", "rate", "inflight1000", "file-window1000", True, "ahead of both"),
    ("W3 p50 us (round trip)", "W3", "p50_us", "w3", "p50_us", "stock", "core", False, "<= Mosquitto"),
    ("W3 p99 us", "W3", "p99_us", "w3", "p99_us", "stock", "core", False, ""),
    ("W3 p50 us, persist off", "W3 off", "p50_us", "w3", "p50_us", "stock", "core", False, ""),
    ("W4 deliveries/s (1->10)", "W4", "rate", "w4", "rate", "stock", "core", True, ">= 2x Mosquitto"),
    ("W4 deliveries/s, persist off", "W4 off", "rate", "w4", "rate", "stock", "core", True, ""),
    ("W5 KiB RSS per idle conn", "W5", "kib_per_conn", "w5", "kib_per_conn", "", "", False, "<= 1.5"),
    ("W6 drain s (50k queued)", "W6", "drain_s", "w6", "drain_s", "inflight1000", "file-window1000", False, "<= 0.8x the faster"),
]

def find(peers, backend, workload, tag, metric):
    for (b, w, t), m in peers.items():
        if b == backend and w == workload and (not tag or t == tag) and metric in m:
            return m[metric]
    return None

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

def main():
    peers = peer_medians(sys.argv[1])
    mine = ours(sys.argv[2])
    print(f"{'workload':32s} {'ours':>12s} {'Mosquitto':>12s} {'NATS':>12s} {'vs Mosq':>8s} {'vs NATS':>8s}  target")
    for label, ow, om, pw, pm, mtag, ntag, higher, target in ROWS:
        o = mine.get((ow, om))
        ov = o["median"] if o else None
        mq = find(peers, "mqtt", pw, mtag, pm)
        na = find(peers, "nats", pw, ntag, pm)
        def ratio(p):
            if ov is None or not p:
                return "-"
            return f"{(ov / p) if higher else (p / ov):.2f}x"
        print(f"{label:32s} {fmt(ov):>12s} {fmt(mq):>12s} {fmt(na):>12s} {ratio(mq):>8s} {ratio(na):>8s}  {target}")
    r = mine.get(("W3", "relay_p50_us"))
    if r:
        print(f"{'W3 bare TCP relay p50 us':32s} {fmt(r['median']):>12s}")
    r = mine.get(("W6", "survived_kill9"))
    if r:
        print(f"{'W6 survived kill -9 (of 50,000)':32s} {fmt(r['median']):>12s}")
    r = mine.get(("W7", "broker_cpu_percent"))
    if r:
        print(f"{'W7 broker CPU % (10k agents)':32s} {fmt(r['median']):>12s}  target < 5")
    print("ratios: above 1.00x means ours is better")

if __name__ == "__main__":
    main()
