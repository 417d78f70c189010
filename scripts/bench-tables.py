#!/usr/bin/python3
"""Turns the JSON files of scripts/bench.sh (target/bench/*.json) into the Markdown tables of BENCHMARKS.md."""
import json
import sys


def f(x, digits=0):
    return "–" if x is None else f"{x:.{digits}f}"


def table(report):
    out = []
    a = report["args"]
    out.append(f"**{a['source']['name']}**, camgate mode `{a['mode']}`, x264 threads {a['threads'] or 'auto'}, "
               f"window {a['seconds']:.0f} s; load before/after: `{report['load_before']}` / `{report['load_after']}`\n")
    out.append("| system | cams | mode | realtime | min fps | cores | % core/cam | CPU ms/frame | worker ms/frame "
               "| RSS/cam MB | PSS/cam MB | TTFF p50/max ms | after next keyframe max ms | stop p50/p99 ms "
               "| control p99 ms | source cores |")
    out.append("|" + "---|" * 16)
    for r in report["rows"]:
        ctl = r["control_ms"]["p99"] if r.get("control_ms") else None
        out.append(
            f"| {r['system']} | {r['cameras']} | {r['mode']} | {r['realtime']}/{r['cameras']} | {r['fps_out_min']:.1f} "
            f"| {r['cores']:.2f} | {r['core_pct_per_camera']:.2f} | {r['cpu_ms_per_frame']:.2f} "
            f"| {f(r['worker_cpu_ms_per_frame'], 2)} | {r['rss_mb_per_camera']:.1f} | {f(r['pss_mb_per_camera'], 1)} "
            f"| {f(r['ttff_ms']['p50'])}/{f(r['ttff_ms']['max'])} | {f(r['after_next_keyframe_ms']['max'])} "
            f"| {f(r['stop_ms']['p50'])}/{f(r['stop_ms']['p99'])} | {f(ctl, 3)} | {r['source_cores']:.2f} |")
    if report["ratios"]:
        out.append("\n| camgate ÷ | cams | CPU/frame | RSS/cam ÷ RSS | RSS/cam ÷ PSS | TTFF p50 | stop p99 |")
        out.append("|---|---|---|---|---|---|---|")
        for q in report["ratios"]:
            out.append(f"| {q['versus']} | {q['cameras']} | {f(q['cpu_per_frame'], 2)} | {f(q['rss_per_camera'], 2)} "
                       f"| {f(q['rss_per_camera_vs_pss'], 2)} | {f(q['ttff_p50'], 2)} | {f(q['stop_p99'], 2)} |")
    if report["hung"]:
        out.append("\n| stopping hung cameras | cams | p50 ms | p99 ms | max ms | did not exit within 10 s |")
        out.append("|---|---|---|---|---|---|")
        for h in report["hung"]:
            s = h["stop_ms"]
            out.append(f"| {h['system']} | {h['cameras']} | {f(s['p50'])} | {f(s['p99'])} | {f(s['max'])} "
                       f"| {h['stop_failures']} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as fh:
            print(table(json.load(fh)))
