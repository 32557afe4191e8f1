"""Attacks under a budget: evasion, membership inference, extraction, poisoning; planner and runner."""
