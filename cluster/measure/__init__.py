"""Measuring a serving cluster: prompt shapes, calibration, requests, benches, screens."""
