"""The memory-bandwidth wall in reports: what a recorded point's generation rate reads.

A bench or sweep point records, under ``traffic`` in its metrics, the bytes of weights a
generated token reads on each device of its split (``measure.bandwidth.TokenTraffic``).
From that and the point's median tg these functions give the effective bandwidth (GB/s)
and its fraction of the split's peak, the same way for ``show``, the Markdown, the CSV and
the sweep report. A point without the record (an older run, a model whose headers could
not be read) has none of these numbers, and its cells read ``-``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from cluster.measure.bandwidth import ABOVE_PEAK, TokenTraffic, format_gb

# The row keys this module adds, in the order tables and the CSV show them.
FIELDS = ("bytes_per_token", "bandwidth_gbs", "peak_gbs", "bandwidth_fraction")


def traffic_of(metrics: Mapping[str, Any]) -> TokenTraffic | None:
    """The point's recorded traffic, or None when it has none (or an unreadable one)."""
    raw = metrics.get("traffic")
    if raw is None:
        return None
    try:
        return TokenTraffic.model_validate(raw)
    except ValidationError:
        return None


def fields(metrics: Mapping[str, Any], tg_tps: float | None) -> dict[str, Any]:
    """``FIELDS`` for a point: None where the record or the rate is missing."""
    traffic = traffic_of(metrics)
    if traffic is None:
        return dict.fromkeys(FIELDS)
    return {
        "bytes_per_token": traffic.bytes_per_token,
        "bandwidth_gbs": traffic.effective_gbs(tg_tps) if tg_tps is not None else None,
        "peak_gbs": traffic.peak_gbs,
        "bandwidth_fraction": traffic.fraction(tg_tps) if tg_tps is not None else None,
    }


def gbs_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def fraction_text(fraction: float | None, bandwidth: float | None) -> str:
    """``42%``; ``331% >peak`` past the peak (a host's memory_bandwidth_gbs is too low);
    ``?`` when a bandwidth was measured but the peak is unknown; ``-`` else."""
    if fraction is not None:
        return f"{fraction:.0%}" + (" >peak" if fraction > ABOVE_PEAK else "")
    return "?" if bandwidth is not None else "-"


def setup_lines(points: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown setup lines from ``(split, metrics)`` pairs: the bytes a token reads and
    each split's peak, once per distinct split."""
    seen: dict[str, TokenTraffic] = {}
    for split, metrics in points:
        traffic = traffic_of(metrics)
        if traffic is not None and split not in seen:
            seen[split] = traffic
    if not seen:
        return []
    first = next(iter(seen.values()))
    experts = (
        f" (MoE: {first.expert_used_count} of {first.expert_count} experts per token)"
        if first.expert_count
        else ""
    )
    lines = [f"- weights read per generated token: {format_gb(first.bytes_per_token)}{experts}"]
    peaks = []
    for split, traffic in seen.items():
        peak = traffic.peak_gbs
        if peak is None:
            hosts = ", ".join(traffic.unknown_hosts)
            peaks.append(f"`{split}` unknown (no memory_bandwidth_gbs for {hosts})")
        else:
            peaks.append(f"`{split}` {peak:.0f} GB/s")
    lines.append("- memory-bandwidth peak per split: " + ", ".join(peaks))
    return lines
